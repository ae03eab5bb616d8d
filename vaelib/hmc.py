"""Hamiltonian Monte Carlo over a batch of independent chains (Neal 2011, "MCMC using Hamiltonian dynamics").

The paper's Monte Carlo EM baseline and its marginal-likelihood estimator (App. D) both draw z from the
posterior p(z|x) with HMC: 10 leapfrog steps per transition, the step size tuned so that about 90% of
proposals are accepted. Here every row of `z` is its own chain with its own target (one datapoint each), so
a batch of B datapoints is B chains run in lock-step, each with its own Metropolis accept/reject.

Shapes: z is (B, Z); `log_prob_fn(z)` returns the B chains' unnormalized log densities, (B,), in nats.
`step_size` is a float shared by every chain, or a (B, 1) tensor with one step size per chain.

`posterior_samples(model, x)` runs such chains on a VAE's posterior p(z|x), for Monte Carlo EM's E-step and
for the HMC-based estimators of log p(x) in `vaelib.estimators`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from .models import VAE
from .objectives import std_normal_log_prob

LogProb = Callable[[torch.Tensor], torch.Tensor]
TARGET_ACCEPT = 0.9  # the paper's acceptance rate (Sec. 5, MCEM)


def log_prob_and_grad(log_prob_fn: LogProb, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log_prob_fn(z) (B,) and its gradient with respect to z (B, Z), both detached.

    Only z's gradient is asked for, so no parameter's `.grad` is touched: HMC can run in the middle of a
    training step without disturbing the optimizer.
    """
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        log_prob = log_prob_fn(z)
        (grad,) = torch.autograd.grad(log_prob.sum(), z)
    return log_prob.detach(), grad


def hmc_sample(log_prob_fn: LogProb, z0: torch.Tensor, step_size: float | torch.Tensor,
               n_leapfrog: int = 10, jitter: float = 0.5, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One HMC transition for each of the B chains in z0 (B, Z), identity mass matrix.

    Draws momenta p ~ N(0, I), runs `n_leapfrog` leapfrog steps and accepts each chain's end point with
    probability min(1, exp(H_start - H_end)), H(z, p) = -log_prob(z) + |p|^2 / 2. A chain whose energy is
    NaN or infinite at the end (a diverging trajectory) is rejected. Each chain's step is `step_size` times
    a fresh uniform factor in [1 - jitter, 1 + jitter] (Neal 2011, Sec. 5.4.2.2): with one fixed trajectory
    length, a near-Gaussian posterior makes HMC nearly periodic, and chains return close to where they
    started; the random factor breaks that and leaves the target invariant (it ignores the state).
    Returns (z, accept_prob): the new states (B, Z) and each chain's acceptance probability (B,), the
    quantity step-size adaptation averages.
    """
    if n_leapfrog < 1:
        raise ValueError(f"n_leapfrog={n_leapfrog} is not allowed; use an integer >= 1")
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter={jitter} is not allowed; use a number in [0, 1)")
    z0 = z0.detach()
    u = torch.rand((z0.shape[0], 1), generator=generator, device=z0.device, dtype=z0.dtype)
    eps = step_size * (1.0 + jitter * (2.0 * u - 1.0))  # (B, 1)
    log_prob0, grad = log_prob_and_grad(log_prob_fn, z0)
    p0 = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
    z, p = z0, p0 + 0.5 * eps * grad
    for i in range(n_leapfrog):
        z = z + eps * p
        log_prob, grad = log_prob_and_grad(log_prob_fn, z)
        p = p + (eps if i < n_leapfrog - 1 else 0.5 * eps) * grad  # the last momentum step is a half step
    h0 = -log_prob0 + 0.5 * p0.pow(2).sum(-1)
    h1 = -log_prob + 0.5 * p.pow(2).sum(-1)
    log_accept = torch.nan_to_num(h0 - h1, nan=-math.inf, posinf=-math.inf).clamp(max=0.0)
    accept_prob = log_accept.exp()
    u = torch.rand(accept_prob.shape, generator=generator, device=z0.device, dtype=z0.dtype)
    accepted = (u < accept_prob).unsqueeze(-1)
    return torch.where(accepted, z, z0), accept_prob


def adapt_step_size(step_size: float | torch.Tensor, accept_prob: torch.Tensor, target: float = TARGET_ACCEPT,
                    rate: float = 1.0) -> float | torch.Tensor:
    """Multiplicative Robbins-Monro step: log(step) += rate * (accept - target).

    Too many rejections shrink the step, too few grow it, and the fixed point is the step size whose
    mean acceptance probability is `target`. A float step size moves with the mean over all chains; a
    (B, 1) tensor moves each chain by its own acceptance probability.
    """
    if isinstance(step_size, torch.Tensor):
        return step_size * torch.exp(rate * (accept_prob.reshape(step_size.shape) - target))
    return step_size * math.exp(rate * (float(accept_prob.mean()) - target))


# --- the posterior of a VAE -------------------------------------------------------------------------------
def log_joint_fn(model: VAE, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """z -> log p(x, z) = log p(x|z) + log N(z; 0, I) in nats, for z (..., B, Z) and the batch x (B, D)."""
    return lambda z: model.log_prob_x_given_z(x, model.decode(z)) + std_normal_log_prob(z)


@torch.no_grad()
def prior_resample(model: VAE, x: torch.Tensor, n_proposals: int = 100,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """One z per datapoint by sampling-importance-resampling: draw `n_proposals` z ~ N(0, I) for each
    x, keep one with probability proportional to p(x|z). Shape (B, Z).

    A cheap start for HMC chains with few latent dimensions (Nz = 3 in Fig. 3): it lands near the
    posterior's mass, so the chains spend their transitions mixing rather than travelling.
    """
    b, z_dim, dtype = x.shape[0], model.latent_dim, _dtype(model)
    best_score = torch.full((b,), -math.inf, device=x.device, dtype=dtype)
    best_z = torch.zeros(b, z_dim, device=x.device, dtype=dtype)
    # Gumbel-max: argmax_k (log w_k + Gumbel noise) is a draw from softmax(log w), and it can be taken
    # chunk by chunk, so the K*B decoded images never sit in memory at once.
    chunk = max(1, 20_000_000 // (b * x.shape[1]))  # about 80 MB of decoded pixels per chunk
    for start in range(0, n_proposals, chunk):
        n = min(chunk, n_proposals - start)
        z = torch.randn(n, b, z_dim, generator=generator, device=x.device, dtype=dtype)
        u = torch.rand(n, b, generator=generator, device=x.device, dtype=dtype).clamp_min(1e-20)
        score = model.log_prob_x_given_z(x, model.decode(z)) - torch.log(-torch.log(u))  # (n, B)
        score, index = torch.nan_to_num(score, nan=-math.inf).max(0)
        better = score > best_score
        best_score = torch.where(better, score, best_score)
        best_z = torch.where(better.unsqueeze(-1), z[index, torch.arange(b, device=x.device)], best_z)
    return best_z


def _dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def initial_chains(model: VAE, x: torch.Tensor, init: str, n_proposals: int) -> torch.Tensor:
    if init == "prior":
        return torch.randn(x.shape[0], model.latent_dim, device=x.device, dtype=_dtype(model))
    if init == "sir":
        return prior_resample(model, x, n_proposals)
    raise ValueError(f"init={init!r} is not allowed; choose 'prior' or 'sir'")


class PosteriorSamples(NamedTuple):
    """z: (S, B, Z) draws from p(z|x), chain-major (the first S/C rows come from chain 1, and so on);
    accept_rate: mean acceptance probability after burn-in; step_size: each chain's frozen step (C*B,)."""

    z: torch.Tensor
    accept_rate: float
    step_size: torch.Tensor


def posterior_samples(model: VAE, x: torch.Tensor, n_samples: int = 100, n_chains: int = 2,
                      n_burnin: int = 50, n_leapfrog: int = 10, step_size: float = 0.1, init: str = "sir",
                      n_proposals: int = 100, thin: int = 1) -> PosteriorSamples:
    """`n_samples` draws of z ~ p(z|x) per datapoint of x (B, D) by HMC, from `n_chains` chains each.

    Every chain adapts its own step size towards 90% acceptance during `n_burnin` transitions, then
    freezes it at the geometric mean of the second half of burn-in (so sampling is a fixed, valid HMC
    kernel) and keeps every `thin`-th state.
    """
    if n_samples < 1 or n_chains < 1 or n_burnin < 0 or thin < 1:
        raise ValueError(f"n_samples={n_samples}, n_chains={n_chains}, n_burnin={n_burnin}, thin={thin}: "
                         "use n_samples, n_chains, thin >= 1 and n_burnin >= 0")
    b = x.shape[0]
    per_chain = math.ceil(n_samples / n_chains)
    x_rep = x.repeat(n_chains, 1)  # chain c of datapoint i is row c*B + i
    target = log_joint_fn(model, x_rep)
    z = initial_chains(model, x_rep, init, n_proposals)
    step = torch.full((z.shape[0], 1), float(step_size), device=x.device, dtype=z.dtype)
    log_step_sum, n_summed = torch.zeros_like(step), 0
    for t in range(n_burnin):
        z, accept = hmc_sample(target, z, step, n_leapfrog)
        step = adapt_step_size(step, accept)
        if t >= n_burnin // 2:
            log_step_sum += step.log()
            n_summed += 1
    if n_summed:
        step = torch.exp(log_step_sum / n_summed)
    draws, accepts = [], []
    for _ in range(per_chain):
        for _ in range(thin):
            z, accept = hmc_sample(target, z, step, n_leapfrog)
            accepts.append(accept.mean())
        draws.append(z.reshape(n_chains, b, -1))
    z_all = torch.stack(draws, 1).reshape(n_chains * per_chain, b, -1)[:n_samples]  # chain-major
    return PosteriorSamples(z_all, float(torch.stack(accepts).mean()), step.squeeze(-1))
