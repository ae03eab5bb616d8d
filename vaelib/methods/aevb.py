"""AEVB (Kingma & Welling 2013, Algorithm 1): one step of stochastic gradient ascent on the SGVB estimate of
the ELBO, for encoder and decoder together. This is the readable reference the book prints in chapter 2."""

from __future__ import annotations

import torch

from ..config import RunConfig
from ..models import VAE
from ..objectives import elbo
from .step import gradient_step


def aevb_update(model: VAE, optimizer: torch.optim.Optimizer, x: torch.Tensor, config: RunConfig,
                beta: float) -> torch.Tensor:
    """One AEVB step: maximize the SGVB estimate of the (beta-weighted) ELBO averaged over the batch."""
    terms = elbo(model, x, config.estimator, config.n_samples, beta)
    gradient_step(optimizer, -terms.objective.mean())
    return torch.stack([terms.objective.sum(), terms.elbo.sum(), terms.log_px_z.sum(), terms.kl.sum()]).detach()
