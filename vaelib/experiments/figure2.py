"""Figure 2 of the paper: the ELBO per datapoint (train and test) against the number of training samples
evaluated, AEVB against wake-sleep with the same recognition model, one panel per latent dimension Nz, on
MNIST and Frey Face.

`figure2_configs` turns a samples budget into runs, `run_figure2` trains them (through the run cache) and
returns one long table, `figure2_summary` and `figure2_findings` read it; `vaelib.figures.plot_figure2`
draws the panels. Units: nats per datapoint; "samples seen" counts training datapoints processed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import DATASET_LABELS, METHOD_LABELS, METHODS, ConfigError, RunConfig, check_ints
from ..data import FREYFACE_TEST_SIZE, Dataset, train_set_size
from ..evaluate import ACTIVE_UNIT_THRESHOLD, EVAL_SEED, kl_per_dimension, seeded, unit_activity
from ..executors import Executor, train_many
from ..runs import Run
from .settings import (
    FIG2_LATENT_DIMS,
    PAPER_INIT_STD,
    PAPER_SAMPLES,
    check_methods,
    checkpoint_interval,
    epochs_for_samples,
    paper_weight_decay,
    per_method,
)

FIG2_COLUMNS = ["dataset", "method", "latent_dim", "epoch", "samples_seen", "split", "elbo"]


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
    check_ints("latent_dims", latent_dims)
    check_methods(methods)
    n_train = train_set_size(dataset, train_size)
    epochs = epochs_for_samples(samples_budget, n_train)
    configs = []
    for latent_dim in latent_dims:
        for method in methods:
            configs.append(RunConfig(
                dataset=dataset, method=method, latent_dim=latent_dim, hidden_dim=hidden_dim, epochs=epochs,
                batch_size=batch_size, optimizer="adagrad", lr=per_method(lr, method, "lr"),
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

def budget_table(configs: Sequence[RunConfig]) -> pd.DataFrame:
    """One row per data set, method and training-set size: its latent sizes, epochs, training samples and
    Adagrad step size, in words (the short form of `describe_configs`, for a page)."""
    table = describe_configs(configs)
    rows = []
    for (dataset, method, n), part in table.groupby(["dataset", "method", "train_size"], sort=False):
        rows.append({"data set": DATASET_LABELS.get(dataset, dataset), "method": METHOD_LABELS.get(method, method),
                     "training points": f"{n:,}", "latent sizes Nz": ", ".join(str(z) for z in part["latent_dim"]),
                     "epochs": ", ".join(f"{e:,}" for e in sorted(set(part["epochs"]))),
                     "samples per run": ", ".join(f"{s:,.0f}" for s in sorted(set(part["samples"]))),
                     "step size": ", ".join(f"{lr:g}" for lr in sorted(set(part["lr"])))})
    return pd.DataFrame(rows).set_index(["data set", "method", "training points"])


def budget_sentence(configs: Sequence[RunConfig], paper_samples: float = PAPER_SAMPLES) -> str:
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
                data_dir: str | os.PathLike | None = None, progress: bool = True,
                executor: Executor | str | None = None) -> pd.DataFrame:
    """Train (or load) every run and return the long table: dataset, method, latent_dim, epoch,
    samples_seen, split ("train"/"test"), elbo (nats per datapoint, SGVB estimator B, L = 1). The runs are
    independent: `vaelib.executors.train_many` trains them through `executor` (default $VAELIB_EXECUTOR)."""
    frames = [history_to_long(run.config, run.history)
              for run in train_many(configs, runs_dir, data_dir, executor=executor, progress=progress)]
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
            grows = largest["aevb_gap"] > smallest["aevb_gap"] + tolerance
            gap = ("grows with Nz, so the larger latent space fits the training set more closely"
                   if grows else "does not grow with Nz")
            sentences.append(
                f"{name}: with the largest Nz={int(largest['latent_dim'])}, AEVB's final test ELBO is "
                f"{largest['aevb_test']:.1f} nats, {verdict}. AEVB's train - test gap {gap}: "
                f"{smallest['aevb_gap']:.1f} nats at Nz={int(smallest['latent_dim'])}, "
                f"{largest['aevb_gap']:.1f} at Nz={int(largest['latent_dim'])}.")
    return sentences


def records(df: pd.DataFrame) -> Iterable[dict[str, Any]]:
    """Headline numbers for `vaelib.results.record`: each data set and method's best final test ELBO over Nz."""
    finals = _final(df, "test").reset_index()
    for (dataset, method), part in finals.groupby(["dataset", "method"]):
        best = part.loc[part["elbo"].idxmax()]
        samples = df[(df["dataset"] == dataset) & (df["method"] == method)]["samples_seen"].max()
        held_out = f"{FREYFACE_TEST_SIZE} held-out frames" if dataset == "freyface" else "test set"
        yield {"key": f"{dataset}_{method}_test_elbo_best_nz", "value": float(best["elbo"]), "unit": "nats",
               "estimator": f"ELBO, SGVB estimator B, L=1, {held_out}",
               "note": f"best over Nz (Nz={int(best['latent_dim'])}) after {samples:,.0f} training samples"}


def pixelwise_gaussian(dataset: Dataset) -> dict[str, float]:
    """The best model that ignores z: a Gaussian per pixel, its mean and variance fitted by maximum likelihood
    to the training frames, scored on [0, 1] like the Frey Face decoder (nats per frame, mean over frames;
    a density, so positive). A VAE's ELBO that sits at its test value has a decoder that does not use z."""
    x_train, x_test = (torch.cat(list(dataset.split_batches(s, 1000))).double() for s in ("train", "test"))
    loc, var = x_train.mean(0), x_train.var(0, unbiased=False)

    def log_density(x: torch.Tensor) -> float:
        return float((-0.5 * ((x - loc) ** 2 / var + torch.log(2 * math.pi * var))).sum(1).mean())

    return {"train": log_density(x_train), "test": log_density(x_test)}


@torch.no_grad()
def uses_of_z(run: Run, dataset: Dataset, n_z: int = 500, seed: int = EVAL_SEED) -> dict[str, float]:
    """How much a trained model's decoder and encoder use the latent code, on the test split.

    decoder_spread: the standard deviation across z ~ p(z) of the decoder's mean image, averaged over pixels
    (units of the [0, 1] pixel scale); data_spread: the same across the test frames, for scale. kl: mean
    KL(q(z|x) || p(z)) in nats per frame, summed over dimensions; active_units: Burda et al.'s count
    (Cov_x E_q[z_j] > 0.01). A decoder whose spread is a small fraction of the data's ignores z."""
    model = run.model.eval()
    with seeded(seed):
        z = torch.randn(n_z, model.latent_dim)
    means = model.decode_mean(z.to(next(model.parameters()).device)).double().cpu()
    x_test = torch.cat(list(dataset.split_batches("test", 1000))).double()
    kl = kl_per_dimension(model, dataset)
    activity = unit_activity(model, dataset)
    return {"decoder_spread": float(means.std(0).mean()), "data_spread": float(x_test.std(0).mean()),
            "kl": float(np.sum(kl)), "active_units": int((activity > ACTIVE_UNIT_THRESHOLD).sum()),
            "latent_dim": model.latent_dim}


def z_usage_table(runs: Sequence[Run], dataset: Dataset) -> pd.DataFrame:
    """`uses_of_z` of every run beside its final test ELBO (nats per datapoint), one row per run, and the
    pixelwise Gaussian's test score on the same frames as the row "no z (pixelwise Gaussian)"."""
    rows = []
    for run in runs:
        test = run.history["test_elbo"].dropna()
        rows.append({"method": METHOD_LABELS.get(run.config.method, run.config.method), "Nz": run.config.latent_dim,
                     "test ELBO": float(test.iloc[-1]), **uses_of_z(run, dataset)})
    rows.append({"method": "no z (pixelwise Gaussian)", "Nz": 0, "test ELBO": pixelwise_gaussian(dataset)["test"],
                 "decoder_spread": 0.0, "kl": 0.0, "active_units": 0})
    table = pd.DataFrame(rows).drop(columns=["latent_dim", "data_spread"], errors="ignore")
    return table.rename(columns={"decoder_spread": "decoder spread over z", "kl": "KL (nats)",
                                 "active_units": "active units"})


def z_usage_findings(table: pd.DataFrame, data_spread: float, tolerance: float = 2.0) -> list[str]:
    """Sentences on a `z_usage_table`: which runs score within `tolerance` nats of the pixelwise Gaussian
    with a decoder spread under a tenth of the data's (`data_spread`): those decoders ignore z."""
    baseline = float(table.loc[table["method"] == "no z (pixelwise Gaussian)", "test ELBO"].iloc[0])
    models = table[table["method"] != "no z (pixelwise Gaussian)"]
    ignoring = models[((models["test ELBO"] - baseline).abs() <= tolerance)
                      & (models["decoder spread over z"] < data_spread / 10)]
    sentences = [f"The best model that ignores z, a Gaussian per pixel fitted to the training frames, scores "
                 f"{baseline:.1f} nats per test frame."]
    for method, part in models.groupby("method", sort=False):
        hit = ignoring[ignoring["method"] == method]
        if len(hit) == len(part):
            ends = ", ".join(f"Nz={nz}: {elbo:.1f}" for nz, elbo in zip(part["Nz"], part["test ELBO"], strict=True))
            spread = part["decoder spread over z"].max()
            sentences.append(
                f"{method}: every run ends within {tolerance:.0f} nats of it ({ends}) with KL(q || p) of at most "
                f"{part['KL (nats)'].max():.2f} nats and a decoder whose mean image varies across z by at most "
                f"{spread:.4f} (the frames vary by {data_spread:.3f}): its decoder ignores z.")
        elif len(hit):
            sentences.append(f"{method}: the runs with Nz in {hit['Nz'].tolist()} ignore z in the same way; "
                             f"the others use it.")
        else:
            sentences.append(f"{method}: every run uses z: KL(q || p) of {part['KL (nats)'].min():.1f} to "
                             f"{part['KL (nats)'].max():.1f} nats, {part['test ELBO'].min() - baseline:+.1f} to "
                             f"{part['test ELBO'].max() - baseline:+.1f} nats against the pixelwise Gaussian.")
    return sentences
