"""Training methods: one update per method, each with the same contract, and the gradient step they share.

`update(model, optimizer, x, config, beta)` takes one minibatch x (B, D), changes the parameters and returns
the four batch SUMS the history records, (objective, elbo, log_px_z, kl) in nats, as a tensor. `UPDATES`
maps `RunConfig.method` to its update: AEVB (the paper's), wake-sleep and Monte Carlo EM (its baselines).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..config import RunConfig
from ..models import VAE
from .aevb import aevb_update
from .mcem import mcem_update
from .step import NonFiniteLossError, gradient_step
from .wake_sleep import WakeSleepTerms, wake_sleep_terms, wake_sleep_update

Update = Callable[[VAE, torch.optim.Optimizer, torch.Tensor, RunConfig, float], torch.Tensor]

UPDATES: dict[str, Update] = {"aevb": aevb_update, "wake-sleep": wake_sleep_update, "mcem": mcem_update}

__all__ = ["UPDATES", "NonFiniteLossError", "Update", "WakeSleepTerms", "aevb_update", "gradient_step",
           "mcem_update", "wake_sleep_terms", "wake_sleep_update"]
