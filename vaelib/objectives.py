"""The SGVB estimators of the ELBO (Kingma & Welling 2013, eqs. 6 and 7), the importance-weighted bound
(Burda et al. 2015) and unit conversions.

Conventions, everywhere in vaelib: every per-example quantity is in nats and is a *sum* over pixels and
latent dimensions; a batch figure is the *mean* over the batch. So an ELBO of -100 means -100 nats per
example whatever the batch size, and the gradient of `loss = -objective.mean()` is the paper's
(N/M) * gradient up to the constant N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOG_2PI = math.log(2 * math.pi)


def kl_divergence(loc: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(loc, diag exp(log_var)) || N(0, I)) per latent dimension, in nats: shape (B, Z)."""
    return 0.5 * (torch.exp(log_var) + loc.pow(2) - 1.0 - log_var)


def normal_log_prob(z: torch.Tensor, loc: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(z; loc, diag exp(log_var)) summed over the last dimension: (..., B)."""
    return -0.5 * (LOG_2PI + log_var + (z - loc).pow(2) * torch.exp(-log_var)).sum(-1)


def std_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension: (..., B)."""
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


def rsample(loc: torch.Tensor, log_var: torch.Tensor, n_samples: int = 1,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Reparameterized draws z = loc + sigma * eps, eps ~ N(0, I): shape (n_samples, B, Z)."""
    eps = torch.randn((n_samples, *loc.shape), generator=generator, device=loc.device, dtype=loc.dtype)
    return loc + torch.exp(0.5 * log_var) * eps


@dataclass
class ElboTerms:
    """Per-example terms, each (B,) in nats.

    objective: what training maximizes (the ELBO with beta on the KL, or the IWAE bound);
    elbo: the plain ELBO estimate, log_px_z - kl; log_px_z: the reconstruction term E_q[log p(x|z)];
    kl: KL(q(z|x) || p(z)), analytic (estimator B) or its Monte Carlo estimate (estimator A).
    """

    objective: torch.Tensor
    elbo: torch.Tensor
    log_px_z: torch.Tensor
    kl: torch.Tensor


def elbo(model: torch.nn.Module, x: torch.Tensor, estimator: str = "B", n_samples: int = 1,
         beta: float = 1.0) -> ElboTerms:
    """SGVB estimate of the ELBO for a batch x (B, D), with L = `n_samples` draws per datapoint.

    estimator "A" (eq. 6): mean over draws of log p(x|z) + log p(z) - log q(z|x).
    estimator "B" (eq. 7): mean over draws of log p(x|z), minus the analytic KL.
    estimator "iwae": objective = log (1/k) sum_k p(x, z_k) / q(z_k|x) with k = `n_samples`.
    `beta` multiplies the KL (A, B only): beta = 1 is the ELBO, beta != 1 the beta-VAE objective.
    """
    loc, log_var = model.posterior(x)
    z = rsample(loc, log_var, n_samples)
    log_px_z_draws = model.log_prob_x_given_z(x, model.decode(z))  # (L, B)
    log_px_z = log_px_z_draws.mean(0)
    if estimator == "B":
        kl = kl_divergence(loc, log_var).sum(-1)
        return ElboTerms(log_px_z - beta * kl, log_px_z - kl, log_px_z, kl)
    kl_draws = normal_log_prob(z, loc, log_var) - std_normal_log_prob(z)  # (L, B)
    kl = kl_draws.mean(0)
    if estimator == "A":
        return ElboTerms(log_px_z - beta * kl, log_px_z - kl, log_px_z, kl)
    if estimator == "iwae":
        log_w = log_px_z_draws - kl_draws
        bound = torch.logsumexp(log_w, 0) - math.log(n_samples)
        return ElboTerms(bound, log_px_z - kl, log_px_z, kl)
    raise ValueError(f"estimator={estimator!r} is not allowed; choose one of: A, B, iwae")


@torch.no_grad()
def iwae_bound(model: torch.nn.Module, x: torch.Tensor, k: int, chunk_size: int = 1000) -> torch.Tensor:
    """Importance-weighted estimate of log p(x) with k samples from q(z|x): (B,) nats.

    log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x). Its expectation is a lower bound on log p(x) that rises
    with k (Burda et al. 2015, Theorem 1), and it converges to log p(x) as k grows. The k samples are
    drawn `chunk_size` at a time and combined with a running logsumexp, so k = 5000 fits in memory.
    """
    loc, log_var = model.posterior(x)
    total = torch.full((x.shape[0],), -math.inf, device=x.device, dtype=loc.dtype)
    done = 0
    while done < k:
        n = min(chunk_size, k - done)
        z = rsample(loc, log_var, n)
        log_w = (model.log_prob_x_given_z(x, model.decode(z)) + std_normal_log_prob(z)
                 - normal_log_prob(z, loc, log_var))
        total = torch.logaddexp(total, torch.logsumexp(log_w, 0))
        done += n
    return total - math.log(k)


def bits_per_dim(log_prob_nats: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
    """Negative log-likelihood per dimension in bits: -log p(x) / (D ln 2).

    Exact for a discrete model of 8-bit data. For a density on [0, 1]^D (the Gaussian decoders), use
    `continuous_bits_per_dim`, which first moves the density to the 256-level scale.
    """
    return -log_prob_nats / (num_dims * math.log(2.0))


def continuous_bits_per_dim(log_density_nats: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
    """Bits per dimension of a density on [0, 1]^D, read on the usual [0, 256)^D scale:
    -(log p(x) - D log 256) / (D ln 2). An upper bound on a discrete model's bits/dim only if the model was
    trained on uniformly dequantized data."""
    return -(log_density_nats - num_dims * math.log(256.0)) / (num_dims * math.log(2.0))


def active_units(posterior_means: torch.Tensor, threshold: float = 0.01) -> int:
    """Number of latent dimensions whose posterior mean varies across data: Cov_x(E_q[u]) > threshold
    (Burda et al. 2015, Sec. 5.2). `posterior_means` is (N, Z), the encoder means over a data set."""
    return int((posterior_means.var(0) > threshold).sum())
