"""Training methods: one update per method, each with the same contract, and the gradient step they share.

`update(model, optimizer, x, config, beta)` takes one minibatch x (B, D), changes the parameters and returns
the four batch SUMS the history records, (objective, elbo, log_px_z, kl) in nats, as a tensor. `UPDATES`
maps `RunConfig.method` to its update: AEVB (the paper's), wake-sleep and Monte Carlo EM (its baselines).
`update_for(model, config)` is the one place that picks the update a run trains with: the hand-written
AEVB step of `fast_mlp` where it covers the model and config, else the plain `UPDATES[config.method]`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..config import RunConfig
from ..models import VAE
from .aevb import aevb_update
from .fast_mlp import FastMLPAEVB, fast_supported
from .mcem import mcem_update
from .step import NonFiniteLossError, gradient_step
from .wake_sleep import WakeSleepTerms, wake_sleep_terms, wake_sleep_update

Update = Callable[[VAE, torch.optim.Optimizer, torch.Tensor, RunConfig, float], torch.Tensor]

UPDATES: dict[str, Update] = {"aevb": aevb_update, "wake-sleep": wake_sleep_update, "mcem": mcem_update}



def update_for(model: VAE, config: RunConfig) -> Update:
    """The update `model` trains with under `config`: `FastMLPAEVB` (the same AEVB step without autograd,
    equal to the plain one within float32 rounding) for the paper's MLP on the CPU with estimator B, L = 1
    and a Bernoulli decoder; the plain `UPDATES[config.method]` for everything else."""
    if fast_supported(model, config):
        return FastMLPAEVB(model, config)
    return UPDATES[config.method]


__all__ = ["UPDATES", "FastMLPAEVB", "fast_supported", "update_for",
           "NonFiniteLossError", "Update", "WakeSleepTerms", "aevb_update", "gradient_step",
           "mcem_update", "wake_sleep_terms", "wake_sleep_update"]
