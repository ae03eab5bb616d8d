"""Training: `fit` trains a RunConfig into a run directory, `fit_or_load` gets it from the run cache.

The loop is the paper's Algorithm 1 for any method of `vaelib.methods` (AEVB, wake-sleep, Monte Carlo EM):
minibatches of M datapoints, one update each, a `history.csv` row per epoch (nats per example, with the
epoch's training `seconds`) and an atomic checkpoint holding every random state, so a resumed run
continues exactly where it stopped. The run directory and its cache are `vaelib.runs`; the test ELBO after
an epoch is `vaelib.evaluate.evaluate_elbo`. Optimizers and the schedules of the step size and the KL
weight live here too.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import runs
from .config import ConfigError, RunConfig
from .data import Dataset, load_dataset
from .evaluate import evaluate_elbo
from .io import write_text_atomic
from .methods import NonFiniteLossError, update_for
from .models import build_model
from .runs import HISTORY_COLUMNS, Run, run_lock, select_device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


_FUSED_OPTIMIZER_DEVICES = ("cpu", "cuda")  # where PyTorch has both fused Adagrad and fused Adam


def make_optimizer(model: torch.nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    """Adagrad or Adam over the trainable parameters, fused where the device has the kernel.

    Fused: one pass per tensor per step. PyTorch's default on CPU is a Python loop of four or five
    elementwise ops per tensor (2-4x slower here, bench/bench_optimizer.py), and on a GPU a dozen
    launches per tensor. Same update rule; it rounds differently in the last bit, and a checkpoint keeps
    the flag it was trained with, so a resumed run equals an uninterrupted one.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    fused = bool(params) and all(p.device.type in _FUSED_OPTIMIZER_DEVICES and p.is_floating_point()
                                 for p in params)
    kwargs = {"lr": config.lr, "weight_decay": config.weight_decay, "fused": True if fused else None}
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(params, **kwargs)
    return torch.optim.Adam(params, **kwargs)


def learning_rate(config: RunConfig, epoch: int) -> float:
    """The step size used during `epoch` (1-based)."""
    if config.lr_schedule == "cosine" and config.epochs > 1:
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / config.epochs))
    return config.lr


def kl_weight(config: RunConfig, epoch: int) -> float:
    """beta, ramped linearly from 0 over the first `kl_warmup_epochs` epochs when warm-up is on."""
    if config.kl_warmup_epochs and epoch <= config.kl_warmup_epochs:
        return config.beta * epoch / (config.kl_warmup_epochs + 1)
    return config.beta


def should_evaluate(config: RunConfig, epoch: int, n_train: int) -> bool:
    """Test ELBO every epoch, or (eval_schedule="log") at 5 points per decade of samples seen."""
    if config.eval_schedule == "every" or epoch == config.epochs or epoch == 1:
        return True
    before, now = (epoch - 1) * n_train, epoch * n_train
    return math.floor(5 * math.log10(now)) > math.floor(5 * math.log10(before))


def rng_state(generator: torch.Generator) -> dict:
    """Every random state a checkpoint keeps (Python, NumPy, torch CPU and CUDA, the data order's generator),
    so a resumed run, or a grid member written by `vaelib.grid`, continues its streams exactly."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "data": generator.get_state(),
    }


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["data"])


def _check_same_experiment(saved: RunConfig, config: RunConfig, out_dir: Path) -> None:
    diffs = saved.differences(config)  # only the RESUMABLE_FIELDS may change on resume
    if diffs:
        raise ConfigError(f"{out_dir} holds a run with other settings (saved vs asked): {'; '.join(diffs)}. "
                          "Use another --out directory, or drop --resume to start over")


def fit(config: RunConfig, out_dir: str | os.PathLike, resume: bool = False,
        data_dir: str | os.PathLike | None = None, progress: bool = True,
        dataset: Dataset | None = None) -> Run:
    """Train `config` into `out_dir` and return the Run.

    resume=True continues from `out_dir/checkpoint.pt` (if present) up to `config.epochs` epochs in all; the
    result is the same as an uninterrupted run on the same device and seed. resume=False with an existing
    checkpoint raises, so no trained run is overwritten by accident. The run directory's lock is held
    throughout (`vaelib.runs.run_lock`): a second process asking for the same directory waits.
    """
    out = Path(out_dir)
    with run_lock(out):
        before = runs.checkpoint_epoch(out) if resume and os.environ.get(RUN_LOG_ENV) else 0
        run = _fit(config, out, resume, data_dir, progress, dataset)
    _log_run(run, run.epochs_done - before)
    return run


def _fit(config: RunConfig, out: Path, resume: bool, data_dir: str | os.PathLike | None, progress: bool,
         dataset: Dataset | None) -> Run:
    checkpoint_path = out / runs.CHECKPOINT_FILE
    if checkpoint_path.exists() and not resume:
        raise FileExistsError(f"{out} already holds a run; pass resume=True (--resume) to continue it, or "
                              "choose another directory")
    device = select_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    seed_everything(config.seed)
    if dataset is None:
        dataset = load_dataset(config.dataset, data_dir, config.train_size, config.test_size, device=device)
    else:
        dataset = dataset.to(device)
    model = build_model(config, dataset.image_shape).to(device)
    optimizer = make_optimizer(model, config)
    generator = torch.Generator(device=dataset.x_train.device).manual_seed(config.seed)
    rows: list[dict] = []
    start_epoch = 1

    if checkpoint_path.exists():
        saved_config = runs.check_current(out)  # a run made by other code is never continued
        _check_same_experiment(saved_config, config, out)
        state = runs.load_checkpoint(out, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if device.type not in _FUSED_OPTIMIZER_DEVICES:  # saved with fused kernels this device lacks
            for group in optimizer.param_groups:
                group["fused"] = None
        _set_rng_state(state["rng"], generator)
        rows = state["history"]
        start_epoch = state["epoch"] + 1

    out.mkdir(parents=True, exist_ok=True)
    runs.write_config(out, config)
    history_path = out / runs.HISTORY_FILE
    write_text_atomic(history_path, pd.DataFrame(rows, columns=HISTORY_COLUMNS).to_csv(index=False))

    update = update_for(model, config)
    n_train = dataset.x_train.shape[0]
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    bar = tqdm(total=(config.epochs - start_epoch + 1) * steps_per_epoch, disable=not progress,
               desc=f"{config.dataset} z={config.latent_dim}", unit="step", mininterval=0.5)
    model.train()
    last_saved = start_epoch - 1
    for epoch in range(start_epoch, config.epochs + 1):
        lr, beta = learning_rate(config, epoch), kl_weight(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        sums = torch.zeros(4, device=device)
        started = time.perf_counter()
        for step, x in enumerate(dataset.train_batches(config.batch_size, generator), start=1):
            try:
                sums += update(model, optimizer, x, config, beta)
            except NonFiniteLossError as error:
                raise NonFiniteLossError(
                    f"non-finite loss at epoch {epoch}, step {step} ({error}); the last good checkpoint "
                    f"is {checkpoint_path} at epoch {last_saved}. Lower --lr or change the optimizer, "
                    "then resume") from None
            bar.update(1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        objective, elbo_, log_px_z, kl = (sums / n_train).tolist()
        row = {"epoch": epoch, "samples_seen": epoch * n_train, "train_objective": objective,
               "train_elbo": elbo_, "train_log_px_z": log_px_z, "train_kl": kl,
               "test_elbo": math.nan, "test_log_px_z": math.nan, "test_kl": math.nan,
               "beta": beta, "lr": lr, "seconds": seconds, "eval_seconds": 0.0}
        # MCEM trains no encoder, so an ELBO with its untouched q(z|x) would be a meaningless loose bound.
        if config.method != "mcem" and should_evaluate(config, epoch, n_train):
            started = time.perf_counter()
            test = evaluate_elbo(model, dataset.test_batches(1000))
            row.update(test_elbo=test["elbo"], test_log_px_z=test["log_px_z"], test_kl=test["kl"],
                       eval_seconds=time.perf_counter() - started)
        rows.append(row)
        with open(history_path, "a") as f:
            f.write(pd.DataFrame([row], columns=HISTORY_COLUMNS).to_csv(index=False, header=False))
        bar.set_postfix(epoch=epoch, train_elbo=f"{elbo_:.2f}", test_elbo=f"{row['test_elbo']:.2f}")
        if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
            runs.save_checkpoint(out, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                       "epoch": epoch, "rng": rng_state(generator), "history": rows})
            last_saved = epoch
    bar.close()
    model.eval()
    return Run(out, config, model, pd.DataFrame(rows, columns=HISTORY_COLUMNS))


def fit_or_load(config: RunConfig, runs_dir: str | os.PathLike | None = None,
                data_dir: str | os.PathLike | None = None, progress: bool = True) -> Run:
    """The run for `config`: loaded from the cache (`vaelib.runs.run_dir`) if it finished, else trained there,
    resuming whatever an interrupted attempt left. When another process is training the same run, this one
    waits for it and then loads its result instead of training a second copy."""
    out = runs.run_dir(config, runs_dir)
    run = runs.completed_run(out, config)
    if run is not None:
        _log_run(run, 0)
        return run
    with run_lock(out):
        run = runs.completed_run(out, config)  # finished by the process we waited for
        if run is not None:
            _log_run(run, 0)
            return run
        return fit(config, out, resume=True, data_dir=data_dir, progress=progress)


# The book build's statistics of cache use: when this variable names a file, fit and fit_or_load append one
# JSON line to it per run they hand back: {"run": dir name, "status": "loaded" | "trained", "epochs_trained"}.
RUN_LOG_ENV = "VAELIB_RUN_LOG"


def _log_run(run: Run, epochs_trained: int) -> None:
    path = os.environ.get(RUN_LOG_ENV)
    if path:
        status = "trained" if epochs_trained > 0 else "loaded"
        with open(path, "a", encoding="utf-8") as fh:  # one short append per line: whole lines, any writer
            fh.write(json.dumps({"run": run.path.name, "status": status, "epochs_trained": epochs_trained}) + "\n")
