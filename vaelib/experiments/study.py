"""Train a set of configs, evaluate them once, and put the figures side by side with the literature's.

The chapters that compare several models (the latent-dimension study, Frey Face at several latent sizes,
the test-NLL chapter) call these functions instead of looping over runs themselves. Every number is in nats
per example (a sum over pixels, a mean over test examples), as everywhere in vaelib; an NLL is -log p(x),
so it is positive for binary data and smaller is better. Evaluations go through the one evaluation cache
(`vaelib.evaluate.evaluate_cached`), so a rebuild that reuses a run also reuses its k=5000 estimate.

`load_measured_runs` reads runs trained elsewhere (a GPU) and committed as files under book/measured/.
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

from .. import literature, paths
from ..config import RunConfig, check_int
from ..data import Dataset, image_shape, load_dataset
from ..evaluate import evaluate_cached
from ..executors import train_many
from ..runs import Run, read_config


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
    check_int("iw_samples", iw_samples, 0)
    if max_examples is not None:
        check_int("max_examples", max_examples, 1)
    runs: dict[str, Run] = {}
    results: dict[str, dict[str, Any]] = {}
    datasets: dict[str, Dataset] = {}
    loaded: dict[tuple, Dataset] = {}
    trained = train_many(list(configs.values()), runs_dir, data_dir, progress=progress)  # $VAELIB_EXECUTOR
    for (label, config), run in zip(configs.items(), trained, strict=True):
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


# The literature's test NLLs on dynamically binarized MNIST that chapter 9's table shows (vaelib.literature).
MNIST_NLL_REFERENCES = ("burda2015_vae", "nbip_vae", "burda2015_iwae_k50", "kingma2016_resnet_vae")


def _objective_of(ref: literature.Reference) -> str:
    return "IWAE bound, k=50" if "k=50" in ref.model else "ELBO (k=1)"


def nll_comparison_table(study: Study, references: Sequence[str] = MNIST_NLL_REFERENCES,
                         profile: str | None = None) -> pd.DataFrame:
    """The literature's test NLLs above ours, one row per model, smallest NLL = best.

    Columns: model, objective, architecture, epochs, NLL (nats) = -log p(x) averaged over the test images,
    the estimator (importance sampling and its k), the number of test images, active units (ours only) and
    the source (ours: "this book, <profile> profile").
    """
    rows = []
    for key in references:
        ref = literature.get(key)
        rows.append({"model": ref.model, "objective": _objective_of(ref), "architecture": ref.architecture,
                     "epochs": ref.epochs, "NLL (nats)": ref.value, "estimator": ref.estimator,
                     "test images": ref.test_images,
                     "active units": math.nan if ref.active_units is None else ref.active_units,
                     "source": ref.source})
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


MEASURED_DIR = paths.PACKAGE_DIR.parent / "book" / "measured" / "paper-h100"

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
        config, _ = read_config(path)
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
