"""The AEVB training loop (Kingma & Welling 2013, Algorithm 1), with history, atomic checkpoints and resume.

A run lives in a directory: `config.json` (the RunConfig), `history.csv` (one row per epoch, nats per
example) and `checkpoint.pt` (model, optimizer and every random state, so a resumed run continues exactly
where it stopped). `fit_or_load(config)` keys that directory by the config's hash, so asking again for a
run that exists loads it instead of training.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .config import ConfigError, RunConfig
from .data import Dataset, image_shape, load_dataset
from .models import VAE, build_model
from .objectives import elbo
from .results import write_text_atomic

HISTORY_COLUMNS = [
    "epoch", "samples_seen", "train_objective", "train_elbo", "train_log_px_z", "train_kl",
    "test_elbo", "test_log_px_z", "test_kl", "beta", "lr", "seconds", "eval_seconds",
]
EVAL_SEED = 1234  # one fixed stream of eps for test ELBOs, so the curve's noise is the same every epoch


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the epoch, step and last checkpoint."""


def select_device(device: str = "auto") -> torch.device:
    """"auto": CUDA if present, then Apple MPS, then CPU; otherwise the named device."""
    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={device!r} was asked for but CUDA is not available; use 'cpu' or 'auto'")
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_runs_dir(runs_dir: str | os.PathLike | None = None) -> Path:
    """Where runs are cached: the argument, else $VAELIB_RUNS, else ./runs."""
    return Path(runs_dir or os.environ.get("VAELIB_RUNS") or "runs").expanduser()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- one optimization step -----------------------------------------------------------------------------
# An update takes a batch, changes the parameters and returns the per-batch sums it wants in the history:
# (objective, elbo, log_px_z, kl) summed over the batch, as a tensor of 4 numbers. AEVB's is below; the
# baselines (wake-sleep, Monte Carlo EM) keep theirs in baselines.BASELINE_UPDATES.
Update = Callable[[VAE, torch.optim.Optimizer, torch.Tensor, RunConfig, float], torch.Tensor]


def gradient_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """Minimize the scalar `loss` by one optimizer step; a NaN or infinite loss raises NonFiniteLossError
    before any parameter changes, so the caller can name the epoch and the last good checkpoint."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"loss = {loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def aevb_update(model: VAE, optimizer: torch.optim.Optimizer, x: torch.Tensor, config: RunConfig,
                beta: float) -> torch.Tensor:
    """One AEVB step: maximize the SGVB estimate of the (beta-weighted) ELBO averaged over the batch."""
    terms = elbo(model, x, config.estimator, config.n_samples, beta)
    gradient_step(optimizer, -terms.objective.mean())
    return torch.stack([terms.objective.sum(), terms.elbo.sum(), terms.log_px_z.sum(), terms.kl.sum()]).detach()


def _update_for(method: str) -> Update:
    if method == "aevb":
        return aevb_update
    from .baselines import BASELINE_UPDATES  # wake-sleep and Monte Carlo EM

    return BASELINE_UPDATES[method]


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


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Draw from torch's stream for `seed` inside the block, then put back the CPU stream and, on a CUDA
    `device`, its stream as they were, so evaluating leaves a training run's random numbers untouched."""
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def evaluate_elbo(model: VAE, batches, n_samples: int = 1, seed: int = EVAL_SEED) -> dict[str, float]:
    """Mean ELBO, reconstruction term and KL over `batches` (estimator B, L = n_samples), nats per example."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums, count = torch.zeros(3, device=device), 0
    with seeded(seed, device):  # the same eps every call, and the training RNG stream left untouched
        for x in batches:
            terms = elbo(model, x, "B", n_samples)
            sums += torch.stack([terms.elbo.sum(), terms.log_px_z.sum(), terms.kl.sum()])
            count += x.shape[0]
    model.train(was_training)
    elbo_, log_px_z, kl = (sums / count).tolist()
    return {"elbo": elbo_, "log_px_z": log_px_z, "kl": kl}


# --- runs ----------------------------------------------------------------------------------------------
@dataclass
class Run:
    """A trained (or partly trained) model with its config, history and directory."""

    path: Path
    config: RunConfig
    model: VAE
    history: pd.DataFrame

    @property
    def epochs_done(self) -> int:
        return int(self.history["epoch"].max()) if len(self.history) else 0

    def load_data(self, data_dir: str | os.PathLike | None = None) -> Dataset:
        """The data set this run was trained on, with the same subsets, on the model's device."""
        device = next(self.model.parameters()).device
        return load_dataset(self.config.dataset, data_dir, self.config.train_size, self.config.test_size,
                            device=device)


def _atomic_torch_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a crash mid-write leaves the previous checkpoint intact


def _rng_state(generator: torch.Generator) -> dict:
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
    # Only the length of training may change on resume; anything else would mix two experiments.
    ignore = {"epochs", "device", "checkpoint_every"}
    a, b = saved.to_dict(), config.to_dict()
    diffs = [f"{k}={a[k]!r} (saved) vs {b[k]!r} (asked)" for k in a if k not in ignore and a[k] != b[k]]
    if diffs:
        raise ConfigError(f"{out_dir} holds a run with other settings: {'; '.join(diffs)}. Use another "
                          "--out directory, or drop --resume to start over")


def fit(config: RunConfig, out_dir: str | os.PathLike, resume: bool = False,
        data_dir: str | os.PathLike | None = None, progress: bool = True,
        dataset: Dataset | None = None) -> Run:
    """Train `config` into `out_dir` and return the Run.

    resume=True continues from `out_dir/checkpoint.pt` (if present) up to `config.epochs` epochs in all; the
    result is the same as an uninterrupted run on the same device and seed. resume=False with an existing
    checkpoint raises, so no trained run is overwritten by accident.
    """
    out = Path(out_dir)
    checkpoint_path = out / "checkpoint.pt"
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
        saved_config = RunConfig.from_dict(json.loads((out / "config.json").read_text()))
        _check_same_experiment(saved_config, config, out)
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if device.type not in _FUSED_OPTIMIZER_DEVICES:  # saved with fused kernels this device lacks
            for group in optimizer.param_groups:
                group["fused"] = None
        _set_rng_state(state["rng"], generator)
        rows = state["history"]
        start_epoch = state["epoch"] + 1

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "config.json", config.to_json())
    write_text_atomic(out / "history.csv", pd.DataFrame(rows, columns=HISTORY_COLUMNS).to_csv(index=False))

    update = _update_for(config.method)
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
        with open(out / "history.csv", "a") as f:
            f.write(pd.DataFrame([row], columns=HISTORY_COLUMNS).to_csv(index=False, header=False))
        bar.set_postfix(epoch=epoch, train_elbo=f"{elbo_:.2f}", test_elbo=f"{row['test_elbo']:.2f}")
        if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
            _atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "epoch": epoch, "rng": _rng_state(generator), "history": rows},
                               checkpoint_path)
            last_saved = epoch
    bar.close()
    model.eval()
    return Run(out, config, model, pd.DataFrame(rows, columns=HISTORY_COLUMNS))


def load_run(path: str | os.PathLike, device: str = "auto") -> Run:
    """Load a run directory written by `fit` (on `device`, default: the best available)."""
    out = Path(path)
    if not (out / "config.json").exists() or not (out / "checkpoint.pt").exists():
        raise FileNotFoundError(f"{out} is not a run directory (config.json and checkpoint.pt expected); "
                                "train one with `python -m vaelib train --out DIR`")
    config = RunConfig.from_dict(json.loads((out / "config.json").read_text()))
    torch_device = select_device(device)
    model = build_model(config, image_shape(config.dataset)).to(torch_device)
    state = torch.load(out / "checkpoint.pt", map_location=torch_device, weights_only=False)
    model.load_state_dict(state["model"])
    model.eval()
    history = pd.DataFrame(state["history"], columns=HISTORY_COLUMNS)
    return Run(out, config, model, history)


def fit_or_load(config: RunConfig, runs_dir: str | os.PathLike | None = None,
                data_dir: str | os.PathLike | None = None, progress: bool = True) -> Run:
    """The run for `config`: loaded from `runs_dir/<config.run_name()>` if it finished, else trained there
    (resuming whatever an interrupted attempt left)."""
    out = default_runs_dir(runs_dir) / config.run_name()
    if (out / "checkpoint.pt").exists():
        run = load_run(out, config.device)
        if run.epochs_done >= config.epochs:
            return run
    return fit(config, out, resume=True, data_dir=data_dir, progress=progress)
