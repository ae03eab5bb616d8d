"""Every estimator of the marginal likelihood log p(x) in vaelib, in nats per example.

- `log_likelihood`: importance sampling with the encoder q(z|x) as the proposal, k samples (Burda et al.
  2015); in expectation a lower bound that rises with k. The book's default.
- `log_marginal_likelihood_hmc_is`: importance sampling with a Gaussian fitted to HMC samples of p(z|x); for
  a model without a trained encoder (Monte Carlo EM), and as a check on the encoder's proposal.
- `log_marginal_likelihood_paper`: the paper's App. D estimator (a harmonic mean of q/p over HMC samples).
- `log_marginal_likelihood_prior_is`: importance sampling from the prior, a reference for tiny models.

`log_px_estimator(method)` is the one place that decides which estimator a training method's model gets:
Monte Carlo EM never trains its encoder, so its proposal comes from HMC.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from tqdm.auto import tqdm

from .config import check_int
from .hmc import _dtype, log_joint_fn, posterior_samples
from .models import VAE
from .objectives import iwae_bound, std_normal_log_prob

ENCODER_IS = "encoder-is"  # the estimator name of `log_likelihood` in ESTIMATORS


def log_px_estimator(method: str) -> str:
    """The estimator of log p(x) for a model trained by `method`: the encoder's importance sampling, except
    for Monte Carlo EM, which trains no encoder and gets the HMC-fitted proposal."""
    return "hmc-is" if method == "mcem" else ENCODER_IS


def describe_log_px_estimator(estimator: str, k: int) -> str:
    """The estimator in words, as tables and recorded numbers name it."""
    return {ENCODER_IS: f"importance sampling from q(z|x), k={k}",
            "hmc-is": f"importance sampling, Gaussian fitted to HMC samples, k={k}",
            "paper": "the paper's App. D estimator (harmonic mean over HMC samples)",
            "prior-is": f"importance sampling from the prior, k={k}"}[estimator]


@torch.no_grad()
def log_likelihood(model: torch.nn.Module, batches: Iterable[torch.Tensor], k: int = 5000,
                   chunk_size: int | None = None, progress: bool = True, total: int | None = None) -> torch.Tensor:
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


def _fit_gaussian(z: torch.Tensor, scale: float = 1.0) -> torch.distributions.MultivariateNormal:
    """A full-covariance Gaussian per datapoint fitted to samples z (S, B, Z); `scale` multiplies its std."""
    s, _, z_dim = z.shape
    loc = z.mean(0)
    centered = z - loc
    cov = torch.einsum("sbi,sbj->bij", centered, centered) / (s - 1)
    # A little ridge keeps the Cholesky factor finite when the samples are (nearly) degenerate.
    ridge = 1e-6 * cov.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-6)
    cov = cov + ridge[:, None, None] * torch.eye(z_dim, device=z.device, dtype=z.dtype)
    return torch.distributions.MultivariateNormal(loc, scale_tril=scale * torch.linalg.cholesky(cov))


@torch.no_grad()
def log_marginal_likelihood_prior_is(model: VAE, x: torch.Tensor, k: int = 5000,
                                     chunk_size: int = 500) -> torch.Tensor:
    """log p(x) by importance sampling from the prior: log (1/k) sum_i p(x|z_i), z_i ~ N(0, I). (B,) nats.

    Needs no encoder and no MCMC; a lower bound in expectation, accurate only when the posterior is not
    much narrower than the prior (few latent dimensions, small models). A reference for the others.
    """
    check_int("k", k, 1)
    target = log_joint_fn(model, x)
    total = torch.full((x.shape[0],), -math.inf, device=x.device, dtype=_dtype(model))
    done = 0
    while done < k:
        n = min(chunk_size, k - done)
        z = torch.randn(n, x.shape[0], model.latent_dim, device=x.device, dtype=_dtype(model))
        total = torch.logaddexp(total, torch.logsumexp(target(z) - std_normal_log_prob(z), 0))
        done += n
    return total - math.log(k)


@torch.no_grad()
def log_marginal_likelihood_hmc_is(model: VAE, x: torch.Tensor, k: int = 1000, n_posterior_samples: int = 100,
                                   n_chains: int = 2, proposal_scale: float = 1.2, chunk_size: int = 500,
                                   **hmc_kwargs) -> torch.Tensor:
    """log p(x) by importance sampling with a Gaussian fitted to HMC posterior samples: (B,) nats.

    1. draw `n_posterior_samples` z ~ p(z|x) by HMC (`posterior_samples`, which takes `hmc_kwargs`);
    2. fit a full-covariance Gaussian q(z) to them, its std widened by `proposal_scale` so its tails
       cover the posterior's (importance weights stay bounded where q is wider than p(z|x));
    3. log (1/k) sum_i p(x, z_i) / q(z_i) with k fresh z_i ~ q.
    Consistent, and a lower bound on log p(x) in expectation (Jensen); the variance-safe counterpart of
    the paper's harmonic-mean estimator (`log_marginal_likelihood_paper`).
    """
    check_int("k", k, 1)
    check_int("n_posterior_samples", n_posterior_samples, model.latent_dim + 2)
    samples = posterior_samples(model, x, n_posterior_samples, n_chains, **hmc_kwargs).z
    q = _fit_gaussian(samples, proposal_scale)
    target = log_joint_fn(model, x)
    total = torch.full((x.shape[0],), -math.inf, device=x.device, dtype=samples.dtype)
    done = 0
    while done < k:
        n = min(chunk_size, k - done)
        z = q.sample((n,))
        total = torch.logaddexp(total, torch.logsumexp(target(z) - q.log_prob(z), 0))
        done += n
    return total - math.log(k)


@torch.no_grad()
def log_marginal_likelihood_paper(model: VAE, x: torch.Tensor, n_posterior_samples: int = 200,
                                  n_chains: int = 4, chunk_size: int = 500, **hmc_kwargs) -> torch.Tensor:
    """The paper's marginal-likelihood estimator (App. D): (B,) nats.

    1. draw L z ~ p(z|x) by HMC and fit a density q(z) to them (here a full-covariance Gaussian);
    2. draw L new z ~ p(z|x) and estimate 1/p(x) ~= (1/L) sum_l q(z_l) / (p(z_l) p(x|z_l)).
    Both sets come from one run of `posterior_samples` with 2L = `n_posterior_samples` draws: with
    n_chains >= 2 the first half of the chains fits q and the other half evaluates it, so the two sets are
    independent. This is a harmonic-mean-type estimator: unbiased for 1/p(x), so log p(x) is an upper
    bound in expectation, and its variance is finite only where q has lighter tails than the posterior.
    """
    check_int("n_posterior_samples", n_posterior_samples, 2 * (model.latent_dim + 2))
    samples = posterior_samples(model, x, n_posterior_samples, n_chains, **hmc_kwargs).z
    half = n_posterior_samples // 2
    q = _fit_gaussian(samples[:half])
    z = samples[half:]
    target = log_joint_fn(model, x)
    log_ratio = torch.cat([q.log_prob(c) - target(c) for c in z.split(chunk_size)])  # (L, B)
    return -(torch.logsumexp(log_ratio, 0) - math.log(z.shape[0]))


ESTIMATORS = {
    "hmc-is": log_marginal_likelihood_hmc_is,
    "paper": log_marginal_likelihood_paper,
    "prior-is": log_marginal_likelihood_prior_is,
}


def marginal_log_likelihood(model: VAE, batches: Iterable[torch.Tensor], estimator: str = "hmc-is",
                            progress: bool = True, total: int | None = None, **kwargs) -> torch.Tensor:
    """log p(x) for every example of `batches` with one of ESTIMATORS ("hmc-is", "paper", "prior-is"),
    keyword arguments passed on: (N,) nats. For the encoder's importance sampling use `log_likelihood`."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r} is not allowed; choose one of: {', '.join(ESTIMATORS)}")
    was_training = model.training
    model.eval()
    out = []
    bar = tqdm(total=total, disable=not progress, desc=f"log p(x), {estimator}", unit="ex", mininterval=1.0)
    for x in batches:
        out.append(ESTIMATORS[estimator](model, x, **kwargs))
        bar.update(x.shape[0])
    bar.close()
    model.train(was_training)
    return torch.cat(out)
