"""Train a set of configs, evaluate them once, and put the figures side by side with the literature's.

The chapters that compare several models (Frey Face at several latent sizes, the test-NLL chapter, the
results page) call these functions instead of looping over runs themselves. Every number is in nats per
example (a sum over pixels, a mean over test examples), as everywhere in vaelib; an NLL is -log p(x), so
it is positive for binary data and smaller is better.

Evaluations are cached next to their run (`<run dir>/eval-<key>.json`, keyed by the split, k, the number
of examples, the seed and the epochs trained), so a rebuild that reuses a run also reuses its k=5000
importance-sampling estimate instead of recomputing it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .config import RunConfig
from .data import Dataset, image_shape, load_dataset
from .evaluate import evaluate
from .results import write_text_atomic
from .train import Run, fit_or_load, seeded

EVAL_SEED = 2024  # one fixed stream of importance samples, so a re-evaluation gives the same number


@dataclass
class Study:
    """Runs trained from a dict of configs, their `evaluate()` results and a summary table (one row each).

    runs, results: keyed by the labels given to `train_and_evaluate`. table: see `summary_table`.
    """

    runs: dict[str, Run]
    results: dict[str, dict[str, Any]]
    table: pd.DataFrame
    datasets: dict[str, Dataset] = field(default_factory=dict, repr=False)

    def histories(self) -> dict[str, pd.DataFrame]:
        """{label: run.history}, the input of `vaelib.figures.training_curves`."""
        return {label: run.history for label, run in self.runs.items()}

    def models(self) -> dict[str, torch.nn.Module]:
        """{label: run.model}, the input of the figures that compare models."""
        return {label: run.model for label, run in self.runs.items()}

    def dataset(self, label: str) -> Dataset:
        """The data set (with the run's subsets, on the model's device) that run `label` was evaluated on."""
        return self.datasets[label]


def describe_architecture(config: RunConfig, num_dims: int | None = None) -> str:
    """A one-line description of the encoder/decoder, e.g. "MLP 784-200-200-50, tanh" or
    "conv, 32 base channels, 2 residual blocks per stage, 50 latent, elu"."""
    if config.architecture == "mlp":
        d = num_dims or math.prod(image_shape(config.dataset))
        sizes = "-".join(str(s) for s in [d, *[config.hidden_dim] * config.hidden_layers, config.latent_dim])
        return f"MLP {sizes}, {config.activation}"
    blocks = f", {config.res_blocks} residual block{'s' if config.res_blocks != 1 else ''} per stage"
    return (f"conv, {config.hidden_dim} base channels{blocks if config.res_blocks else ''}, "
            f"{config.latent_dim} latent, {config.activation}")


def describe_training(config: RunConfig) -> str:
    """A one-line description of the objective and optimizer, e.g. "ELBO (estimator B, L=1), Adam 1e-3
    cosine, 100 epochs, M=100"."""
    if config.estimator == "iwae":
        objective = f"IWAE bound, k={config.n_samples}"
    else:
        objective = f"ELBO (estimator {config.estimator}, L={config.n_samples})"
        if config.beta != 1.0:
            objective += f", beta={config.beta}"
    schedule = "" if config.lr_schedule == "constant" else f" {config.lr_schedule}"
    warmup = f", KL warm-up {config.kl_warmup_epochs} epochs" if config.kl_warmup_epochs else ""
    optimizer = {"adam": "Adam", "adagrad": "Adagrad"}[config.optimizer]
    epochs = f"{config.epochs:,} epoch{'s' if config.epochs != 1 else ''}"
    return f"{objective}, {optimizer} {config.lr:g}{schedule}, {epochs}, M={config.batch_size}{warmup}"


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters (weights and biases)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _eval_cache_path(run: Run, split: str, iw_samples: int, n: int, seed: int) -> Path:
    return run.path / f"eval-{split}-k{iw_samples}-n{n}-seed{seed}-epoch{run.epochs_done}.json"


def evaluate_cached(run: Run, dataset: Dataset, iw_samples: int = 1000, max_examples: int | None = None,
                    split: str = "test", seed: int = EVAL_SEED, progress: bool = True) -> dict[str, Any]:
    """`vaelib.evaluate.evaluate` with a fixed seed, cached as JSON in the run's directory.

    The cache key holds the split, k (`iw_samples`), the number of examples evaluated, the seed and the
    epochs trained, so a longer run or another subset is evaluated afresh. Values in nats per example.
    """
    full = (dataset.x_test if split == "test" else dataset.x_train).shape[0]
    n = full if max_examples is None else min(max_examples, full)
    path = _eval_cache_path(run, split, iw_samples, n, seed)
    if path.exists():
        return json.loads(path.read_text())
    with seeded(seed, next(run.model.parameters()).device):
        result = evaluate(run, dataset, iw_samples=iw_samples, split=split, progress=progress,
                          max_examples=None if n == full else n)
    text = json.dumps(result, indent=2, default=float)
    write_text_atomic(path, text)
    return json.loads(text)  # the same values a later call reads back from the cache


def train_and_evaluate(configs: Mapping[str, RunConfig], iw_samples: int = 1000, max_examples: int | None = None,
                       runs_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
                       progress: bool = True) -> Study:
    """Train (or load) every config, evaluate each on its test set and return a `Study`.

    configs: {label: RunConfig}; the label names the run in tables and legends. iw_samples: k for the
    importance-sampled log p(x) (0 skips it, leaving the ELBO only). max_examples: evaluate on the first N
    test examples only (None: the whole test set; every result carries a `note` that says which).
    Runs are cached in `runs_dir` by config hash (see `vaelib.train.fit_or_load`), evaluations next to
    them (see `evaluate_cached`). Every config is validated before anything trains.
    """
    if not configs:
        raise ValueError("configs is empty; pass a dict {label: RunConfig}")
    for label, config in configs.items():
        if not isinstance(config, RunConfig):
            raise TypeError(f"configs[{label!r}] is a {type(config).__name__}, not a RunConfig")
    if not isinstance(iw_samples, int) or iw_samples < 0:
        raise ValueError(f"iw_samples={iw_samples!r} is not allowed; use 0 (ELBO only) or a positive integer")
    if max_examples is not None and (not isinstance(max_examples, int) or max_examples < 1):
        raise ValueError(f"max_examples={max_examples!r} is not allowed; use None (all) or an integer >= 1")
    runs: dict[str, Run] = {}
    results: dict[str, dict[str, Any]] = {}
    datasets: dict[str, Dataset] = {}
    loaded: dict[tuple, Dataset] = {}
    for label, config in configs.items():
        run = fit_or_load(config, runs_dir=runs_dir, data_dir=data_dir, progress=progress)
        device = next(run.model.parameters()).device
        key = (config.dataset, config.train_size, config.test_size, str(device))
        if key not in loaded:
            loaded[key] = load_dataset(config.dataset, data_dir, config.train_size, config.test_size,
                                       device=device)
        runs[label], datasets[label] = run, loaded[key]
        results[label] = evaluate_cached(run, loaded[key], iw_samples, max_examples, progress=progress)
    return Study(runs, results, summary_table(runs, results), datasets)


def summary_table(runs: Mapping[str, Run], results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run: architecture, training, epochs, training time (s), test ELBO and log p(x) (nats per
    example), its standard error, active units and the test examples used. A run evaluated without
    importance sampling shows NaN for log p(x), never a zero."""
    rows = {}
    for label, run in runs.items():
        result, config = results[label], run.config
        k = int(result.get("iw_samples", 0) or 0)
        rows[label] = {
            "latent dim": config.latent_dim,
            "architecture": describe_architecture(config),
            "training": describe_training(config),
            "parameters": count_parameters(run.model),
            "epochs": run.epochs_done,
            "train time (s)": float(run.history["seconds"].sum()),
            "train ELBO (nats)": float(run.history["train_elbo"].iloc[-1]) if len(run.history) else math.nan,
            "test ELBO (nats)": result["elbo"],
            f"log p(x), IS k={k} (nats)" if k else "log p(x) (nats)": result.get("log_likelihood", math.nan),
            "± s.e.": result.get("log_likelihood_sem", math.nan),
            "active units": result["active_units"],
            "test examples": result["n_examples"],
        }
    return pd.DataFrame.from_dict(rows, orient="index")


# --- the literature's test NLLs on dynamically binarized MNIST ------------------------------------------
# All: one stochastic layer of 50 units, two deterministic layers of 200 tanh units in encoder and decoder,
# 3,280 epochs, log p(x) by importance sampling with k=5000 on the 10,000 test images.
MNIST_NLL_LITERATURE: tuple[dict[str, Any], ...] = (
    {"model": "VAE (Burda et al. 2015, Table 1, k=1)", "objective": "ELBO (k=1)", "NLL (nats)": 86.76,
     "source": "Burda, Grosse & Salakhutdinov 2015, Table 1"},
    {"model": "VAE (nbip/IWAE, TensorFlow 2 reproduction)", "objective": "ELBO (k=1)", "NLL (nats)": 86.35,
     "source": "github.com/nbip/IWAE, README"},
    {"model": "IWAE (Burda et al. 2015, Table 1, k=50)", "objective": "IWAE bound, k=50", "NLL (nats)": 84.78,
     "source": "Burda, Grosse & Salakhutdinov 2015, Table 1"},
)
_LITERATURE_COMMON = {"architecture": "MLP 784-200-200-50, tanh", "epochs": 3280,
                      "estimator": "IS, k=5000", "test images": 10_000}


def nll_comparison_table(study: Study, literature: Sequence[Mapping[str, Any]] = MNIST_NLL_LITERATURE,
                         profile: str | None = None) -> pd.DataFrame:
    """The literature's test NLLs above ours, one row per model, smallest NLL = best.

    Columns: model, objective, architecture, epochs, NLL (nats) = -log p(x) averaged over the test images,
    the estimator (importance sampling and its k), the number of test images, active units (ours only) and
    the source (ours: "this book, <profile> profile").
    """
    rows = [{**_LITERATURE_COMMON, **row, "active units": math.nan} for row in literature]
    for label, run in study.runs.items():
        result, config = study.results[label], run.config
        k = int(result.get("iw_samples", 0) or 0)
        log_px = result.get("log_likelihood", math.nan)
        rows.append({
            "model": f"{label} (ours)",
            "objective": (f"IWAE bound, k={config.n_samples}" if config.estimator == "iwae"
                          else f"ELBO (L={config.n_samples})"),
            "architecture": describe_architecture(config),
            "epochs": run.epochs_done,
            "NLL (nats)": -log_px if k else -result["elbo"],
            "estimator": f"IS, k={k}" if k else "-ELBO (upper bound on the NLL)",
            "test images": result["n_examples"],
            "active units": result["active_units"],
            "source": f"this book, {profile} profile" if profile else "this book",
        })
    columns = ["model", "objective", "architecture", "epochs", "NLL (nats)", "estimator", "test images",
               "active units", "source"]
    frame = pd.DataFrame(rows, columns=columns).set_index("model")
    return frame.astype({"epochs": "Int64", "test images": "Int64", "active units": "Int64"})


# --- the results page ----------------------------------------------------------------------------------
def results_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Every recorded headline number (the output of `vaelib.results.load_all`) as one display table.

    Indexed by (chapter, quantity); columns: ours, anchor value, difference (ours - anchor, in the row's
    unit; NaN where there is no anchor), unit, estimator, anchor, note. An empty input gives an empty table
    with those columns.
    """
    columns = ["ours", "anchor value", "ours - anchor", "unit", "estimator", "anchor", "note"]
    if frame.empty:
        index = pd.MultiIndex.from_arrays([[], []], names=["chapter", "quantity"])
        return pd.DataFrame(columns=columns, index=index)
    missing = [c for c in ("chapter", "key", "value", "unit", "estimator") if c not in frame]
    if missing:
        raise ValueError(f"frame lacks column(s) {', '.join(missing)}; pass vaelib.results.load_all()")
    out = pd.DataFrame({
        "chapter": frame["chapter"],
        "quantity": frame["key"],
        "ours": pd.to_numeric(frame["value"], errors="coerce"),
        "anchor value": pd.to_numeric(frame.get("anchor_value"), errors="coerce"),
        "unit": frame["unit"],
        "estimator": frame["estimator"],
        "anchor": frame.get("anchor", pd.Series([None] * len(frame))).fillna(""),
        "note": frame.get("note", pd.Series([""] * len(frame))).fillna(""),
    })
    out["ours - anchor"] = out["ours"] - out["anchor value"]
    # A stable order: chapters by name (their numbers), quantities in the order each chapter recorded them.
    out = out.sort_values("chapter", kind="stable").set_index(["chapter", "quantity"])
    return out[columns]


def _format_number(value: float, unit: str, decimals: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    # Counts (active units, epochs) print as integers; nats and bits keep their decimals even when round.
    if float(value).is_integer() and not unit.startswith(("nats", "bits")):
        return f"{int(value):,}"
    return f"{value:,.{decimals}f}"


def format_results(table: pd.DataFrame, decimals: int = 2) -> pd.DataFrame:
    """`results_summary`'s table with its numbers as text for display: `decimals` digits (counts as
    integers), a sign on the difference, and empty cells, not "nan", where a number is missing."""
    out = table.copy()
    for column in ("ours", "anchor value", "ours - anchor"):
        out[column] = [_format_number(v, u, decimals) for v, u in zip(table[column], table["unit"], strict=True)]
    out["ours - anchor"] = [f"+{s}" if s and not s.startswith("-") and s.strip("0.,") else s
                            for s in out["ours - anchor"]]
    return out


def results_tables(table: pd.DataFrame, decimals: int = 2) -> dict[str, pd.DataFrame]:
    """`results_summary`'s table cut into one narrow display table per chapter, in chapter order.

    Each is indexed by quantity, with the columns ours (number and unit), anchor (its number and unit, then
    what it is), ours - anchor, estimator and note: five columns of text instead of seven, so a row fits on a
    page without scrolling sideways.
    """
    def with_unit(value: str, unit: str) -> str:
        return f"{value} {unit}" if value else ""

    def anchor(value: str, unit: str, name: str) -> str:
        return " ".join(part for part in (with_unit(value, unit), f"({name})" if name else "") if part)

    shown = format_results(table, decimals)
    tables = {}
    for chapter, rows in shown.groupby(level="chapter", sort=False):
        units = rows["unit"]
        tables[str(chapter)] = pd.DataFrame({
            "ours": [with_unit(v, u) for v, u in zip(rows["ours"], units, strict=True)],
            "anchor": [anchor(v, u, n) for v, u, n in zip(rows["anchor value"], units, rows["anchor"], strict=True)],
            "ours - anchor": rows["ours - anchor"].to_list(),
            "estimator": rows["estimator"].to_list(),
            "note": rows["note"].to_list(),
        }, index=pd.Index(rows.index.get_level_values("quantity"), name="quantity"))
    return tables


def missing_chapters(frame: pd.DataFrame, profile: str, exclude: Sequence[str] = ("10_results",)) -> list[str]:
    """Chapters that `profile` lists and notebooks/ holds but that recorded no number in `frame` (the output
    of `load_all`), leaving out `exclude` (the results page itself). An unknown profile gives an empty list."""
    from .report import NOTEBOOKS_DIR, ProfileError, load_profile

    try:
        listed = list(load_profile(profile).notebooks)
    except ProfileError:
        return []
    present = set(frame["chapter"]) if "chapter" in frame else set()
    return [stem for stem in listed if stem not in present and stem not in exclude
            and (NOTEBOOKS_DIR / f"{stem}.ipynb").exists()]


MEASURED_DIR = Path(__file__).resolve().parents[1] / "book" / "measured" / "paper-h100"


@dataclass
class MeasuredRuns:
    """Runs trained elsewhere (a GPU) whose config, history and evaluation were committed as files.

    table: one row per run (nats per example); histories: label -> the run's per-epoch history.
    """

    table: pd.DataFrame
    histories: dict[str, pd.DataFrame]


def load_measured_runs(directory: str | os.PathLike = MEASURED_DIR) -> MeasuredRuns:
    """Read `<directory>/<run>/{config.json,history.csv,evaluate.json}` (as `python -m vaelib train` and
    `evaluate` wrote them) into a table: test ELBO (estimator B, L=1), NLL = -log p(x) by importance
    sampling, its standard error, the test images it used, active units and training time."""
    root = Path(directory)
    runs = sorted(p for p in root.iterdir() if (p / "evaluate.json").exists()) if root.is_dir() else []
    if not runs:
        raise FileNotFoundError(f"no measured runs under {root} (each needs config.json, history.csv and "
                                "evaluate.json)")
    rows, histories = [], {}
    for path in runs:
        config = RunConfig.from_dict(json.loads((path / "config.json").read_text()))
        result = json.loads((path / "evaluate.json").read_text())
        history = pd.read_csv(path / "history.csv")
        histories[path.name] = history
        rows.append({
            "run": path.name,
            "model": f"{describe_architecture(config)}; {describe_training(config)}",
            "objective": f"IWAE, k={config.n_samples}" if config.estimator == "iwae" else "ELBO",
            "epochs": config.epochs,
            "test ELBO (nats)": result["elbo"],
            "test NLL (nats)": -result["log_likelihood"],
            "± s.e.": result["log_likelihood_sem"],
            "IS samples k": result["iw_samples"],
            "test images": result["n_examples"],
            "active units": f"{result['active_units']} of {config.latent_dim}",
            "training (s)": float(history["seconds"].sum()),
        })
    return MeasuredRuns(pd.DataFrame(rows).set_index("run"), histories)
