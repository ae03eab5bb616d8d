"""The paper's baselines (Kingma & Welling 2013, Sec. 5): the wake-sleep algorithm and Monte Carlo EM, and
the HMC-based estimators of the marginal likelihood log p(x) used for Fig. 3 (App. D).

Both training methods plug into `vaelib.train.fit` through `BASELINE_UPDATES`, with the same contract as
`train.aevb_update`: `update(model, optimizer, x, config, beta)` takes one minibatch x (B, D), changes the
parameters and returns four batch SUMS (objective, elbo, log_px_z, kl) in nats, so
`RunConfig(method="wake-sleep")` or `method="mcem"` gets the usual history, checkpoints and resume.

Wake-sleep (Hinton, Dayan, Frey & Neal 1995) trains the same recognition model as AEVB, q(z|x), but with
two separate objectives: the wake phase fits the generative model p(x|z)p(z) to z ~ q(z|x), the sleep
phase fits q(z|x) to "dreams" (z, x) ~ p(z)p(x|z). Neither maximizes the ELBO; the ELBO columns of its
history measure how good its model and recognition model are on the AEVB scale.

Monte Carlo EM uses no recognition model: the E-step draws z ~ p(z|x) by HMC, the M-step takes 5 gradient
steps on log p(x, z) at that sample (the paper's settings: 10 leapfrog steps, step size tuned to 90%
acceptance, 5 weight updates). Its history's ELBO columns are NaN: there is no trained q(z|x) to define an
ELBO; its training curve is `train_objective`, the mean log p(x, z) at the HMC samples, and its
log-likelihood comes from the estimators below.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from .config import ConfigError, RunConfig
from .hmc import adapt_step_size, hmc_sample
from .models import VAE
from .objectives import kl_divergence, normal_log_prob, rsample, std_normal_log_prob
from .train import gradient_step


def log_joint_fn(model: VAE, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """z -> log p(x, z) = log p(x|z) + log N(z; 0, I) in nats, for z (..., B, Z) and the batch x (B, D)."""
    return lambda z: model.log_prob_x_given_z(x, model.decode(z)) + std_normal_log_prob(z)


# --- wake-sleep --------------------------------------------------------------------------------------------
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


# --- posterior sampling by HMC ------------------------------------------------------------------------------
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


def _initial_chains(model: VAE, x: torch.Tensor, init: str, n_proposals: int) -> torch.Tensor:
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
    z = _initial_chains(model, x_rep, init, n_proposals)
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


# --- Monte Carlo EM ------------------------------------------------------------------------------------------
MCEM_DEFAULTS: dict[str, object] = {
    "hmc_leapfrog": 10,  # leapfrog steps per HMC transition (the paper's 10)
    "hmc_transitions": 5,  # HMC transitions per minibatch before the M-step (the paper does not say)
    "mcem_updates": 5,  # weight updates per HMC sample (the paper's 5)
    "hmc_init": "sir",  # how each minibatch's chains start: "sir" (prior_resample) or "prior"
    "sir_proposals": 30,  # prior draws per chain start; 30 + 5 transitions get within ~2 nats of p(z|x)
    "hmc_step_size": 0.05,  # the first step size; then tuned to 90% acceptance
}


def mcem_settings(config: RunConfig) -> dict[str, object]:
    """MCEM's knobs: MCEM_DEFAULTS overridden by `config.extra` (same keys); ConfigError for bad values."""
    settings = {k: config.extra.get(k, v) for k, v in MCEM_DEFAULTS.items()}
    for key in ("hmc_leapfrog", "hmc_transitions", "mcem_updates", "sir_proposals"):
        value = settings[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"extra[{key!r}]={value!r} is not allowed; it must be an integer >= 1")
    if settings["hmc_init"] not in ("sir", "prior"):
        raise ConfigError(f"extra['hmc_init']={settings['hmc_init']!r} is not allowed; choose 'sir' or 'prior'")
    step = settings["hmc_step_size"]
    if not isinstance(step, int | float) or isinstance(step, bool) or not step > 0:
        raise ConfigError(f"extra['hmc_step_size']={step!r} is not allowed; it must be a number > 0")
    return settings


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
    settings = mcem_settings(config)
    group = optimizer.param_groups[0]
    step = group.setdefault("hmc_step_size", float(settings["hmc_step_size"]))
    target = log_joint_fn(model, x)
    z = _initial_chains(model, x, settings["hmc_init"], settings["sir_proposals"])
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


BASELINE_UPDATES = {"wake-sleep": wake_sleep_update, "mcem": mcem_update}


# --- marginal likelihood -------------------------------------------------------------------------------------
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


def _check_count(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is not allowed; it must be an integer >= {minimum}")


@torch.no_grad()
def log_marginal_likelihood_prior_is(model: VAE, x: torch.Tensor, k: int = 5000,
                                     chunk_size: int = 500) -> torch.Tensor:
    """log p(x) by importance sampling from the prior: log (1/k) sum_i p(x|z_i), z_i ~ N(0, I). (B,) nats.

    Needs no encoder and no MCMC; a lower bound in expectation, accurate only when the posterior is not
    much narrower than the prior (few latent dimensions, small models). A reference for the others.
    """
    _check_count("k", k, 1)
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
    _check_count("k", k, 1)
    _check_count("n_posterior_samples", n_posterior_samples, model.latent_dim + 2)
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
    _check_count("n_posterior_samples", n_posterior_samples, 2 * (model.latent_dim + 2))
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
    keyword arguments passed on: (N,) nats."""
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
