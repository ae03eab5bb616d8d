"""Hamiltonian Monte Carlo over a batch of independent chains (Neal 2011, "MCMC using Hamiltonian dynamics").

The paper's Monte Carlo EM baseline and its marginal-likelihood estimator (App. D) both draw z from the
posterior p(z|x) with HMC: 10 leapfrog steps per transition, the step size tuned so that about 90% of
proposals are accepted. Here every row of `z` is its own chain with its own target (one datapoint each), so
a batch of B datapoints is B chains run in lock-step, each with its own Metropolis accept/reject.

Shapes: z is (B, Z); `log_prob_fn(z)` returns the B chains' unnormalized log densities, (B,), in nats.
`step_size` is a float shared by every chain, or a (B, 1) tensor with one step size per chain.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

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
