"""Monte Carlo EM (the paper's Fig. 3 baseline): no recognition model; the E-step draws z ~ p(z|x) by HMC,
the M-step takes gradient steps on log p(x, z) at that sample (the paper's settings: 10 leapfrog steps, step
size tuned to 90% acceptance, 5 weight updates). Its settings are `RunConfig.mcem_settings()`, checked when
the config is made. Its history's ELBO columns are NaN: there is no trained q(z|x) to define an ELBO; its
training curve is `train_objective`, the mean log p(x, z) at the HMC samples, and its log-likelihood comes
from `vaelib.estimators` (see `estimators.log_px_estimator`).
"""

from __future__ import annotations

import math

import torch

from ..config import RunConfig
from ..hmc import adapt_step_size, hmc_sample, initial_chains, log_joint_fn
from ..models import VAE
from .step import gradient_step


def mcem_update(model: VAE, optimizer: torch.optim.Optimizer, x: torch.Tensor, config: RunConfig,
                beta: float) -> torch.Tensor:
    """One Monte Carlo EM step on the batch x (B, D).

    E-step: a fresh HMC chain per datapoint, started by `prior_resample` (or from N(0, I)), run for
    `hmc_transitions` transitions of `hmc_leapfrog` leapfrog steps. M-step: `mcem_updates` optimizer steps
    on the mean log p(x, z) at that one sample, as in the paper ("5 weight update steps using the acquired
    sample"). Only the decoder gets gradients; the encoder is never used or changed.

    Why fresh chains: the paper does not say how its chains start. Kingma's own code kept one persistent
    chain per training example, but an update here sees only the batch, not which examples it holds, so
    each minibatch starts afresh near the posterior and runs a few transitions. The step size (one for
    all chains) is tuned between minibatches towards 90% mean acceptance and lives in the optimizer's
    first param group ("hmc_step_size"), so the run's checkpoint carries it and a resumed run continues
    with it; within a minibatch it is fixed, so every E-step is a valid HMC kernel.

    Returns the batch sums (log p(x, z) at the HMC sample before the M-step, NaN, NaN, NaN): MCEM has no
    recognition model, so the ELBO columns are undefined. `beta` is unused.
    """
    settings = config.mcem_settings()
    group = optimizer.param_groups[0]
    step = group.setdefault("hmc_step_size", float(settings["hmc_step_size"]))
    target = log_joint_fn(model, x)
    z = initial_chains(model, x, settings["hmc_init"], settings["sir_proposals"])
    accepts = []
    for _ in range(settings["hmc_transitions"]):
        z, accept = hmc_sample(target, z, step, settings["hmc_leapfrog"])
        accepts.append(accept.mean())
    accept_rate = torch.stack(accepts).mean()
    group["hmc_step_size"] = adapt_step_size(step, accept_rate)
    group["hmc_accept_rate"] = float(accept_rate)  # for monitoring only

    first = None
    for _ in range(settings["mcem_updates"]):
        log_joint = target(z)
        gradient_step(optimizer, -log_joint.mean())
        first = log_joint.detach() if first is None else first
    nan = torch.tensor(math.nan, device=x.device)
    return torch.stack([first.sum(), nan, nan, nan])
