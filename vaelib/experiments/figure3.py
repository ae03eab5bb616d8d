"""Figure 3 of the paper: the marginal likelihood log p(x) of the first 1,000 training and test points during
training, Nz = 3 and 100 hidden units, 1,000 and 50,000 training points, AEVB against wake-sleep and
Monte Carlo EM.

`run_figure3` trains each run in stages (resuming one run directory, `vaelib.runs.staged_run_dir`) and
estimates log p(x) after each stage through the one evaluation cache (`vaelib.evaluate.cached`):
importance sampling with the encoder as proposal for AEVB and wake-sleep, with a Gaussian fitted to HMC
posterior samples for MCEM (which has no encoder; `vaelib.estimators.log_px_estimator` decides), and
optionally the paper's App. D estimator. `vaelib.figures.plot_figure3` draws it.

Units: nats per datapoint everywhere; "samples seen" counts training datapoints processed (epochs x N).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import paths, runs
from ..config import METHOD_LABELS, ConfigError, RunConfig, check_int, check_ints
from ..data import Dataset, load_dataset, train_set_size
from ..estimators import ENCODER_IS, log_likelihood, log_px_estimator, marginal_log_likelihood
from ..evaluate import EVAL_BATCH, EVAL_SEED, cached, seeded
from ..executors import Executor, as_executor, map_jobs
from ..train import fit
from .settings import (
    FIG3_EVAL_POINTS,
    FIG3_HIDDEN_DIM,
    FIG3_LATENT_DIM,
    FIG3_TRAIN_SIZES,
    PAPER_INIT_STD,
    check_methods,
    checkpoint_interval,
    epochs_for_samples,
    paper_weight_decay,
    per_method,
)

FIG3_COLUMNS = ["dataset", "method", "train_size", "latent_dim", "epoch", "samples_seen", "train_seconds", "split",
                "estimator", "proposal", "k", "n_points", "log_likelihood", "sem", "median", "seconds"]
ESTIMATOR_LABELS = {"is": "importance sampling", "paper": "the paper's App. D estimator (harmonic mean type)",
                    "hmc-is": "importance sampling, HMC-fitted Gaussian proposal"}
_PROPOSALS = {ENCODER_IS: "encoder q(z|x)", "hmc-is": "Gaussian fitted to HMC samples of p(z|x)",
              "paper": "Gaussian fitted to HMC samples (harmonic mean of q/p)"}


def figure3_configs(train_sizes: Sequence[int] = FIG3_TRAIN_SIZES,
                    methods: Sequence[str] = ("aevb", "wake-sleep", "mcem"),
                    samples_budget: float | Mapping[str, float] = 1e6, lr: float | Mapping[str, float] = 0.02,
                    latent_dim: int = FIG3_LATENT_DIM, hidden_dim: int = FIG3_HIDDEN_DIM,
                    dataset: str = "binarized-mnist", test_size: int | None = FIG3_EVAL_POINTS,
                    batch_size: int = 100, weight_decay: float | None = None,
                    init_std: float | None = PAPER_INIT_STD, mcem_settings: Mapping[str, Any] | None = None,
                    seed: int = 0, device: str = "auto") -> list[RunConfig]:
    """The runs of Fig. 3: every method for every training-set size, in that order.

    samples_budget, lr: one number, or one per method (MCEM costs about fifty decoder passes per step, so a
    CPU budget gives it fewer samples). test_size: the test points used for the test ELBO during
    training (Fig. 3 evaluates log p(x) on the first 1,000). mcem_settings: `config.extra` keys of
    `vaelib.config.MCEM_DEFAULTS` for the MCEM runs.
    """
    check_ints("train_sizes", train_sizes)
    check_methods(methods)
    configs = []
    for n in train_sizes:
        n_train = train_set_size(dataset, n)
        for method in methods:
            epochs = epochs_for_samples(per_method(samples_budget, method, "samples_budget"), n_train)
            extra = dict(mcem_settings or {}) if method == "mcem" else {}
            configs.append(RunConfig(
                dataset=dataset, method=method, latent_dim=latent_dim, hidden_dim=hidden_dim, epochs=epochs,
                batch_size=batch_size, optimizer="adagrad", lr=per_method(lr, method, "lr"),
                weight_decay=paper_weight_decay(n_train) if weight_decay is None else weight_decay,
                init_std=init_std, train_size=n, test_size=test_size, eval_schedule="log", seed=seed,
                device=device, checkpoint_every=checkpoint_interval(n_train, batch_size), extra=extra))
    return configs

def stage_epochs(epochs: int, n_train: int, points_per_decade: int = 2, min_samples: float = 1e4) -> list[int]:
    """Epoch counts at which Fig. 3 evaluates log p(x): about `points_per_decade` log-spaced sample counts
    per decade from `min_samples` (at least one epoch) up to `epochs`, which is always the last stage."""
    check_int("points_per_decade", points_per_decade, 1)
    start = max(n_train, min(min_samples, epochs * n_train))
    lo, hi = math.ceil(points_per_decade * math.log10(start) - 1e-9), points_per_decade * math.log10(epochs * n_train)
    grid = [10 ** (j / points_per_decade) for j in range(lo, math.floor(hi + 1e-9) + 1)]
    stages = sorted({min(epochs, max(1, round(s / n_train))) for s in grid} | {epochs})
    return stages


def _eval_points(dataset: Dataset, split: str, n: int) -> torch.Tensor:
    return torch.cat(list(dataset.split_batches(split, EVAL_BATCH)))[:n]


def _kind(method: str, estimator: str) -> str:
    """What actually computes `estimator` for a `method` run: for MCEM, "is" and "hmc-is" are one estimator."""
    return log_px_estimator(method) if estimator == "is" else estimator


def _estimate(model: torch.nn.Module, x: torch.Tensor, kind: str, k: int, batch_size: int,
              kwargs: Mapping[str, Any], progress: bool) -> torch.Tensor:
    """log p(x) for each row of x: (N,) nats."""
    batches = x.split(batch_size)
    if kind == ENCODER_IS:
        return log_likelihood(model, batches, k, progress=progress, total=len(x))
    if kind == "hmc-is":
        return marginal_log_likelihood(model, batches, "hmc-is", progress=progress, total=len(x), k=k, **kwargs)
    return marginal_log_likelihood(model, batches, "paper", progress=progress, total=len(x), **kwargs)


def _model_at(config: RunConfig, epoch: int, out, dataset: Dataset, progress: bool) -> torch.nn.Module | None:
    """The model after `epoch` epochs: from its snapshot, else by resuming the run up to there (None if a
    longer run went past this stage without a snapshot of it)."""
    with runs.run_lock(out):
        model = runs.load_snapshot(out, epoch, config)
        if model is not None:
            return model
        if runs.checkpoint_epoch(out) > epoch:
            return None
        run = fit(config.replace(epochs=epoch), out, resume=True, progress=progress, dataset=dataset)
        runs.save_snapshot(out, epoch, run.model)
        return run.model


def _run_staged(config: RunConfig, dataset: Dataset, runs_dir: str | os.PathLike | None, k: int, n_points: int,
                estimators: Sequence[str], points_per_decade: int, min_samples: float,
                estimator_kwargs: Mapping[str, Mapping[str, Any]], last_stage: Mapping[str, tuple[str, ...]],
                batch_size: int, progress: bool) -> pd.DataFrame:
    out = runs.staged_run_dir(config, runs_dir)
    n_train = dataset.x_train.shape[0]
    stages = stage_epochs(config.epochs, n_train, points_per_decade, min_samples)
    rows = []
    models: dict[int, torch.nn.Module | None] = {}  # loaded only if an estimate of that stage is missing
    for epoch in stages:

        def model_at(epoch: int = epoch) -> torch.nn.Module | None:
            if epoch not in models:
                models.clear()  # one stage's model in memory at a time
                models[epoch] = _model_at(config, epoch, out, dataset, progress)
            return models[epoch]

        for estimator in estimators:
            if estimator in last_stage and epoch != stages[-1]:
                continue
            kind = _kind(config.method, estimator)
            kk = k if kind != "paper" else 0
            # The encoder proposal takes no HMC settings: changing those must not discard its estimates.
            settings = {} if kind == ENCODER_IS else dict(estimator_kwargs[estimator])
            for split in last_stage.get(estimator, ("train", "test")):
                key = {"what": "figure3", "estimator": kind, "split": split, "k": kk, "n_points": n_points,
                       "settings": settings, "epoch": epoch, "batch_size": batch_size}

                def compute(split: str = split, kind: str = kind, kk: int = kk,
                            settings: dict = settings) -> dict[str, Any]:
                    model = model_at()
                    if model is None:
                        return {"skipped": True}
                    x = _eval_points(dataset, split, n_points).to(next(model.parameters()).device)
                    started = time.perf_counter()
                    with seeded(EVAL_SEED, x.device):  # the same proposal draws whenever a stage is re-estimated
                        values = _estimate(model, x, kind, kk, batch_size, settings, progress).double().cpu()
                    return {"log_likelihood": float(values.mean()), "sem": float(values.std() / math.sqrt(len(values))),
                            "median": float(values.median()), "n_points": len(x), "proposal": _PROPOSALS[kind],
                            "seconds": time.perf_counter() - started}

                result = cached(out, key, compute)
                if result.get("skipped"):
                    continue
                history = pd.read_csv(out / runs.HISTORY_FILE)
                rows.append({
                    "dataset": config.dataset, "method": config.method, "train_size": n_train,
                    "latent_dim": config.latent_dim, "epoch": epoch, "samples_seen": epoch * n_train,
                    "train_seconds": float(history.loc[history["epoch"] <= epoch, "seconds"].sum()),
                    "split": split, "estimator": estimator, "k": kk, **result})
    if not rows:
        return pd.DataFrame(columns=FIG3_COLUMNS)
    return pd.DataFrame(rows)[FIG3_COLUMNS].sort_values(["epoch", "estimator", "split"]).reset_index(drop=True)


def _staged_job(config: dict, runs_dir: str | None, data_dir: str | None, *args: Any) -> pd.DataFrame:
    """One run's stages in a worker (module-level, so process pools and submitit can pickle it)."""
    config = RunConfig.from_dict(config)
    dataset = load_dataset(config.dataset, data_dir, config.train_size, config.test_size)
    return _run_staged(config, dataset, runs_dir, *args, progress=False)


def run_figure3(configs: Sequence[RunConfig], runs_dir: str | os.PathLike | None = None,
                data_dir: str | os.PathLike | None = None, k: int = 1000, n_points: int = FIG3_EVAL_POINTS,
                estimators: Sequence[str] = ("is",), points_per_decade: int = 2, min_samples: float = 1e4,
                estimator_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
                last_stage: Mapping[str, Sequence[str]] | None = None, batch_size: int = 100,
                progress: bool = True, executor: Executor | str | None = None) -> pd.DataFrame:
    """Train every Fig. 3 run in stages and estimate log p(x) of the first `n_points` training and test
    points after each stage. Returns the long table FIG3_COLUMNS (log_likelihood: mean nats per datapoint,
    sem: its standard error over the points; median: the median over the points, which a few wild
    estimates cannot move; train_seconds: training time up to that stage, this machine's;
    seconds: time spent estimating).

    Each run grows in one directory (`staged_run_dir`): stage e resumes it up to e epochs (`stage_epochs`),
    keeps a copy of the weights (model-epochNNNNNN.pt) and appends its estimates to
    marginal_likelihood.csv, so asking again, or for a larger budget, reuses every finished stage.
    estimators: "is" (encoder proposal with k samples; for MCEM an HMC-fitted Gaussian proposal),
    "hmc-is" (the HMC-fitted proposal for every method) and "paper" (App. D). estimator_kwargs: keyword
    arguments per estimator for `vaelib.estimators` (HMC settings, n_posterior_samples, ...).
    last_stage: estimators (keys, also listed in `estimators`) computed only after the last stage and only
    on the given splits, e.g. {"paper": ["test"]}: the HMC-based ones cost thousands of decoder passes per
    point. executor: how the runs are spread (`vaelib.executors`; default $VAELIB_EXECUTOR): each run's
    stages and estimates are one job, so a pool trains several runs side by side.
    """
    last_stage = {e: tuple(splits) for e, splits in (last_stage or {}).items()}
    for split in [s for splits in last_stage.values() for s in splits]:
        if split not in ("train", "test"):
            raise ConfigError(f"split {split!r} in last_stage is not allowed; use 'train' and/or 'test'")
    for estimator in [*estimators, *last_stage]:
        if estimator not in ESTIMATOR_LABELS:
            raise ConfigError(f"estimator={estimator!r} is not allowed; choose from: {', '.join(ESTIMATOR_LABELS)}")
    check_int("k", k, 1)
    check_int("n_points", n_points, 1)
    estimator_kwargs = {e: dict((estimator_kwargs or {}).get(e, {})) for e in estimators}
    executor = as_executor(executor)
    if executor.kind != "inprocess":
        # Each run's stages are one job: the runs are independent, their stages are not.
        cache = str(paths.runs_dir(runs_dir))
        data = None if data_dir is None else str(Path(data_dir).resolve())
        jobs = [(c.to_dict(), cache, data, k, n_points, tuple(estimators), points_per_decade, min_samples,
                 estimator_kwargs, last_stage, batch_size) for c in configs]
        if progress:
            print(f"Figure 3: {len(jobs)} staged runs through {executor.describe()}", file=sys.stderr, flush=True)
        frames = map_jobs(_staged_job, jobs, [f"Figure 3 run {c.run_name()}" for c in configs], executor, progress)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=FIG3_COLUMNS)
    frames = []
    datasets: dict[tuple, Dataset] = {}
    for config in configs:
        key = (config.dataset, config.train_size, config.test_size)
        if key not in datasets:
            datasets[key] = load_dataset(config.dataset, data_dir, config.train_size, config.test_size)
    bar = tqdm(configs, desc="Figure 3 runs", unit="run", disable=not progress)
    for config in bar:
        bar.set_postfix(method=config.method, n=config.train_size)
        frames.append(_run_staged(config, datasets[(config.dataset, config.train_size, config.test_size)],
                                  runs_dir, k, n_points, estimators, points_per_decade, min_samples,
                                  estimator_kwargs, last_stage, batch_size, progress))
    if not frames:
        return pd.DataFrame(columns=FIG3_COLUMNS)
    return pd.concat(frames, ignore_index=True)

def figure3_findings(df: pd.DataFrame, estimator: str = "is") -> list[str]:
    """Sentences, computed from the table: per training-set size and split, the methods ranked by their
    last estimate of log p(x), and whether AEVB's test curve fell from its peak (overfitting)."""
    data = df[df["estimator"] == estimator]
    sentences = []
    for n, part in data.groupby("train_size"):
        for split in ("train", "test"):
            rows = part[part["split"] == split].sort_values("samples_seen").groupby("method").last()
            if rows.empty:
                continue
            ranked = rows["log_likelihood"].sort_values(ascending=False)
            order = " > ".join(f"{METHOD_LABELS[m]} ({v:.1f} after {rows.loc[m, 'samples_seen']:,.0f} samples)"
                               for m, v in ranked.items())
            sentences.append(f"N_train = {n:,}, {split}: {order}.")
        last = part.sort_values("samples_seen").groupby("method").last()
        if "train_seconds" in last and len(last) > 1:
            speed = ", ".join(f"{METHOD_LABELS[m]} {r.train_seconds:,.0f} s for {r.samples_seen:,.0f} samples "
                              f"({1000 * r.train_seconds / r.samples_seen:.2f} ms per sample)"
                              for m, r in last.iterrows())
            sentences.append(f"N_train = {n:,}, training time on this machine: {speed}.")
        test = part[(part["split"] == "test") & (part["method"] == "aevb")].sort_values("samples_seen")
        if len(test) > 1:
            peak, last = test["log_likelihood"].max(), test["log_likelihood"].iloc[-1]
            if last < peak - 1.0:
                sentences.append(f"N_train = {n:,}: AEVB's test log-likelihood peaked at {peak:.1f} and ended at "
                                 f"{last:.1f}: it overfits the small training set, as the paper's curves do.")
            else:
                sentences.append(f"N_train = {n:,}: AEVB's test log-likelihood did not fall from its peak "
                                 f"({peak:.1f}, last {last:.1f}) within this budget.")
    return sentences

def _versus(end: pd.Series, rows: pd.DataFrame, name: str, what: str) -> str:
    if rows.empty:
        return f"{name} has no estimate at or before {what}"
    value = float(rows["log_likelihood"].iloc[-1])
    side = "ahead of" if end["log_likelihood"] > value else "behind"
    return f"MCEM is {side} {name} at {what} ({name}: {value:.1f}, {value - end['log_likelihood']:+.1f})"


def race_findings(df: pd.DataFrame, estimator: str = "is", split: str = "test", rival: str = "aevb") -> list[str]:
    """Sentences, computed from the table, on MCEM against `rival` per training-set size, on the paper's
    axis (training samples) and on wall time: where MCEM's last estimate stands against `rival` after the
    same number of samples and after the same training seconds, and what a sample costs each of them.
    Estimates are means over the evaluated points, nats per datapoint; "ahead" means higher."""
    data = df[(df["estimator"] == estimator) & (df["split"] == split)]
    sentences = []
    for n, part in data.groupby("train_size"):
        mcem = part[part["method"] == "mcem"].sort_values("samples_seen")
        other = part[part["method"] == rival].sort_values("samples_seen")
        if mcem.empty or other.empty:
            continue
        end = mcem.iloc[-1]
        name = METHOD_LABELS[rival]

        same_samples = _versus(end, other[other["samples_seen"] <= end["samples_seen"]], name,
                               f"the same {end['samples_seen']:,.0f} samples")
        same_time = _versus(end, other[other["train_seconds"] <= end["train_seconds"]], name,
                            f"the same {end['train_seconds']:,.0f} s of training")
        last = other.iloc[-1]
        cost = (end["train_seconds"] / end["samples_seen"]) / (last["train_seconds"] / last["samples_seen"])
        final = "above" if last["log_likelihood"] > end["log_likelihood"] else "below"
        sentences.append(
            f"N_train = {n:,} ({split}): MCEM ends at {end['log_likelihood']:.1f} nats after "
            f"{end['samples_seen']:,.0f} samples. {same_samples}; {same_time}. {name}'s last estimate, after "
            f"{last['samples_seen']:,.0f} samples and {last['train_seconds']:,.0f} s, is {last['log_likelihood']:.1f}, "
            f"{final} MCEM's. One training sample costs MCEM {cost:.0f} times what it costs {name} here.")
    return sentences


def compare_estimators(df: pd.DataFrame, estimators: Sequence[str] = ("is", "hmc-is", "paper")) -> pd.DataFrame:
    """One row per (method, train_size, split, epoch) where all `estimators` were computed: each one's mean
    and median over the points (nats per datapoint), and each mean minus the first estimator's mean."""
    keys = ["method", "train_size", "split", "epoch", "samples_seen"]
    parts = []
    for estimator in estimators:
        rows = df[df["estimator"] == estimator].set_index(keys)
        parts.append(rows[["log_likelihood", "median"]].rename(
            columns={"log_likelihood": f"{estimator} mean", "median": f"{estimator} median"}))
    both = pd.concat(parts, axis=1, join="inner").reset_index()
    for estimator in estimators[1:]:
        both[f"{estimator} - {estimators[0]}"] = both[f"{estimator} mean"] - both[f"{estimators[0]} mean"]
    return both

def estimator_findings(comparison: pd.DataFrame) -> list[str]:
    """Sentences on a `compare_estimators` table whose first estimator is "is": how far the encoder's
    importance sampling falls below the HMC-fitted proposal, and whether the paper's estimator lies above
    and is dragged by a few wild values (mean far above median)."""
    sentences = []
    labels = {"is": "importance sampling (encoder proposal for AEVB and wake-sleep)", "hmc-is":
              "importance sampling with the HMC-fitted proposal", "paper": "the paper's estimator"}
    rows = comparison
    if "hmc-is - is" in rows:
        encoder = rows[rows["method"] != "mcem"]
        if len(encoder):
            worst = encoder.loc[encoder["hmc-is - is"].idxmax()]
            sentences.append(
                f"Importance sampling with the HMC-fitted proposal is above the encoder-proposal estimate by "
                f"{encoder['hmc-is - is'].mean():+.2f} nats on average over {len(encoder)} AEVB and wake-sleep "
                f"rows, at most {worst['hmc-is - is']:+.2f} ({METHOD_LABELS[worst['method']]}, "
                f"N_train = {int(worst['train_size']):,}, {worst['split']}). Both are lower bounds in "
                "expectation, so the higher one is the closer: where the gap is large, the encoder is a poor "
                "proposal for those points and the curve above understates log p(x).")
    if "paper mean" in rows:
        reference = "hmc-is" if "hmc-is mean" in rows else "is"
        diff = rows["paper mean"] - rows[f"{reference} mean"]
        skew = rows["paper mean"] - rows["paper median"]
        ref_skew = rows[f"{reference} mean"] - rows[f"{reference} median"]
        wild = int((skew > ref_skew + 1.0).sum())
        sentences.append(
            f"The paper's estimator minus {labels[reference]}: {diff.mean():+.2f} nats on average, from "
            f"{diff.min():+.2f} to {diff.max():+.2f}, above in {int((diff > 0).sum())} of {len(rows)} rows. "
            + (f"In {wild} of them its mean exceeds its median by over a nat more than the reference's does: "
               "a few datapoints got wildly high estimates, the heavy tail of a harmonic-mean estimator."
               if wild else "Its means and medians agree as closely as the reference's: no wild values here."))
    return sentences


def records(df: pd.DataFrame) -> Iterable[dict[str, Any]]:
    """Headline numbers for `vaelib.results.record`: each method's last test log p(x) estimate (estimator
    "is") per training-set size."""
    data = df[(df["estimator"] == "is") & (df["split"] == "test")].sort_values("samples_seen")
    for (method, n), part in data.groupby(["method", "train_size"]):
        last = part.iloc[-1]
        yield {"key": f"{method}_n{n}_test_log_px", "value": float(last["log_likelihood"]), "unit": "nats",
               "estimator": f"log p(x), importance sampling, k={int(last['k'])}, proposal: {last['proposal']}, "
                            f"first {int(last['n_points']):,} test points",
               "note": f"Nz=3, N_train={n:,}, after {last['samples_seen']:,.0f} training samples"}
