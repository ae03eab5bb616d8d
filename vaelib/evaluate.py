"""The one home of evaluation: test-set ELBO, log p(x), bits/dim, unit statistics, and their cache.

- `seeded` and `EVAL_SEED`: every evaluation draws its noise (the ELBO's eps, the importance samples) from
  one fixed stream, inside a block that leaves the caller's random state untouched, so a re-evaluation gives
  the same number and evaluating mid-training does not change the training run.
- `evaluate_elbo`: the ELBO and its two terms over batches (estimator B, L samples), nats per example.
- `evaluate(run)`: the headline figures of a run on a split; `evaluate_cached(run)` the same, stored as
  `eval-*.json` in the run directory and keyed by everything that computed it (vaelib.runs).
- Unit statistics: posterior means, the KL per latent dimension, the activity Cov_x(E_q[z_j]) and the
  active-unit count (Burda et al. 2015: activity above 0.01).

Units: nats per example (sums over pixels and latent dimensions, means over examples) everywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import config as _config
from .data import Dataset
from .estimators import describe_log_px_estimator, log_likelihood, log_px_estimator, marginal_log_likelihood
from .io import write_json_atomic
from .objectives import elbo, kl_divergence
from .runs import Run

EVAL_SEED = 1234  # the one stream of evaluation noise: the same eps and importance samples every call
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2015, Sec. 5.2: a unit is active if Cov_x(E_q[u]) > 0.01
EVAL_BATCH = 1000  # examples per batch for the ELBO and the unit statistics


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Draw from torch's stream for `seed` inside the block, then put back the CPU stream and, on a CUDA
    `device`, its stream as they were, so evaluating leaves a training run's random numbers untouched."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def evaluate_elbo(model: torch.nn.Module, batches: Iterable[torch.Tensor], n_samples: int = 1,
                  seed: int = EVAL_SEED) -> dict[str, float]:
    """Mean ELBO, reconstruction term and KL over `batches` (estimator B, L = n_samples), nats per example."""
    was_training = model.training
    model.eval()
    device = _device(model)
    sums, count = torch.zeros(3, device=device), 0
    with seeded(seed, device):  # the same eps every call, and the training RNG stream left untouched
        for x in batches:
            terms = elbo(model, x, "B", n_samples)
            sums += torch.stack([terms.elbo.sum(), terms.log_px_z.sum(), terms.kl.sum()])
            count += x.shape[0]
    model.train(was_training)
    elbo_, log_px_z, kl = (sums / count).tolist()
    return {"elbo": elbo_, "log_px_z": log_px_z, "kl": kl}


# --- unit statistics -------------------------------------------------------------------------------------
def split_data(dataset: Dataset, split: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first `n` examples of `split` ("train": binarized with a fixed seed; None: all) as one float
    tensor (N, D), and their labels (None for unlabelled data)."""
    xs, count = [], 0
    for x in dataset.split_batches(split, EVAL_BATCH):
        xs.append(x)
        count += len(x)
        if n is not None and count >= n:
            break
    x = torch.cat(xs)[:n]
    y = dataset.y_test if split == "test" else dataset.y_train
    return x, None if y is None else y[:len(x)].cpu()


@torch.no_grad()
def posterior_means(model: torch.nn.Module, batches: Iterable[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """E_q[z|x] for every example: (N, Z), on the CPU. `batches`: an iterable of (B, D), or one (N, D)."""
    if isinstance(batches, torch.Tensor):
        batches = batches.split(EVAL_BATCH)
    device = _device(model)
    return torch.cat([model.posterior(x.to(device))[0].cpu() for x in batches])


@torch.no_grad()
def kl_per_dimension(model: torch.nn.Module, dataset: Dataset, n: int | None = None,
                     split: str = "test") -> np.ndarray:
    """Mean over the first `n` examples of `split` of KL(q(z_j|x) || N(0, 1)) for each latent dimension j:
    (Z,) nats, unsorted."""
    model.eval()
    x, _ = split_data(dataset, split, n)
    device = _device(model)
    total = torch.zeros(model.latent_dim)
    for chunk in x.split(EVAL_BATCH):
        loc, log_var = model.posterior(chunk.to(device))
        total += kl_divergence(loc, log_var).sum(0).cpu()
    return (total / len(x)).numpy()


def unit_activity(model: torch.nn.Module, dataset: Dataset, n: int | None = None, split: str = "test") -> np.ndarray:
    """A_u = Cov_x(E_q[u|x]) for each latent unit u: the variance over the first `n` examples of `split`
    (None: all) of the posterior mean, shape (Z,), unsorted, in squared latent units (Burda et al. 2015)."""
    model.eval()
    x, _ = split_data(dataset, split, n)
    return posterior_means(model, x).var(0).numpy()


def active_units(posterior_means: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Number of latent dimensions whose posterior mean varies across data: Cov_x(E_q[u]) > threshold
    (Burda et al. 2015, Sec. 5.2). `posterior_means` is (N, Z), the encoder means over a data set."""
    return int((posterior_means.var(0) > threshold).sum())


# --- headline figures ----------------------------------------------------------------------------------
def evaluate(run: Run, dataset: Dataset | None = None, iw_samples: int = 5000, split: str = "test",
             batch_size: int = 100, progress: bool = True, max_examples: int | None = None) -> dict[str, Any]:
    """Headline figures of `run` on a split, in nats per example (mean over examples).

    Returns a dict with `elbo` (estimator B, analytic KL, L = 1), `log_likelihood` (k = `iw_samples`, by the
    estimator `estimators.log_px_estimator` picks for the run's method) and its standard error
    `log_likelihood_sem`, `bits_per_dim` (the likelihood's rule, of the log-likelihood if computed, else of
    the ELBO), `iw_samples`, `split`, `n_examples`, `active_units`, `kl`, `log_px_z`, the estimators in
    words, `seconds` and `note` (which examples were used). `iw_samples=0` skips log p(x). The noise is
    whatever torch's stream holds: `evaluate_cached` fixes it.
    """
    _config.check_int("iw_samples", iw_samples, 0)
    if max_examples is not None:
        _config.check_int("max_examples", max_examples, 1)
    data = dataset if dataset is not None else run.load_data()
    if max_examples is not None:
        full = (data.x_test if split == "test" else data.x_train).shape[0]
        note = data.test_note if max_examples >= full else f"{split} figures over the first {max_examples:,} examples"
        data = Dataset(data.name, data.x_train[:max_examples], None, data.x_test[:max_examples], None,
                       data.image_shape, note)
    model, method = run.model, run.config.method
    n = (data.x_test if split == "test" else data.x_train).shape[0]
    started = time.perf_counter()
    terms = evaluate_elbo(model, data.split_batches(split, EVAL_BATCH))
    means = posterior_means(model, data.split_batches(split, EVAL_BATCH))
    estimator = log_px_estimator(method)
    result = {"split": split, "n_examples": n, "elbo": terms["elbo"], "log_px_z": terms["log_px_z"],
              "kl": terms["kl"], "elbo_estimator": "SGVB estimator B (analytic KL), L=1",
              "active_units": active_units(means), "latent_dim": run.config.latent_dim,
              "log_likelihood": math.nan,
              "log_likelihood_estimator": describe_log_px_estimator(estimator, iw_samples)}
    if method == "mcem":
        # MCEM never trains the encoder: no ELBO and no unit statistics of its untouched q(z|x).
        result.update(elbo=math.nan, log_px_z=math.nan, kl=math.nan, active_units=math.nan, elbo_estimator="")
    if iw_samples:
        batches = data.split_batches(split, batch_size)
        if estimator == "hmc-is":
            log_px = marginal_log_likelihood(model, batches, "hmc-is", progress, n, k=iw_samples)
        else:
            log_px = log_likelihood(model, batches, iw_samples, progress=progress, total=n)
        result["log_likelihood"] = float(log_px.mean())
        result["log_likelihood_sem"] = float(log_px.std() / math.sqrt(len(log_px)))
    reference = result["log_likelihood"] if iw_samples else result["elbo"]
    result["bits_per_dim"] = model.likelihood.bits_per_dim(reference, data.num_dims)
    result["nats_kind"] = model.likelihood.nats_kind(data.binarized)
    if not model.likelihood.is_likelihood:
        result["note_loss"] = f"{run.config.likelihood} is a loss, not a likelihood: these are not nats"
    result["iw_samples"] = iw_samples
    result["seconds"] = time.perf_counter() - started
    result["note"] = data.test_note
    return result


def cached(directory: str | Path, key: dict[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`compute()`, stored as `directory/eval-<digest>.json` and read back whenever the same `key` asks again.

    The key (what was evaluated, how, on which examples, after how many epochs) is hashed with
    `config.CODE_VERSION` and the seed stream, and stored in the file beside the result; a file whose key
    differs (made by other code) is recomputed, never returned. This is vaelib's one cache of evaluations.
    """
    full_key = {**key, "code_version": _config.CODE_VERSION, "eval_seed": EVAL_SEED}
    text = json.dumps(full_key, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    label = "-".join(str(key[k]) for k in ("split", "estimator") if k in key)
    path = Path(directory) / f"eval-{label + '-' if label else ''}{digest}.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if json.dumps(stored.get("key"), sort_keys=True, default=str) == text:
            return stored["result"]
    result = compute()
    write_json_atomic(path, {"key": full_key, "result": result})
    return json.loads(json.dumps(result, default=float))  # the same values a later call reads back


def evaluate_cached(run: Run, dataset: Dataset, iw_samples: int = 1000, max_examples: int | None = None,
                    split: str = "test", progress: bool = True) -> dict[str, Any]:
    """`evaluate` on the one evaluation stream (`EVAL_SEED`), cached in the run's directory (`cached`).

    The key holds the split, k (`iw_samples`), the number of examples evaluated and the epochs trained, so
    a longer run or another subset is evaluated afresh. Values in nats per example.
    """
    full = (dataset.x_test if split == "test" else dataset.x_train).shape[0]
    n = full if max_examples is None else min(max_examples, full)
    key = {"what": "evaluate", "split": split, "iw_samples": iw_samples, "n_examples": n,
           "epochs": run.epochs_done}

    def compute() -> dict[str, Any]:
        with seeded(EVAL_SEED, _device(run.model)):
            return evaluate(run, dataset, iw_samples=iw_samples, split=split, progress=progress,
                            max_examples=None if n == full else n)

    return cached(run.path, key, compute)
