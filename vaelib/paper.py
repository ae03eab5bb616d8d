"""Experiment drivers and plots for the paper's two quantitative figures (Kingma & Welling 2013, Sec. 5).

Figure 2: the ELBO per datapoint (train and test) against the number of training samples evaluated, AEVB
against wake-sleep with the same recognition model, one panel per latent dimension Nz, on MNIST and Frey
Face. `figure2_configs` turns a samples budget into runs, `run_figure2` trains them (cached by
`vaelib.train.fit_or_load`) and returns one long table, `plot_figure2` draws the panels.

Figure 3: the marginal likelihood log p(x) of the first 1,000 training and test points during training,
Nz = 3 and 100 hidden units, 1,000 and 50,000 training points, AEVB against wake-sleep and Monte Carlo EM.
`run_figure3` trains each run in stages (resuming one run directory) and estimates log p(x) after each
stage: importance sampling with the encoder as proposal for AEVB and wake-sleep, with a Gaussian fitted to
HMC posterior samples for MCEM (which has no encoder), and optionally the paper's App. D estimator.

Units: nats per datapoint everywhere; "samples seen" counts training datapoints processed (epochs x N).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from tqdm.auto import tqdm

from . import baselines
from .config import METHODS, ConfigError, RunConfig
from .data import FREYFACE_TEST_SIZE, Dataset, load_dataset
from .evaluate import log_likelihood
from .models import build_model
from .results import write_text_atomic
from .train import NonFiniteLossError, Run, default_runs_dir, fit, fit_or_load, select_device

# --- the paper's settings -----------------------------------------------------------------------------------
FIG2_LATENT_DIMS: dict[str, tuple[int, ...]] = {"binarized-mnist": (3, 5, 10, 20, 200), "freyface": (2, 5, 10, 20)}
FIG2_YLIM: dict[str, tuple[float, float]] = {"binarized-mnist": (-150.0, -100.0), "freyface": (0.0, 1600.0)}
PAPER_XLIM = (1e5, 1e8)  # Fig. 2's x axis: training samples evaluated
PAPER_STEP_SIZES = (0.01, 0.02, 0.1)  # Adagrad global step sizes the paper chose from
PAPER_INIT_STD = 0.01  # "initialized by random sampling from N(0, 0.01)", read as a standard deviation
FIG3_TRAIN_SIZES = (1000, 50_000)
FIG3_LATENT_DIM, FIG3_HIDDEN_DIM, FIG3_EVAL_POINTS = 3, 100, 1000

DATASET_LABELS = {"binarized-mnist": "MNIST", "mnist": "MNIST", "freyface": "Frey Face"}
METHOD_LABELS = {"aevb": "AEVB", "wake-sleep": "Wake-Sleep", "mcem": "MCEM"}
METHOD_COLORS = {"aevb": "#0072B2", "wake-sleep": "#D55E00", "mcem": "#009E73"}  # colour-blind safe
SPLIT_STYLES = {"train": "--", "test": "-"}  # the paper: train dashed, test solid

FIG2_COLUMNS = ["dataset", "method", "latent_dim", "epoch", "samples_seen", "split", "elbo"]
FIG3_COLUMNS = ["dataset", "method", "train_size", "latent_dim", "epoch", "samples_seen", "train_seconds", "split",
                "estimator", "proposal", "k", "n_points", "log_likelihood", "sem", "median", "seconds"]
ESTIMATOR_LABELS = {"is": "importance sampling", "paper": "the paper's App. D estimator (harmonic-mean type)",
                    "hmc-is": "importance sampling, HMC-fitted Gaussian proposal"}

_FULL_TRAIN_SIZE = {"mnist": 60_000, "binarized-mnist": 60_000, "cifar10": 50_000,
                    "freyface": 1965 - FREYFACE_TEST_SIZE}
_CHECKPOINT_STEPS = 1000  # write a checkpoint about every this many optimizer steps


# --- shared helpers ------------------------------------------------------------------------------------------
def train_set_size(dataset: str, train_size: int | None = None) -> int:
    """Number of training datapoints of `dataset` (the first `train_size` of them if given), without loading."""
    if dataset not in _FULL_TRAIN_SIZE:
        raise ConfigError(f"dataset={dataset!r} is not allowed; choose one of: {', '.join(_FULL_TRAIN_SIZE)}")
    full = _FULL_TRAIN_SIZE[dataset]
    return full if train_size is None else min(train_size, full)


def epochs_for_samples(samples: float, n_train: int) -> int:
    """Whole epochs needed to evaluate at least `samples` training datapoints (at least one epoch)."""
    if not isinstance(samples, int | float) or isinstance(samples, bool) or not samples > 0:
        raise ConfigError(f"samples budget {samples!r} is not allowed; it must be a number > 0 (e.g. 1e6)")
    if n_train < 1:
        raise ConfigError(f"training set size {n_train} is not allowed; it must be >= 1")
    return max(1, math.ceil(samples / n_train - 1e-9))


def checkpoint_interval(n_train: int, batch_size: int) -> int:
    """Epochs between checkpoints so that one is written about every 1,000 steps (tiny epochs: rarely)."""
    return max(1, round(_CHECKPOINT_STEPS / math.ceil(n_train / batch_size)))


def paper_weight_decay(n_train: int) -> float:
    """The weight decay that is the paper's N(0, I) prior on the parameters.

    The paper maximizes sum_i ELBO_i + log N(theta; 0, I); training here minimizes the *mean* loss over a
    minibatch, so the prior's share per datapoint is |theta|^2 / (2N), whose gradient theta / N is
    Adagrad's weight_decay = 1/N.
    """
    return 1.0 / n_train


def _check_methods(methods: Sequence[str]) -> None:
    if not methods:
        raise ConfigError("methods is empty; name at least one of: " + ", ".join(METHODS))
    for method in methods:
        if method not in METHODS:
            raise ConfigError(f"method={method!r} is not allowed; choose from: {', '.join(METHODS)}")


def _check_positive_ints(name: str, values: Sequence[int]) -> None:
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ConfigError(f"{name}={list(values)!r} is not allowed; give a non-empty list of integers >= 1")


def _per_method(value: float | Mapping[str, float], method: str, name: str) -> float:
    if isinstance(value, Mapping):
        if method not in value:
            raise ConfigError(f"{name} has no entry for method {method!r}; give a number or a mapping with "
                              f"keys {', '.join(METHODS)}")
        return value[method]
    return value


# --- Figure 2 ------------------------------------------------------------------------------------------------
def figure2_configs(dataset: str, latent_dims: Sequence[int] | None = None, samples_budget: float = 1e6,
                    methods: Sequence[str] = ("aevb", "wake-sleep"), lr: float | Mapping[str, float] = 0.02,
                    hidden_dim: int | None = None, batch_size: int = 100, train_size: int | None = None,
                    test_size: int | None = None, weight_decay: float | None = None,
                    init_std: float | None = PAPER_INIT_STD, seed: int = 0, device: str = "auto") -> list[RunConfig]:
    """The runs of one Fig. 2 panel family: every method for every latent dimension, in that order.

    dataset: "binarized-mnist" (the paper's MNIST) or "freyface". latent_dims: None for the paper's
    (MNIST 3, 5, 10, 20, 200; Frey Face 2, 5, 10, 20). samples_budget: training datapoints to evaluate;
    epochs = ceil(budget / N_train). lr: Adagrad's global step size, one number or one per method.
    weight_decay: None for the paper's N(0, I) parameter prior (1/N_train, see `paper_weight_decay`).
    Everything else is the paper's: one tanh hidden layer (500 units MNIST, 200 Frey Face), Bernoulli or
    sigmoid-mean Gaussian decoder, M = 100, L = 1, Adagrad, weights from N(0, 0.01^2). The test ELBO is
    computed at 5 log-spaced sample counts per decade (`eval_schedule="log"`).
    """
    if dataset not in FIG2_LATENT_DIMS:
        raise ConfigError(f"dataset={dataset!r} is not allowed for Figure 2; choose one of: "
                          f"{', '.join(FIG2_LATENT_DIMS)}")
    latent_dims = tuple(FIG2_LATENT_DIMS[dataset] if latent_dims is None else latent_dims)
    _check_positive_ints("latent_dims", latent_dims)
    _check_methods(methods)
    n_train = train_set_size(dataset, train_size)
    epochs = epochs_for_samples(samples_budget, n_train)
    configs = []
    for latent_dim in latent_dims:
        for method in methods:
            configs.append(RunConfig(
                dataset=dataset, method=method, latent_dim=latent_dim, hidden_dim=hidden_dim, epochs=epochs,
                batch_size=batch_size, optimizer="adagrad", lr=_per_method(lr, method, "lr"),
                weight_decay=paper_weight_decay(n_train) if weight_decay is None else weight_decay,
                init_std=init_std, train_size=train_size, test_size=test_size, eval_schedule="log",
                seed=seed, device=device, checkpoint_every=checkpoint_interval(n_train, batch_size)))
    return configs


def describe_configs(configs: Sequence[RunConfig]) -> pd.DataFrame:
    """One row per run: what it trains and for how long (epochs, training samples evaluated)."""
    rows = []
    for c in configs:
        n_train = train_set_size(c.dataset, c.train_size)
        rows.append({"dataset": c.dataset, "method": c.method, "latent_dim": c.latent_dim,
                     "hidden_dim": c.hidden_dim, "likelihood": c.likelihood, "train_size": n_train,
                     "epochs": c.epochs, "samples": c.epochs * n_train, "lr": c.lr,
                     "weight_decay": c.weight_decay, "run": c.run_name()})
    return pd.DataFrame(rows)


def budget_sentence(configs: Sequence[RunConfig], paper_samples: float = 1e8) -> str:
    """How many training samples this page's runs evaluated, against the paper's, as one sentence."""
    table = describe_configs(configs)
    parts = []
    for (dataset, method, _), part in table.groupby(["dataset", "method", "train_size"], sort=False):
        samples = sorted(set(part["samples"]))
        epochs = sorted(set(part["epochs"]))
        n = int(part["train_size"].iloc[0])
        parts.append(f"{DATASET_LABELS.get(dataset, dataset)} {METHOD_LABELS.get(method, method)}: "
                     f"{', '.join(f'{e:,}' for e in epochs)} epochs of {n:,} points = "
                     f"{', '.join(f'{s:,.0f}' for s in samples)} samples")
    share = table["samples"].max() / paper_samples
    return (f"Training budget of this page: {'; '.join(parts)}. The paper trained up to {_math_number(paper_samples)}"
            f" samples per run, so the longest run here covers {share:.2%} of the paper's budget.")


def _math_number(x: float) -> str:
    """10^k as Markdown math when x is a power of ten, else the number with thousands separators."""
    exponent = math.log10(x) if x > 0 else math.nan
    return f"$10^{{{int(round(exponent))}}}$" if abs(exponent - round(exponent)) < 1e-9 else f"{x:,.0f}"


def history_to_long(config: RunConfig, history: pd.DataFrame) -> pd.DataFrame:
    """A run's history as Fig. 2 rows: the train ELBO of every epoch (the running mean over that epoch's
    minibatches, so it lags the model by half an epoch) and the test ELBO where it was computed."""
    frames = []
    for split in ("train", "test"):
        part = history[["epoch", "samples_seen", f"{split}_elbo"]].dropna()
        part = part.rename(columns={f"{split}_elbo": "elbo"}).assign(split=split)
        frames.append(part)
    long = pd.concat(frames, ignore_index=True)
    long = long.assign(dataset=config.dataset, method=config.method, latent_dim=config.latent_dim)
    long["epoch"] = long["epoch"].astype(int)
    long["samples_seen"] = long["samples_seen"].astype(np.int64)
    return long[FIG2_COLUMNS]


def run_figure2(configs: Sequence[RunConfig], runs_dir: str | os.PathLike | None = None,
                data_dir: str | os.PathLike | None = None, progress: bool = True) -> pd.DataFrame:
    """Train (or load) every run and return the long table: dataset, method, latent_dim, epoch,
    samples_seen, split ("train"/"test"), elbo (nats per datapoint, SGVB estimator B, L = 1)."""
    frames = []
    for config in tqdm(configs, desc="Figure 2 runs", unit="run", disable=not progress):
        run = fit_or_load(config, runs_dir, data_dir, progress=progress)
        frames.append(history_to_long(run.config, run.history))
    if not frames:
        return pd.DataFrame(columns=FIG2_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def _final(df: pd.DataFrame, split: str) -> pd.Series:
    rows = df[df["split"] == split].sort_values("samples_seen")
    return rows.groupby(["dataset", "latent_dim", "method"])["elbo"].last()


def figure2_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, latent_dim): final train and test ELBO of each method, the test difference
    AEVB - wake-sleep, the share of common test evaluations where AEVB is ahead, and AEVB's train - test
    gap (nats per datapoint)."""
    train, test = _final(df, "train"), _final(df, "test")
    rows = []
    for (dataset, latent_dim), _ in df.groupby(["dataset", "latent_dim"]):
        row: dict[str, Any] = {"dataset": dataset, "latent_dim": latent_dim}
        for method in METHODS:
            key = (dataset, latent_dim, method)
            if key in test.index:
                row[f"{method}_train"] = train.get(key, math.nan)
                row[f"{method}_test"] = test[key]
        if "aevb_test" in row and "wake-sleep_test" in row:
            row["aevb_minus_ws_test"] = row["aevb_test"] - row["wake-sleep_test"]
            curves = df[(df["dataset"] == dataset) & (df["latent_dim"] == latent_dim) & (df["split"] == "test")]
            wide = curves.pivot_table(index="samples_seen", columns="method", values="elbo").dropna()
            row["aevb_ahead_share"] = float((wide["aevb"] > wide["wake-sleep"]).mean()) if len(wide) else math.nan
        if "aevb_test" in row:
            row["aevb_gap"] = row["aevb_train"] - row["aevb_test"]
        rows.append(row)
    return pd.DataFrame(rows)


def samples_to_reach(df: pd.DataFrame, level: float) -> float:
    """Samples seen at the first test evaluation whose ELBO is >= level (NaN if never): for one curve."""
    rows = df[(df["split"] == "test") & (df["elbo"] >= level)].sort_values("samples_seen")
    return float(rows["samples_seen"].iloc[0]) if len(rows) else math.nan


def figure2_findings(df: pd.DataFrame, tolerance: float = 1.0) -> list[str]:
    """Sentences, computed from the table, on the paper's two claims for Fig. 2.

    1. AEVB reaches a higher test ELBO than wake-sleep, and sooner: checked per (dataset, Nz) on the final
       test ELBO, and by the samples AEVB needed to reach wake-sleep's final test ELBO.
    2. Superfluous latent dimensions do not overfit: the largest Nz's final test ELBO is compared with the
       best over Nz, and AEVB's train - test gap with that of the smallest Nz. `tolerance` (nats) is how
       close counts as "no worse".
    """
    summary = figure2_summary(df)
    sentences = []
    for dataset, part in summary.groupby("dataset"):
        name = DATASET_LABELS.get(dataset, dataset)
        if "aevb_minus_ws_test" in part:
            ahead = part[part["aevb_minus_ws_test"] > 0]["latent_dim"].tolist()
            behind = part[part["aevb_minus_ws_test"] <= 0]["latent_dim"].tolist()
            diffs = ", ".join(f"Nz={r.latent_dim}: {r.aevb_minus_ws_test:+.1f}" for r in part.itertuples())
            if not behind:
                sentences.append(f"{name}: AEVB ends above wake-sleep on the test set for every Nz, as in the "
                                 f"paper (AEVB - wake-sleep, nats: {diffs}).")
            else:
                sentences.append(f"{name}: AEVB ends above wake-sleep on the test set for Nz in {ahead or 'none'}"
                                 f" but not for Nz in {behind}, unlike the paper (AEVB - wake-sleep, nats: "
                                 f"{diffs}).")
            speed = []
            for latent_dim in part["latent_dim"]:
                curves = df[(df["dataset"] == dataset) & (df["latent_dim"] == latent_dim)]
                ws = curves[(curves["method"] == "wake-sleep") & (curves["split"] == "test")]
                if not len(ws):
                    continue
                ws_final = ws.sort_values("samples_seen")["elbo"].iloc[-1]
                reach = samples_to_reach(curves[curves["method"] == "aevb"], ws_final)
                ws_end = ws["samples_seen"].max()
                speed.append((latent_dim, reach, ws_end))
            faster = [f"Nz={d}: {r:,.0f}" for d, r, end in speed if r < end]
            if speed:
                sentences.append(
                    f"{name}: AEVB reached wake-sleep's final test ELBO (after {speed[0][2]:,.0f} samples) "
                    + (f"earlier for {len(faster)} of {len(speed)} latent sizes (samples needed: "
                       f"{', '.join(faster)})." if faster else "earlier for none of the latent sizes."))
        if "aevb_test" in part and len(part) > 1:
            part = part.sort_values("latent_dim")
            largest = part.iloc[-1]
            best = part.loc[part["aevb_test"].idxmax()]
            smallest = part.iloc[0]
            if largest["aevb_test"] >= best["aevb_test"] - tolerance:
                verdict = (f"no worse than the best Nz (within {tolerance:.0f} nat), so the superfluous "
                           "dimensions did not hurt, as in the paper")
            else:
                verdict = (f"{best['aevb_test'] - largest['aevb_test']:.1f} nats below the best Nz "
                           f"(Nz={int(best['latent_dim'])}): at this budget the extra dimensions cost something")
            sentences.append(
                f"{name}: with the largest Nz={int(largest['latent_dim'])}, AEVB's final test ELBO is "
                f"{largest['aevb_test']:.1f} nats, {verdict}. AEVB's train - test gap is "
                f"{largest['aevb_gap']:.1f} nats there against {smallest['aevb_gap']:.1f} at "
                f"Nz={int(smallest['latent_dim'])}.")
    return sentences


def _out_of_range_note(ax: plt.Axes, ylim: tuple[float, float], finals: list[tuple[str, float]]) -> None:
    outside = [(label, v) for label, v in finals if not ylim[0] <= v <= ylim[1]]
    if outside:
        text = "ends outside the axis:\n" + "\n".join(f"{label}: {v:.0f}" for label, v in outside)
        # Top left: the curves climb from the bottom left, so that corner stays emptiest; zorder 1 keeps
        # the lines drawn over the note.
        ax.text(0.03, 0.97, text, transform=ax.transAxes, fontsize="x-small", va="top", ha="left",
                color="0.3", zorder=1)


def plot_figure2(df: pd.DataFrame, dataset: str, ylim: tuple[float, float] | str | None = "paper",
                 xlim: tuple[float, float] | str | None = None, ncols: int | None = None) -> Figure:
    """Fig. 2 for one data set: a panel per Nz, ELBO per datapoint against training samples evaluated
    (log axis), AEVB and wake-sleep, train dashed and test solid.

    ylim: "paper" for the paper's range (MNIST -150..-100, Frey Face 0..1600), None to fit the data, or a
    pair; curves may leave the panel as in the paper, and a note lists the end points outside it.
    xlim: None to fit the data, "paper" for 10^5..10^8, or a pair.
    ncols: panels per row; by default all of them up to three, else two rows (5 panels: 3 + 2, 4: 2 x 2),
    so that each panel stays legible at the width of a book page.
    """
    data = df[df["dataset"] == dataset]
    if data.empty:
        raise ValueError(f"no rows for dataset={dataset!r}; the table holds: {sorted(df['dataset'].unique())}")
    dims = sorted(data["latent_dim"].unique())
    ncols = ncols or (len(dims) if len(dims) <= 3 else math.ceil(len(dims) / 2))
    nrows = math.ceil(len(dims) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.9 * ncols, 2.7 * nrows), sharey=True, squeeze=False)
    limits = FIG2_YLIM.get(dataset) if ylim == "paper" else ylim
    for ax, latent_dim in zip(axes.flat, dims, strict=False):
        finals = []
        for method in [m for m in METHODS if m in set(data["method"])]:
            for split, style in SPLIT_STYLES.items():
                curve = data[(data["method"] == method) & (data["latent_dim"] == latent_dim)
                             & (data["split"] == split)].sort_values("samples_seen")
                if curve.empty:
                    continue
                label = f"{METHOD_LABELS[method]} {split}"
                ax.plot(curve["samples_seen"], curve["elbo"], linestyle=style, color=METHOD_COLORS[method],
                        label=label, gid=f"{method}|{latent_dim}|{split}")
                finals.append((label, float(curve["elbo"].iloc[-1])))
        ax.set_xscale("log")
        ax.set_title(f"{DATASET_LABELS.get(dataset, dataset)}, $N_z = {latent_dim}$")
        if limits is not None:
            ax.set_ylim(*limits)
            _out_of_range_note(ax, limits, finals)
        if xlim == "paper":
            lo = min(PAPER_XLIM[0], float(data["samples_seen"].min()))
            ax.set_xlim(lo, max(PAPER_XLIM[1], float(data["samples_seen"].max())))
        elif xlim is not None:
            ax.set_xlim(*xlim)
    for ax in axes.flat[len(dims):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("$\\mathcal{L}$ (nats per datapoint)")
    for ax in axes.flat:
        ax.set_xlabel("training samples evaluated", fontsize="small")
        ax.xaxis.set_minor_formatter(NullFormatter())  # decade labels only: minor ones overlap
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels) if ncols >= 3 else 2, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    return fig


# --- step-size selection (the paper's procedure) -------------------------------------------------------------
def select_step_size(config: RunConfig, candidates: Sequence[float] = PAPER_STEP_SIZES, samples: float = 2e4,
                     runs_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
                     progress: bool = False) -> tuple[float, pd.DataFrame]:
    """The paper's choice of Adagrad's global step size: train `config` with each candidate for the first
    `samples` training datapoints and keep the one with the best training performance (the train ELBO of
    the last epoch; for MCEM, which has no ELBO, its mean log p(x, z) at the HMC samples). Runs are cached
    like any other. Returns (best lr, a table of lr and score); a candidate that diverges scores -inf."""
    if not candidates:
        raise ConfigError("candidates is empty; give step sizes to choose from, e.g. (0.01, 0.02, 0.1)")
    n_train = train_set_size(config.dataset, config.train_size)
    epochs = epochs_for_samples(samples, n_train)
    rows = []
    for lr in candidates:
        trial = config.replace(lr=lr, epochs=epochs, eval_schedule="log",
                               checkpoint_every=checkpoint_interval(n_train, config.batch_size))
        try:
            history = fit_or_load(trial, runs_dir, data_dir, progress=progress).history
            last = history.iloc[-1]
            score = last["train_elbo"] if math.isfinite(last["train_elbo"]) else last["train_objective"]
        except NonFiniteLossError:
            score = -math.inf
        rows.append({"lr": lr, "score": float(score) if math.isfinite(score) else -math.inf})
    table = pd.DataFrame(rows)
    return float(table.loc[table["score"].idxmax(), "lr"]), table


def select_step_sizes(configs: Sequence[RunConfig], candidates: Sequence[float] = PAPER_STEP_SIZES,
                      samples: float = 2e4, runs_dir: str | os.PathLike | None = None,
                      data_dir: str | os.PathLike | None = None, progress: bool = True
                      ) -> tuple[list[RunConfig], pd.DataFrame]:
    """`select_step_size` once per (dataset, method, train_size) group, on the group's median latent size,
    and the configs with the chosen lr. Returns (configs, a table of every trial)."""
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault((c.dataset, c.method, c.train_size), []).append(i)
    chosen, tables = {}, []
    for key, members in tqdm(groups.items(), desc="step-size selection", unit="group", disable=not progress):
        dims = sorted(configs[i].latent_dim for i in members)
        probe = next(configs[i] for i in members if configs[i].latent_dim == dims[len(dims) // 2])
        lr, table = select_step_size(probe, candidates, samples, runs_dir, data_dir)
        chosen[key] = lr
        tables.append(table.assign(dataset=key[0], method=key[1], train_size=key[2], latent_dim=probe.latent_dim,
                                   chosen=table["lr"] == lr))
    new = [c.replace(lr=chosen[(c.dataset, c.method, c.train_size)]) for c in configs]
    return new, pd.concat(tables, ignore_index=True)


def resolve_step_sizes(configs: Sequence[RunConfig], lr: float | str | Mapping[str, float | str],
                       candidates: Sequence[float] = PAPER_STEP_SIZES, samples: float = 2e4,
                       runs_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
                       progress: bool = True) -> tuple[list[RunConfig], pd.DataFrame | None]:
    """Set every config's lr from `lr`: a number, "auto" (the paper's selection, `select_step_sizes`), or a
    mapping from method to either. Returns (configs, the selection trials or None if none ran)."""
    def wanted(method: str) -> float | str:
        value = _per_method(lr, method, "lr")
        if value != "auto" and (not isinstance(value, int | float) or isinstance(value, bool) or value <= 0):
            raise ConfigError(f"lr={value!r} for method {method!r} is not allowed; use a number > 0 or 'auto'")
        return value

    fixed = [c if wanted(c.method) == "auto" else c.replace(lr=float(wanted(c.method))) for c in configs]
    auto = [i for i, c in enumerate(fixed) if wanted(c.method) == "auto"]
    if not auto:
        return fixed, None
    chosen, trials = select_step_sizes([fixed[i] for i in auto], candidates, samples, runs_dir, data_dir, progress)
    for i, c in zip(auto, chosen, strict=True):
        fixed[i] = c
    return fixed, trials


# --- Figure 3 ------------------------------------------------------------------------------------------------
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
    `vaelib.baselines.MCEM_DEFAULTS` for the MCEM runs.
    """
    _check_positive_ints("train_sizes", train_sizes)
    _check_methods(methods)
    configs = []
    for n in train_sizes:
        n_train = train_set_size(dataset, n)
        for method in methods:
            epochs = epochs_for_samples(_per_method(samples_budget, method, "samples_budget"), n_train)
            extra = dict(mcem_settings or {}) if method == "mcem" else {}
            configs.append(RunConfig(
                dataset=dataset, method=method, latent_dim=latent_dim, hidden_dim=hidden_dim, epochs=epochs,
                batch_size=batch_size, optimizer="adagrad", lr=_per_method(lr, method, "lr"),
                weight_decay=paper_weight_decay(n_train) if weight_decay is None else weight_decay,
                init_std=init_std, train_size=n, test_size=test_size, eval_schedule="log", seed=seed,
                device=device, checkpoint_every=checkpoint_interval(n_train, batch_size), extra=extra))
    return configs


def stage_epochs(epochs: int, n_train: int, points_per_decade: int = 2, min_samples: float = 1e4) -> list[int]:
    """Epoch counts at which Fig. 3 evaluates log p(x): about `points_per_decade` log-spaced sample counts
    per decade from `min_samples` (at least one epoch) up to `epochs`, which is always the last stage."""
    if points_per_decade < 1:
        raise ConfigError(f"points_per_decade={points_per_decade} is not allowed; use an integer >= 1")
    start = max(n_train, min(min_samples, epochs * n_train))
    lo, hi = math.ceil(points_per_decade * math.log10(start) - 1e-9), points_per_decade * math.log10(epochs * n_train)
    grid = [10 ** (j / points_per_decade) for j in range(lo, math.floor(hi + 1e-9) + 1)]
    stages = sorted({min(epochs, max(1, round(s / n_train))) for s in grid} | {epochs})
    return stages


def staged_run_dir(config: RunConfig, runs_dir: str | os.PathLike | None = None) -> Path:
    """The one directory a Fig. 3 run grows in, whatever its final epoch count (the hash leaves it out)."""
    base = config.replace(epochs=0)
    return default_runs_dir(runs_dir) / (f"{config.dataset}-z{config.latent_dim}-{config.method}"
                                         f"-n{config.train_size}-staged-{base.hash()}")


def _eval_points(dataset: Dataset, split: str, n: int) -> torch.Tensor:
    x = torch.cat(list(dataset.split_batches(split, 1000)))
    return x[:n]


def _estimate(model: torch.nn.Module, method: str, x: torch.Tensor, estimator: str, k: int, batch_size: int,
              kwargs: Mapping[str, Any], progress: bool) -> tuple[torch.Tensor, str]:
    """log p(x) for each row of x (N,) and the proposal's name."""
    batches = x.split(batch_size)
    if estimator == "is" and method != "mcem":
        return log_likelihood(model, batches, k, progress=progress, total=len(x)), "encoder q(z|x)"
    if estimator in ("is", "hmc-is"):
        values = baselines.marginal_log_likelihood(model, batches, "hmc-is", progress=progress, total=len(x),
                                                   k=k, **kwargs)
        return values, "Gaussian fitted to HMC samples of p(z|x)"
    if estimator == "paper":
        values = baselines.marginal_log_likelihood(model, batches, "paper", progress=progress, total=len(x),
                                                   **kwargs)
        return values, "Gaussian fitted to HMC samples (harmonic mean of q/p)"
    raise ConfigError(f"estimator={estimator!r} is not allowed; choose one of: {', '.join(ESTIMATOR_LABELS)}")


def run_figure3(configs: Sequence[RunConfig], runs_dir: str | os.PathLike | None = None,
                data_dir: str | os.PathLike | None = None, k: int = 1000, n_points: int = FIG3_EVAL_POINTS,
                estimators: Sequence[str] = ("is",), points_per_decade: int = 2, min_samples: float = 1e4,
                estimator_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
                last_stage: Mapping[str, Sequence[str]] | None = None, batch_size: int = 100,
                progress: bool = True) -> pd.DataFrame:
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
    arguments per estimator for `vaelib.baselines` (HMC settings, n_posterior_samples, ...).
    last_stage: estimators (keys, also listed in `estimators`) computed only after the last stage and only
    on the given splits, e.g. {"paper": ["test"]}: the HMC-based ones cost thousands of decoder passes per
    point.
    """
    last_stage = {e: tuple(splits) for e, splits in (last_stage or {}).items()}
    for split in [s for splits in last_stage.values() for s in splits]:
        if split not in ("train", "test"):
            raise ConfigError(f"split {split!r} in last_stage is not allowed; use 'train' and/or 'test'")
    for estimator in [*estimators, *last_stage]:
        if estimator not in ESTIMATOR_LABELS:
            raise ConfigError(f"estimator={estimator!r} is not allowed; choose from: {', '.join(ESTIMATOR_LABELS)}")
    if not isinstance(k, int) or k < 1 or not isinstance(n_points, int) or n_points < 1:
        raise ConfigError(f"k={k!r}, n_points={n_points!r}: both must be integers >= 1")
    estimator_kwargs = {e: dict((estimator_kwargs or {}).get(e, {})) for e in estimators}
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


def _settings_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _run_staged(config: RunConfig, dataset: Dataset, runs_dir: str | os.PathLike | None, k: int, n_points: int,
                estimators: Sequence[str], points_per_decade: int, min_samples: float,
                estimator_kwargs: Mapping[str, Mapping[str, Any]], last_stage: Mapping[str, tuple[str, ...]],
                batch_size: int,
                progress: bool) -> pd.DataFrame:
    out = staged_run_dir(config, runs_dir)
    cache_path = out / "marginal_likelihood.csv"
    cache = pd.read_csv(cache_path) if cache_path.exists() else None
    if cache is not None and not {*FIG3_COLUMNS, "key"} <= set(cache.columns):
        cache = None  # written by an older version of this table: estimate again
    n_train = dataset.x_train.shape[0]
    stages = stage_epochs(config.epochs, n_train, points_per_decade, min_samples)
    wanted = []
    for epoch in stages:
        for estimator in estimators:
            if estimator in last_stage and epoch != stages[-1]:
                continue
            kk = k if estimator in ("is", "hmc-is") else 0
            # The encoder proposal takes no HMC settings: changing those must not discard its estimates.
            kwargs = {} if estimator == "is" and config.method != "mcem" else estimator_kwargs[estimator]
            for split in last_stage.get(estimator, ("train", "test")):
                wanted.append((epoch, estimator, split, _settings_key(epoch, estimator, split, kk, n_points, kwargs)))
    done = set() if cache is None else set(cache["key"])
    missing = [w for w in wanted if w[3] not in done]
    new_rows = []
    for epoch in sorted({w[0] for w in missing}):
        model = _model_at(config, epoch, out, dataset, progress)
        if model is None:
            continue
        model.eval()
        history = pd.read_csv(out / "history.csv")
        train_seconds = float(history.loc[history["epoch"] <= epoch, "seconds"].sum())
        memo: dict[str, tuple[torch.Tensor, str]] = {}  # for MCEM, "is" and "hmc-is" are the same computation
        for _, estimator, split, key in [w for w in missing if w[0] == epoch]:
            x = _eval_points(dataset, split, n_points).to(next(model.parameters()).device)
            kind = "paper" if estimator == "paper" else ("encoder" if estimator == "is" and config.method != "mcem"
                                                         else "hmc-is")
            spec = _settings_key(split, kind, k, estimator_kwargs[estimator])
            t0 = time.perf_counter()
            if spec not in memo:
                torch.manual_seed(config.seed)  # the same proposal draws whenever a stage is evaluated again
                memo[spec] = _estimate(model, config.method, x, estimator, k, batch_size,
                                       estimator_kwargs[estimator], progress)
            values, proposal = memo[spec]
            values = values.double().cpu()
            new_rows.append({
                "dataset": config.dataset, "method": config.method, "train_size": n_train,
                "latent_dim": config.latent_dim, "epoch": epoch, "samples_seen": epoch * n_train,
                "train_seconds": train_seconds, "split": split, "estimator": estimator, "proposal": proposal,
                "k": k if estimator in ("is", "hmc-is") else 0, "n_points": len(x),
                "log_likelihood": float(values.mean()), "sem": float(values.std() / math.sqrt(len(values))),
                "median": float(values.median()), "seconds": time.perf_counter() - t0, "key": key})
        if new_rows:  # write after every stage, so an interrupted run keeps what it estimated
            cache = pd.DataFrame(new_rows) if cache is None else pd.concat([cache, pd.DataFrame(new_rows)],
                                                                             ignore_index=True)
            write_text_atomic(cache_path, cache.to_csv(index=False))  # a crash leaves the previous table intact
            new_rows = []
    if cache is None:
        return pd.DataFrame(columns=FIG3_COLUMNS)
    keys = {w[3] for w in wanted}
    result = cache[cache["key"].isin(keys)].drop(columns="key")
    return result[FIG3_COLUMNS].sort_values(["epoch", "estimator", "split"]).reset_index(drop=True)


def _model_at(config: RunConfig, epoch: int, out: Path, dataset: Dataset, progress: bool) -> torch.nn.Module | None:
    """The model after `epoch` epochs: from its snapshot, else by resuming the run up to there."""
    snapshot = out / f"model-epoch{epoch:06d}.pt"
    if snapshot.exists():
        model = build_model(config, dataset.image_shape)
        model.load_state_dict(torch.load(snapshot, map_location="cpu", weights_only=True))
        return model.to(select_device(config.device))
    done = _epochs_done(out)
    if done > epoch:
        # A longer run went past this stage without a snapshot of it (it asked for other stages); skip it.
        return None
    run: Run = fit(config.replace(epochs=epoch), out, resume=True, progress=progress, dataset=dataset)
    torch.save(run.model.state_dict(), snapshot)
    return run.model


def _epochs_done(out: Path) -> int:
    history = out / "history.csv"
    if not (out / "checkpoint.pt").exists() or not history.exists():
        return 0
    # The checkpoint, not history.csv, is what a resume continues from: history may run ahead of it.
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    return int(state["epoch"])


def plot_figure3(df: pd.DataFrame, estimator: str = "is", train_sizes: Sequence[int] | None = None,
                 ylim: tuple[float, float] | None = None, xlim: tuple[float, float] | str | None = None) -> Figure:
    """Fig. 3: one panel per training-set size, log p(x) per datapoint (nats) of the evaluated training
    and test points against training samples evaluated (log axis); one colour per method, train dashed,
    test solid. estimator: which rows of the table to draw ("is", "hmc-is" or "paper")."""
    data = df[df["estimator"] == estimator]
    if data.empty:
        raise ValueError(f"no rows for estimator={estimator!r}; the table holds: {sorted(df['estimator'].unique())}")
    sizes = list(train_sizes) if train_sizes is not None else sorted(data["train_size"].unique())
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.4), sharey=True, squeeze=False)
    for ax, n in zip(axes[0], sizes, strict=True):
        part = data[data["train_size"] == n]
        for method in [m for m in METHODS if m in set(part["method"])]:
            for split, style in SPLIT_STYLES.items():
                curve = part[(part["method"] == method) & (part["split"] == split)].sort_values("samples_seen")
                if curve.empty:
                    continue
                ax.plot(curve["samples_seen"], curve["log_likelihood"], linestyle=style, marker=".",
                        color=METHOD_COLORS[method], label=f"{METHOD_LABELS[method]} {split}",
                        gid=f"{method}|{n}|{split}")
        ax.set_xscale("log")
        ax.set_title(f"$N_{{train}}$ = {n:,}")
        if ylim is not None:
            ax.set_ylim(*ylim)
        if xlim == "paper":
            ax.set_xlim(min(PAPER_XLIM[0], float(data["samples_seen"].min())),
                        max(PAPER_XLIM[1], float(data["samples_seen"].max())))
        elif xlim is not None:
            ax.set_xlim(*xlim)
    axes[0, 0].set_ylabel("log p(x) (nats per datapoint)")
    for ax in axes.flat:
        ax.set_xlabel("# training samples evaluated")
        ax.xaxis.set_minor_formatter(NullFormatter())
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 3 * len(sizes)), frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    return fig


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


def records_for(df: pd.DataFrame, figure: int) -> Iterable[dict[str, Any]]:
    """Headline numbers for `vaelib.results.record`: Fig. 2, each data set and method's best final test
    ELBO over Nz; Fig. 3, each method's last test log p(x) estimate (estimator "is") per training size."""
    if figure == 2:
        finals = _final(df, "test").reset_index()
        for (dataset, method), part in finals.groupby(["dataset", "method"]):
            best = part.loc[part["elbo"].idxmax()]
            samples = df[(df["dataset"] == dataset) & (df["method"] == method)]["samples_seen"].max()
            yield {"key": f"{dataset}_{method}_test_elbo_best_nz", "value": float(best["elbo"]), "unit": "nats",
                   "estimator": "ELBO, SGVB estimator B, L=1, "
                                + ("393 held-out frames" if dataset == "freyface" else "test set"),
                   "note": f"best over Nz (Nz={int(best['latent_dim'])}) after {samples:,.0f} training samples"}
    elif figure == 3:
        data = df[(df["estimator"] == "is") & (df["split"] == "test")].sort_values("samples_seen")
        for (method, n), part in data.groupby(["method", "train_size"]):
            last = part.iloc[-1]
            yield {"key": f"{method}_n{n}_test_log_px", "value": float(last["log_likelihood"]), "unit": "nats",
                   "estimator": f"log p(x), importance sampling, k={int(last['k'])}, proposal: {last['proposal']}, "
                                f"first {int(last['n_points']):,} test points",
                   "note": f"Nz=3, N_train={n:,}, after {last['samples_seen']:,.0f} training samples"}
    else:
        raise ValueError(f"figure={figure!r} is not allowed; use 2 or 3")
