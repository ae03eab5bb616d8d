"""Test-set figures of a trained run: ELBO, importance-sampled log-likelihood, bits/dim, active units."""

from __future__ import annotations

import math
import time

import torch
from tqdm.auto import tqdm

from .data import Dataset
from .objectives import active_units, bits_per_dim, continuous_bits_per_dim, iwae_bound
from .train import Run, evaluate_elbo


@torch.no_grad()
def log_likelihood(model: torch.nn.Module, batches, k: int = 5000, chunk_size: int | None = None,
                   progress: bool = True, total: int | None = None) -> torch.Tensor:
    """Importance-sampled log p(x) with k samples from q(z|x) for every example: (N,) nats.

    Each value is the k-sample importance-weighted bound; it is a consistent estimate of log p(x) and
    in expectation a lower bound on it, so the mean over a test set is a conservative figure.
    """
    model.eval()
    out = []
    # TF32 convolutions (PyTorch's default on CUDA) would round inputs to 10-bit mantissas: fine for
    # training, not for a log-likelihood reported to 0.01 nats.
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    bar = tqdm(total=total, disable=not progress, desc=f"log p(x), k={k}", unit="ex", mininterval=1.0)
    for x in batches:
        # GPU: about 4x10^4 decoded rows per chunk, below the 65,536-row batches where cuDNN falls back to
        # kernels measured 9x slower. CPU: a chunk whose decoder output (~2 MB) stays in cache, since every
        # elementwise pass over a larger one goes to memory (1.7x slower at 10^5 rows, bench/README.md).
        rows = 40_000 if x.device.type != "cpu" else max(256, 2**19 // x[0].numel())
        chunk = chunk_size or max(1, min(k, rows // x.shape[0]))
        out.append(iwae_bound(model, x, k, chunk))
        bar.update(x.shape[0])
    bar.close()
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    return torch.cat(out)


@torch.no_grad()
def posterior_means(model: torch.nn.Module, batches) -> torch.Tensor:
    """E_q[z|x] for every example: (N, Z)."""
    return torch.cat([model.posterior(x)[0] for x in batches])


def evaluate(run: Run, dataset: Dataset | None = None, iw_samples: int = 5000, split: str = "test",
             batch_size: int = 100, progress: bool = True, max_examples: int | None = None) -> dict:
    """Headline figures of `run` on a split, in nats per example (mean over examples).

    Returns a dict with `elbo` (estimator B, analytic KL, L = 1), `log_likelihood` (importance sampling,
    k = `iw_samples`), `bits_per_dim`, `iw_samples`, `split`, `n_examples`, `active_units`, `kl`,
    `log_px_z`, `seconds` and `note` (which test images were used). `iw_samples=0` skips log p(x).
    """
    if iw_samples < 0:
        raise ValueError(f"iw_samples={iw_samples} is not allowed; use 0 (ELBO only) or a positive count")
    data = dataset if dataset is not None else run.load_data()
    if max_examples is not None:
        full = (data.x_test if split == "test" else data.x_train).shape[0]
        note = data.test_note if max_examples >= full else f"{split} figures over the first {max_examples:,} examples"
        data = Dataset(data.name, data.x_train[:max_examples], None, data.x_test[:max_examples], None,
                       data.image_shape, note)
    model = run.model
    n = (data.x_test if split == "test" else data.x_train).shape[0]
    started = time.perf_counter()
    terms = evaluate_elbo(model, data.split_batches(split, 1000))
    means = posterior_means(model, data.split_batches(split, 1000))
    result = {"split": split, "n_examples": n, "elbo": terms["elbo"], "log_px_z": terms["log_px_z"],
              "kl": terms["kl"], "elbo_estimator": "SGVB estimator B (analytic KL), L=1",
              "active_units": active_units(means), "latent_dim": run.config.latent_dim}
    result["log_likelihood"] = math.nan
    result["log_likelihood_estimator"] = f"importance sampling from q(z|x), k={iw_samples}"
    if run.config.method == "mcem":
        # MCEM never trains the encoder: no ELBO, and the proposal for log p(x) comes from HMC instead.
        from .baselines import marginal_log_likelihood  # noqa: PLC0415

        result.update(elbo=math.nan, log_px_z=math.nan, kl=math.nan, active_units=math.nan, elbo_estimator="")
        result["log_likelihood_estimator"] = f"importance sampling, Gaussian fitted to HMC samples, k={iw_samples}"
    if iw_samples:
        batches = data.split_batches(split, batch_size)
        if run.config.method == "mcem":
            log_px = marginal_log_likelihood(model, batches, "hmc-is", progress, n, k=iw_samples)
        else:
            log_px = log_likelihood(model, batches, iw_samples, progress=progress, total=n)
        result["log_likelihood"] = float(log_px.mean())
        result["log_likelihood_sem"] = float(log_px.std() / math.sqrt(len(log_px)))
    reference = result["log_likelihood"] if iw_samples else result["elbo"]
    d = data.num_dims
    binary = data.name == "binarized-mnist"
    if model.likelihood.discrete or binary:  # a mass over 256 levels, or over the two levels of a bit
        result["bits_per_dim"] = float(bits_per_dim(reference, d))
    elif model.likelihood.is_likelihood and run.config.likelihood != "bernoulli":
        result["bits_per_dim"] = float(continuous_bits_per_dim(reference, d))
    else:
        # A Bernoulli "likelihood" of grey levels, or a loss: neither is a normalized density of this data.
        result["bits_per_dim"] = math.nan
    if not model.likelihood.is_likelihood:
        result["note_loss"] = f"{run.config.likelihood} is a loss, not a likelihood: these are not nats"
    result["iw_samples"] = iw_samples
    result["seconds"] = time.perf_counter() - started
    result["note"] = data.test_note
    return result
