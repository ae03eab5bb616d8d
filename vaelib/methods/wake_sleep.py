"""The wake-sleep algorithm (Hinton, Dayan, Frey & Neal 1995), the paper's Fig. 2 baseline.

It trains the same recognition model as AEVB, q(z|x), but with two separate objectives: the wake phase fits
the generative model p(x|z)p(z) to z ~ q(z|x), the sleep phase fits q(z|x) to "dreams" (z, x) ~ p(z)p(x|z).
Neither maximizes the ELBO; the ELBO columns of its history measure how good its model and recognition
model are on the AEVB scale.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..config import RunConfig
from ..models import VAE
from ..objectives import kl_divergence, normal_log_prob, rsample, std_normal_log_prob
from .step import gradient_step


class WakeSleepTerms(NamedTuple):
    """Per-example terms, each (B,) in nats.

    wake: mean over the L draws z ~ q(z|x) of log p(x, z), with z held fixed (gradient to the generative
    model only). sleep: log q(z|x) at B dreams (z, x) ~ p(z)p(x|z) (gradient to the recognition model only).
    elbo, log_px_z, kl: the current model's ELBO on x (estimator B, analytic KL) from the same draws,
    without gradient.
    """

    wake: torch.Tensor
    sleep: torch.Tensor
    elbo: torch.Tensor
    log_px_z: torch.Tensor
    kl: torch.Tensor


def wake_sleep_terms(model: VAE, x: torch.Tensor, n_samples: int = 1) -> WakeSleepTerms:
    """The wake and sleep objectives for a batch x (B, D); see WakeSleepTerms.

    The two objectives reach disjoint parameters: the wake phase samples z from the encoder under
    no_grad, so log p(x, z) only depends on decoder (and likelihood) parameters; the sleep phase draws the
    dream under no_grad, so log q(z|x) only depends on encoder parameters. Summing them and taking one
    optimizer step is therefore the same as two separate updates.
    """
    with torch.no_grad():
        loc, log_var = model.posterior(x)
        z = rsample(loc, log_var, n_samples)  # (L, B, Z)
    log_px_z = model.log_prob_x_given_z(x, model.decode(z))  # (L, B), gradient to the decoder
    wake = (log_px_z + std_normal_log_prob(z)).mean(0)

    with torch.no_grad():
        z_dream = torch.randn_like(loc)
        # A diverged decoder must reach the NaN guard in the update, not crash the sampler.
        x_dream = model.likelihood.sample(torch.nan_to_num(model.decode(z_dream)))
    sleep = normal_log_prob(z_dream, *model.posterior(x_dream))  # gradient to the encoder

    log_px_z = log_px_z.detach().mean(0)
    kl = kl_divergence(loc, log_var).sum(-1)
    return WakeSleepTerms(wake, sleep, log_px_z - kl, log_px_z, kl)


def wake_sleep_update(model: VAE, optimizer: torch.optim.Optimizer, x: torch.Tensor, config: RunConfig,
                      beta: float) -> torch.Tensor:
    """One wake-sleep step on the batch x: maximize mean wake + mean sleep objective in one optimizer step.

    Returns the batch sums (wake log p(x, z), ELBO, E_q log p(x|z), KL), nats; the ELBO terms are those of
    the model before the step, as in `train.aevb_update`. `beta` is unused (wake-sleep has no KL weight).
    """
    terms = wake_sleep_terms(model, x, config.n_samples)
    gradient_step(optimizer, -(terms.wake.mean() + terms.sleep.mean()))
    return torch.stack([terms.wake.sum(), terms.elbo.sum(), terms.log_px_z.sum(), terms.kl.sum()]).detach()
