"""The paper's choice of Adagrad's global step size: each candidate trains for the first few thousand
samples, and the one with the best training performance is kept (Sec. 5, "step-sizes chosen from
{0.01, 0.02, 0.1} based on performance on the training set in the first few iterations")."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import pandas as pd
from tqdm.auto import tqdm

from ..config import ConfigError, RunConfig
from ..data import train_set_size
from ..methods import NonFiniteLossError
from ..train import fit_or_load
from .settings import PAPER_STEP_SIZES, checkpoint_interval, epochs_for_samples, per_method


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
        value = per_method(lr, method, "lr")
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


def trials_table(trials: pd.DataFrame, index: Sequence[str] = ("dataset", "method")) -> pd.DataFrame:
    """The step-size trials for a page: one row per `index` group, one column per candidate lr, each cell the
    trial's score (nats per datapoint, one decimal), or "diverged" where the score is not finite or lies more
    than ten times the best score's magnitude below it (a run whose bound ran off to -10^8 is not a number
    a reader should compare), and the chosen lr marked with a star."""
    rows = {}
    for key, part in trials.groupby(list(index), sort=False):
        best = part["score"].max()
        row = {}
        for r in part.itertuples():
            diverged = not math.isfinite(r.score) or r.score < best - 10 * abs(best)
            text = "diverged" if diverged else f"{r.score:,.1f}"
            row[f"lr = {r.lr:g}"] = text + (" *" if r.chosen else "")
        rows[key if isinstance(key, tuple) else (key,)] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.names = list(index)
    return table
