"""The theory chapters' demonstrations: reparameterized sampling, gradient-estimator variance, and the ELBO
and importance-weighted bounds on the exactly solvable linear-Gaussian model (`vaelib.toy`).

Reparameterization (Kingma & Welling 2013, Sec. 2.4) writes z ~ q_phi(z) as z = g_phi(eps) with eps drawn
from a fixed distribution, so that d/dphi E_q[f(z)] = E_eps[d/dphi f(g_phi(eps))]. The paper names three
families of g, each implemented below as a function that returns differentiable samples:

- inverse CDF: z = F^{-1}(u), u ~ U(0, 1)         (`exponential_icdf`, `cauchy_icdf`, `gumbel_icdf`)
- location-scale: z = loc + scale * eps            (`normal_location_scale`, `laplace_location_scale`)
- composition: z = a transformation of other draws (`gamma_sum_of_exponentials`, `chi2_sum_of_squares`,
                                                     `log_normal_exp`, `beta_from_gammas`)

Samples are float64 of shape (n,); parameters may be floats or tensors that require grad. Every per-example
quantity of the ELBO section is in nats, as everywhere in vaelib.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import stats
from torch import distributions as dist

from .objectives import elbo, iwae_bound
from .toy import LinearGaussian

DTYPE = torch.float64
_TINY = torch.finfo(DTYPE).tiny


def _param(value: float | torch.Tensor) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.tensor(float(value), dtype=DTYPE)


def _uniform(n: int, generator: torch.Generator | None) -> torch.Tensor:
    # torch.rand can return exactly 0; clamping keeps log and tan finite and moves a negligible mass (< 1e-15).
    return torch.rand(n, generator=generator, dtype=DTYPE).clamp(_TINY, 1.0 - 1e-16)


# --- (a) inverse CDF -------------------------------------------------------------------------------------
def exponential_icdf(n: int, rate: float | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Exponential(rate): z = -log(1 - u) / rate, u ~ U(0, 1). Shape (n,)."""
    return -torch.log1p(-_uniform(n, generator)) / _param(rate)


def cauchy_icdf(n: int, loc: float | torch.Tensor, scale: float | torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Cauchy(loc, scale): z = loc + scale * tan(pi (u - 1/2)), u ~ U(0, 1). Shape (n,)."""
    return _param(loc) + _param(scale) * torch.tan(math.pi * (_uniform(n, generator) - 0.5))


def gumbel_icdf(n: int, loc: float | torch.Tensor, scale: float | torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Gumbel(loc, scale): z = loc - scale * log(-log u), u ~ U(0, 1). Shape (n,)."""
    return _param(loc) - _param(scale) * torch.log(-torch.log(_uniform(n, generator)))


# --- (b) location-scale ----------------------------------------------------------------------------------
def normal_location_scale(n: int, loc: float | torch.Tensor, scale: float | torch.Tensor,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Normal(loc, scale): z = loc + scale * eps, eps ~ N(0, 1). Shape (n,)."""
    return _param(loc) + _param(scale) * torch.randn(n, generator=generator, dtype=DTYPE)


def laplace_location_scale(n: int, loc: float | torch.Tensor, scale: float | torch.Tensor,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Laplace(loc, scale): z = loc + scale * eps, eps ~ Laplace(0, 1) (itself the difference of two
    Exponential(1) draws). Shape (n,)."""
    eps = exponential_icdf(n, 1.0, generator) - exponential_icdf(n, 1.0, generator)
    return _param(loc) + _param(scale) * eps


# --- (c) composition -------------------------------------------------------------------------------------
def _positive_int(value: int, name: str) -> int:
    if not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{name}={value!r} must be a positive integer for this construction (it counts draws)")
    return value


def gamma_sum_of_exponentials(n: int, shape: int, rate: float | torch.Tensor,
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """Gamma(shape, rate) for integer shape k: the sum of k Exponential(rate) draws. Shape (n,)."""
    k = _positive_int(shape, "shape")
    return exponential_icdf(n * k, rate, generator).reshape(n, k).sum(-1)


def chi2_sum_of_squares(n: int, df: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Chi-squared(df) for integer df: the sum of df squared N(0, 1) draws. Shape (n,)."""
    k = _positive_int(df, "df")
    return torch.randn(n, k, generator=generator, dtype=DTYPE).pow(2).sum(-1)


def log_normal_exp(n: int, loc: float | torch.Tensor, scale: float | torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """LogNormal(loc, scale): z = exp(loc + scale * eps), eps ~ N(0, 1). Shape (n,)."""
    return torch.exp(normal_location_scale(n, loc, scale, generator))


def beta_from_gammas(n: int, a: int, b: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Beta(a, b) for integer a, b: z = g_a / (g_a + g_b) with g_a ~ Gamma(a, 1), g_b ~ Gamma(b, 1)
    independent (each a sum of exponentials). Shape (n,)."""
    g_a = gamma_sum_of_exponentials(n, a, 1.0, generator)
    g_b = gamma_sum_of_exponentials(n, b, 1.0, generator)
    return g_a / (g_a + g_b)


@dataclass(frozen=True)
class Reparameterization:
    """One worked example: `sampler(n, generator=..., **params)` must draw from `reference(**params)`.

    grad_param names the continuous parameter theta for the pathwise check d E[z] / d theta (None where
    there is none, e.g. integer shapes, or where E[z] does not exist).
    """

    name: str
    family: str
    construction: str
    sampler: Callable[..., torch.Tensor]
    reference: Callable[..., dist.Distribution]
    params: dict[str, float] = field(default_factory=dict)
    grad_param: str | None = None


REPARAMETERIZATIONS: tuple[Reparameterization, ...] = (
    Reparameterization("Exponential(rate=2)", "inverse CDF", "z = -log(1 - u) / rate", exponential_icdf,
                       lambda rate: dist.Exponential(rate), {"rate": 2.0}, "rate"),
    Reparameterization("Cauchy(0, 1)", "inverse CDF", "z = loc + scale tan(pi (u - 1/2))", cauchy_icdf,
                       lambda loc, scale: dist.Cauchy(loc, scale), {"loc": 0.0, "scale": 1.0}, None),
    Reparameterization("Gumbel(0.5, 2)", "inverse CDF", "z = loc - scale log(-log u)", gumbel_icdf,
                       lambda loc, scale: dist.Gumbel(loc, scale), {"loc": 0.5, "scale": 2.0}, "scale"),
    Reparameterization("Normal(1, 2)", "location-scale", "z = loc + scale eps, eps ~ N(0, 1)",
                       normal_location_scale, lambda loc, scale: dist.Normal(loc, scale),
                       {"loc": 1.0, "scale": 2.0}, "loc"),
    Reparameterization("Laplace(0, 1.5)", "location-scale", "z = loc + scale eps, eps ~ Laplace(0, 1)",
                       laplace_location_scale, lambda loc, scale: dist.Laplace(loc, scale),
                       {"loc": 0.0, "scale": 1.5}, "scale"),
    Reparameterization("Gamma(3, rate=2)", "composition", "z = sum of 3 Exponential(rate) draws",
                       gamma_sum_of_exponentials, lambda shape, rate: dist.Gamma(float(shape), rate),
                       {"shape": 3, "rate": 2.0}, "rate"),
    Reparameterization("Chi2(4)", "composition", "z = sum of 4 squared N(0, 1) draws", chi2_sum_of_squares,
                       lambda df: dist.Chi2(torch.tensor(float(df), dtype=DTYPE)), {"df": 4}, None),
    Reparameterization("LogNormal(0.25, 0.5)", "composition", "z = exp(loc + scale eps), eps ~ N(0, 1)",
                       log_normal_exp, lambda loc, scale: dist.LogNormal(loc, scale),
                       {"loc": 0.25, "scale": 0.5}, "scale"),
    Reparameterization("Beta(2, 3)", "composition", "z = g_a / (g_a + g_b), g ~ Gamma(., 1)", beta_from_gammas,
                       lambda a, b: dist.Beta(torch.tensor(float(a), dtype=DTYPE), torch.tensor(float(b), dtype=DTYPE)),
                       {"a": 2, "b": 3}, None),
)


def _tensor_params(rep: Reparameterization) -> dict[str, torch.Tensor | int]:
    """Float parameters as float64 tensors that require grad; integer ones (counts) stay ints."""
    return {k: v if isinstance(v, int) else torch.tensor(v, dtype=DTYPE, requires_grad=True)
            for k, v in rep.params.items()}


def _cdf(distribution: dist.Distribution) -> Callable[[np.ndarray], np.ndarray]:
    """The distribution's CDF as a numpy function; by numerical integration of the density where torch
    has no `cdf` (e.g. Beta) and the support is a bounded interval."""
    try:
        distribution.cdf(distribution.sample())
    except NotImplementedError:
        support = distribution.support
        low, high = getattr(support, "lower_bound", None), getattr(support, "upper_bound", None)
        if low is None or high is None:
            raise NotImplementedError(f"{type(distribution).__name__} has no cdf and an unbounded support; "
                                      "the KS check needs one or the other") from None
        low, high = float(low), float(high)
        grid = torch.linspace(low, high, 200_001, dtype=DTYPE)[1:-1]  # open interval: log-densities may be -inf
        with torch.no_grad():
            density = torch.exp(distribution.log_prob(grid)).nan_to_num(0.0).numpy()
        x = grid.numpy()
        cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(x))])
        cumulative /= cumulative[-1]
        return lambda values: np.interp(values, x, cumulative, left=0.0, right=1.0)

    def cdf(values: np.ndarray) -> np.ndarray:
        with torch.no_grad(), _unvalidated(distribution):
            return distribution.cdf(torch.as_tensor(values, dtype=DTYPE)).numpy()

    return cdf


@contextmanager
def _unvalidated(distribution: dist.Distribution) -> Iterator[None]:
    """Switch off argument validation of a distribution (and of its base, for transformed ones) for a block.

    A transformed distribution's cdf maps far-tail values to its base's support edge (e.g. a Gumbel's
    uniform base gets exactly 0), which validation rejects; the KS test needs the CDF there to be 0 or 1.
    """
    chain = [distribution]
    while isinstance(chain[-1], dist.TransformedDistribution):
        chain.append(chain[-1].base_dist)
    saved = [d._validate_args for d in chain]
    try:
        for d in chain:
            d._validate_args = False
        yield
    finally:
        for d, flag in zip(chain, saved, strict=True):
            d._validate_args = flag


def ks_test(samples: torch.Tensor | np.ndarray, distribution: dist.Distribution) -> tuple[float, float]:
    """One-sample Kolmogorov-Smirnov test of `samples` (n,) against a torch.distributions distribution.

    Returns (statistic, p_value): the largest distance between the empirical and the model CDF, and the
    probability of a distance at least that large if the samples did come from `distribution`.
    """
    values = samples.detach().cpu().double().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"samples must be a 1-d array of at least 2 draws; got shape {values.shape}")
    result = stats.kstest(values, _cdf(distribution))
    return float(result.statistic), float(result.pvalue)


def draw(rep: Reparameterization, n: int, seed: int = 0) -> tuple[torch.Tensor, dist.Distribution]:
    """n samples (n,) of one worked example, with the torch.distributions distribution they should follow."""
    params = _tensor_params(rep)
    samples = rep.sampler(n, generator=torch.Generator().manual_seed(seed), **params)
    return samples, rep.reference(**params)


def check_reparameterizations(n_samples: int = 20_000, seed: int = 0,
                              examples: Sequence[Reparameterization] = REPARAMETERIZATIONS) -> pd.DataFrame:
    """Sample every worked example and check it against torch.distributions. One row per example.

    Columns: family, distribution, construction, n; ks_statistic, p_value (KS test against the reference
    CDF); sample_mean, exact_mean (NaN where E[z] does not exist); grad_param, pathwise_grad (autograd of
    the sample mean, d/dtheta of (1/n) sum g_theta(eps_i)) and exact_grad (autograd of the reference's mean).
    """
    if not (isinstance(n_samples, int) and n_samples >= 2):
        raise ValueError(f"n_samples={n_samples!r} must be an integer >= 2")
    rows = []
    for i, rep in enumerate(examples):
        params = _tensor_params(rep)
        samples = rep.sampler(n_samples, generator=torch.Generator().manual_seed(seed + i), **params)
        reference = rep.reference(**params)
        statistic, p_value = ks_test(samples, reference)
        exact_mean = reference.mean
        pathwise = exact = math.nan
        if rep.grad_param is not None:
            theta = params[rep.grad_param]
            (pathwise,) = torch.autograd.grad(samples.mean(), theta, allow_unused=True)
            (exact,) = torch.autograd.grad(exact_mean, theta, allow_unused=True)
            # None: the quantity does not depend on theta (e.g. a Laplace mean on its scale), so d/dtheta = 0.
            pathwise, exact = (0.0 if g is None else float(g) for g in (pathwise, exact))
        rows.append({"family": rep.family, "distribution": rep.name, "construction": rep.construction,
                     "n": n_samples, "ks_statistic": statistic, "p_value": p_value,
                     "sample_mean": float(samples.detach().mean()), "exact_mean": float(exact_mean.detach()),
                     "grad_param": rep.grad_param or "", "pathwise_grad": pathwise, "exact_grad": exact})
    return pd.DataFrame(rows)


# --- score function vs reparameterization -------------------------------------------------------------
@dataclass(frozen=True)
class ToyObjective:
    """f(z) with E_{z ~ N(mu, sigma^2)}[f(z)] and its mu-derivative known in closed form."""

    name: str
    formula: str
    f: Callable[[torch.Tensor], torch.Tensor]
    exact_gradient: Callable[[float, float], float]  # (mu, sigma) -> d/dmu E[f(z)]
    tex: str = ""  # f(z) in matplotlib mathtext, for plot titles


TOY_OBJECTIVES: dict[str, ToyObjective] = {
    "square": ToyObjective("square", "f(z) = z^2", lambda z: z.pow(2), lambda mu, sigma: 2.0 * mu, "z^2"),
    "sin": ToyObjective("sin", "f(z) = sin(z)", torch.sin, lambda mu, sigma: math.cos(mu) * math.exp(-sigma ** 2 / 2),
                        r"\sin z"),
}


def gradient_estimates(L: int, n_repeats: int, mu: float = 1.0, sigma: float = 1.0, objective: str = "square",
                       seed: int = 0) -> dict[str, torch.Tensor]:
    """n_repeats independent L-sample estimates of d/dmu E_{z ~ N(mu, sigma^2)}[f(z)] by each estimator.

    score function (REINFORCE): (1/L) sum_l f(z_l) d/dmu log N(z_l; mu, sigma^2)
                              = (1/L) sum_l f(z_l) (z_l - mu) / sigma^2
    reparameterization: (1/L) sum_l d/dmu f(mu + sigma eps_l), by autograd.
    Both use the same eps (common random numbers). Returns {"score function": (R,), "reparameterization": (R,)}.
    """
    toy = _toy_objective(objective)
    _check_counts([L], "L")
    _check_counts([n_repeats], "n_repeats")
    if not sigma > 0:
        raise ValueError(f"sigma={sigma!r} must be > 0")
    g = torch.Generator().manual_seed(seed)
    chunk = max(1, 2_000_000 // L)  # bounds memory at ~2e6 draws per step
    score, pathwise = [], []
    for start in range(0, n_repeats, chunk):
        r = min(chunk, n_repeats - start)
        eps = torch.randn(r, L, generator=g, dtype=DTYPE)
        mu_t = torch.full((r, 1), float(mu), dtype=DTYPE, requires_grad=True)
        z = mu_t + sigma * eps
        values = toy.f(z)
        (grad,) = torch.autograd.grad(values.mean(1).sum(), mu_t)  # row r depends only on mu_t[r]
        pathwise.append(grad.squeeze(1))
        score.append((values.detach() * eps / sigma).mean(1))  # (z - mu) / sigma^2 = eps / sigma
    return {"score function": torch.cat(score), "reparameterization": torch.cat(pathwise)}


def gradient_variance(sample_counts: Sequence[int] = (1, 10, 100, 1000), n_repeats: int = 1000, mu: float = 1.0,
                      sigma: float = 1.0, objectives: Sequence[str] = ("square", "sin"), seed: int = 0) -> pd.DataFrame:
    """Variance and mean of the score-function and reparameterized gradient estimators against L.

    One row per (objective, estimator, L): variance and mean over n_repeats independent estimates,
    std_error of that mean, and the exact gradient d/dmu E[f(z)].
    """
    _check_counts(sample_counts, "sample_counts")
    rows = []
    for j, name in enumerate(objectives):
        toy = _toy_objective(name)
        exact = toy.exact_gradient(mu, sigma)
        for i, L in enumerate(sample_counts):
            estimates = gradient_estimates(L, n_repeats, mu, sigma, name, seed=seed + 1000 * j + i)
            for estimator, values in estimates.items():
                var = float(values.var())
                rows.append({"objective": toy.formula, "estimator": estimator, "L": int(L), "variance": var,
                             "mean": float(values.mean()), "std_error": math.sqrt(var / len(values)),
                             "exact": exact, "n_repeats": n_repeats})
    return pd.DataFrame(rows)


def variance_ratio(frame: pd.DataFrame) -> pd.DataFrame:
    """Score-function variance over reparameterized variance, from a `gradient_variance` frame: one row per
    L, one column per objective. Above 1: the reparameterized estimator is the less noisy one."""
    wide = frame.pivot_table(index="L", columns=["objective", "estimator"], values="variance")
    return wide.xs("score function", axis=1, level="estimator") / wide.xs("reparameterization", axis=1,
                                                                         level="estimator")


def _toy_objective(name: str) -> ToyObjective:
    if name not in TOY_OBJECTIVES:
        raise ValueError(f"objective={name!r} is not known; choose one of: {', '.join(TOY_OBJECTIVES)}")
    return TOY_OBJECTIVES[name]


def _check_counts(values: Sequence[int], name: str) -> None:
    values = list(values)
    if not values or not all(isinstance(v, int | np.integer) and v >= 1 for v in values):
        raise ValueError(f"{name}={values!r} must be a non-empty list of positive integers")


# --- the ELBO on the linear-Gaussian model -------------------------------------------------------------
@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global generator seeded (objectives.elbo draws from it), then restore it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def elbo_gap_table(model: LinearGaussian, x: torch.Tensor, n_samples: int = 10_000,
                   ks: Sequence[int] = (1, 5, 50, 500, 5000), seed: int = 0) -> pd.DataFrame:
    """Per datapoint of x (B, D): every side of log p(x) = ELBO + KL(q(z|x) || p(z|x)), in nats.

    Columns: log_px (exact), elbo_exact (closed form), elbo_A and elbo_B (vaelib.objectives.elbo with
    L = n_samples, estimators A and B), kl_posterior (exact KL(q(z|x) || p(z|x))), elbo_plus_kl
    (elbo_exact + kl_posterior, equal to log_px), gap (log_px - elbo_exact), kl_prior_analytic and
    kl_prior_mc (KL(q(z|x) || p(z)): estimator B's analytic term, estimator A's Monte Carlo mean), and
    iwae_k<K> (vaelib.objectives.iwae_bound, one estimate per K).
    """
    _check_counts([n_samples], "n_samples")
    _check_counts(ks, "ks")
    with _seeded(seed), torch.no_grad():
        log_px = model.log_marginal(x)
        exact = model.elbo_exact(x)
        kl_post = model.kl_to_true_posterior(x)
        terms_a = elbo(model, x, "A", n_samples)
        terms_b = elbo(model, x, "B", n_samples)
        table = pd.DataFrame({
            "log_px": log_px, "elbo_exact": exact, "elbo_A": terms_a.elbo, "elbo_B": terms_b.elbo,
            "kl_posterior": kl_post, "elbo_plus_kl": exact + kl_post, "gap": log_px - exact,
            "kl_prior_analytic": terms_b.kl, "kl_prior_mc": terms_a.kl,
        })
        for k in ks:
            table[f"iwae_k{k}"] = iwae_bound(model, x, int(k)).numpy()
    table.index.name = "datapoint"
    return table


def estimator_moments(model: LinearGaussian, x: torch.Tensor, n_draws: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Mean and variance of single-sample (L = 1) SGVB estimates of the ELBO, estimators A and B.

    Draws n_draws independent estimates per datapoint of x (B, D) with vaelib.objectives.elbo. One row per
    (datapoint, estimator): mean, variance, std_error of the mean, elbo_exact and log_px, all in nats.
    """
    _check_counts([n_draws], "n_draws")
    with _seeded(seed), torch.no_grad():
        repeated = x.repeat(n_draws, 1)  # (n_draws * B, D): one L = 1 estimate per row
        draws = {est: elbo(model, repeated, est, 1).elbo.reshape(n_draws, -1) for est in ("A", "B")}
        exact, log_px = model.elbo_exact(x), model.log_marginal(x)
    rows = []
    for est, values in draws.items():
        for i in range(values.shape[1]):
            var = float(values[:, i].var())
            rows.append({"datapoint": i, "estimator": est, "mean": float(values[:, i].mean()), "variance": var,
                         "std_error": math.sqrt(var / n_draws), "elbo_exact": float(exact[i]),
                         "log_px": float(log_px[i])})
    return pd.DataFrame(rows)


def elbo_gradient_table(model: LinearGaussian, x: torch.Tensor, n_samples: int = 10_000, estimator: str = "B",
                        seed: int = 0) -> pd.DataFrame:
    """The SGVB gradient of the ELBO w.r.t. the encoder mean next to the exact one, per (datapoint, dim).

    sgvb: autograd of vaelib.objectives.elbo (L = n_samples draws) w.r.t. mu = A x + c; exact: Lambda (m(x) - mu)
    (`LinearGaussian.elbo_gradient_wrt_mean`). Both in nats per unit of mu.
    """
    with _seeded(seed):
        loc, log_var = (t.detach().requires_grad_(True) for t in model.posterior(x))
        fixed = _FixedPosterior(model, loc, log_var)
        (grad,) = torch.autograd.grad(elbo(fixed, x, estimator, n_samples).elbo.sum(), loc)
    exact = model.elbo_gradient_wrt_mean(x).detach()
    b, z = grad.shape
    return pd.DataFrame({"datapoint": np.repeat(np.arange(b), z), "dim": np.tile(np.arange(z), b),
                         "sgvb": grad.reshape(-1).numpy(), "exact": exact.reshape(-1).numpy()})


class _FixedPosterior(torch.nn.Module):
    """The model with q(z|x) pinned to given (loc, log_var) leaves, so autograd reaches mu directly."""

    def __init__(self, model: LinearGaussian, loc: torch.Tensor, log_var: torch.Tensor) -> None:
        super().__init__()
        self.model, self.loc, self.lv = model, loc, log_var
        self.latent_dim = model.latent_dim

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loc, self.lv

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)

    def log_prob_x_given_z(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return self.model.log_prob_x_given_z(x, params)


def iwae_gap_curve(model: LinearGaussian, x: torch.Tensor, ks: Sequence[int] = (1, 5, 50, 500, 5000),
                   n_repeats: int = 20, seed: int = 0) -> pd.DataFrame:
    """The importance-weighted bound against K, n_repeats independent estimates per (datapoint, K).

    Long format, one row per (k, repeat, datapoint): iwae_bound (vaelib.objectives.iwae_bound), log_px
    (exact) and gap = log_px - iwae_bound, in nats. E[gap] >= 0 falls towards 0 as K grows.
    """
    _check_counts(ks, "ks")
    _check_counts([n_repeats], "n_repeats")
    with _seeded(seed), torch.no_grad():
        log_px = model.log_marginal(x).numpy()
        repeated = x.repeat(n_repeats, 1)  # (n_repeats * B, D): independent estimates of each datapoint
        frames = []
        for k in ks:
            bound = iwae_bound(model, repeated, int(k)).reshape(n_repeats, -1).numpy()
            r, b = np.meshgrid(np.arange(n_repeats), np.arange(bound.shape[1]), indexing="ij")
            frames.append(pd.DataFrame({"k": int(k), "repeat": r.ravel(), "datapoint": b.ravel(),
                                        "iwae_bound": bound.ravel(), "log_px": log_px[b.ravel()]}))
    frame = pd.concat(frames, ignore_index=True)
    frame["gap"] = frame["log_px"] - frame["iwae_bound"]
    return frame


def train_toy_encoder(model: LinearGaussian, x: torch.Tensor, steps: int = 1000, batch_size: int = 100,
                      lr: float = 0.05, estimator: str = "B", n_samples: int = 1, optimizer: str = "adam",
                      eval_every: int = 20, seed: int = 0, progress: bool = False) -> pd.DataFrame:
    """Fit the encoder of `model` to data x (N, D) with AEVB (Algorithm 1), decoder held at its true value.

    Each step draws a minibatch of `batch_size` rows of x and calls `vaelib.train.aevb_update`, the very
    update the book's MNIST runs use. With the decoder fixed, the best achievable ELBO is log p(x) (when W
    has orthogonal columns), so the history shows how far SGVB gets. Every `eval_every` steps and at the
    end it records, as means over all of x in nats: elbo (closed form), log_px (exact) and kl_posterior
    (exact KL(q(z|x) || p(z|x))). Returns that history (step, elbo, log_px, kl_posterior); `model` is
    trained in place.
    """
    from tqdm.auto import tqdm

    from .config import RunConfig
    from .train import aevb_update, make_optimizer

    _check_counts([steps, batch_size, eval_every], "steps, batch_size and eval_every")
    config = RunConfig(estimator=estimator, n_samples=n_samples, optimizer=optimizer, lr=lr,
                       batch_size=batch_size)  # validates estimator, optimizer and lr with clear messages
    decoder = [model.W, model.b]
    for p in decoder:
        p.requires_grad_(False)  # make_optimizer takes only trainable parameters: the encoder
    rows = []

    def snapshot(step: int) -> None:
        with torch.no_grad():
            rows.append({"step": step, "elbo": float(model.elbo_exact(x).mean()),
                         "log_px": float(model.log_marginal(x).mean()),
                         "kl_posterior": float(model.kl_to_true_posterior(x).mean())})

    try:
        opt = make_optimizer(model, config)
        generator = torch.Generator().manual_seed(seed)
        with _seeded(seed):
            snapshot(0)
            for step in tqdm(range(1, steps + 1), desc="AEVB on the linear-Gaussian model", disable=not progress):
                batch = x[torch.randint(len(x), (batch_size,), generator=generator)]
                aevb_update(model, opt, batch, config, 1.0)
                if step % eval_every == 0 or step == steps:
                    snapshot(step)
    finally:
        for p in decoder:
            p.requires_grad_(True)
    return pd.DataFrame(rows)


# --- plots ---------------------------------------------------------------------------------------------
def plot_reparameterizations(n_samples: int = 20_000, seed: int = 0,
                             examples: Sequence[Reparameterization] = REPARAMETERIZATIONS) -> Figure:
    """Histogram of each example's reparameterized samples with the torch.distributions density on top.

    Uses the same seeds as `check_reparameterizations(n_samples, seed)`, so it shows the samples the
    table tested. Heavy tails (Cauchy) are cut at the 1st and 99th percentiles for display.
    """
    import matplotlib.pyplot as plt

    cols = 3
    rows = math.ceil(len(examples) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
    for i, (rep, ax) in enumerate(zip(examples, axes.flat, strict=False)):
        with torch.no_grad():
            _plot_example(ax, rep, n_samples, seed + i)
    for ax in axes.flat[len(examples):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def _plot_example(ax: Axes, rep: Reparameterization, n_samples: int, seed: int) -> None:
    """One panel of `plot_reparameterizations` (call under torch.no_grad)."""
    samples, reference = draw(rep, n_samples, seed)
    values = samples.numpy()
    heavy_tailed = rep.name.startswith("Cauchy")
    low, high = np.quantile(values, [0.01, 0.99]) if heavy_tailed else (values.min(), values.max())
    ax.hist(values[(values >= low) & (values <= high)], bins=60, density=True, alpha=0.55,
            label="reparameterized samples")
    grid = torch.linspace(float(low), float(high), 400, dtype=DTYPE)
    support = reference.support
    if hasattr(support, "lower_bound"):  # log_prob is only defined on the support
        lb, ub = float(support.lower_bound), float(getattr(support, "upper_bound", math.inf))
        grid = grid.clamp(lb + 1e-9, ub - 1e-9)
    density = torch.exp(reference.log_prob(grid)).numpy()
    if heavy_tailed:  # the histogram is of the truncated sample: renormalize the curve to match
        mass = reference.cdf(torch.tensor([high, low], dtype=DTYPE))
        density = density / float(mass[0] - mass[1])
    ax.plot(grid.numpy(), density, color="black", lw=1.5, label="torch.distributions density")
    ax.set_title(f"{rep.name}\n{rep.family}", fontsize="small")
    ax.tick_params(labelsize="x-small")


def plot_gradient_variance(frame: pd.DataFrame) -> Figure:
    """Log-log plot of estimator variance against L (a `gradient_variance` frame), one panel per objective,
    with dashed 1/L lines through each estimator's L = smallest point."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    objectives = list(dict.fromkeys(frame["objective"]))
    fig, axes = plt.subplots(1, len(objectives), figsize=(4.5 * len(objectives), 3.6), squeeze=False)
    for ax, objective in zip(axes.flat, objectives, strict=True):
        part = frame[frame["objective"] == objective]
        sns.lineplot(data=part, x="L", y="variance", hue="estimator", style="estimator", markers=True,
                     dashes=False, ax=ax)
        for (_, group), color in zip(part.groupby("estimator", sort=False), sns.color_palette(), strict=False):
            first = group.sort_values("L").iloc[0]
            ls = np.array(sorted(group["L"]), dtype=float)
            ax.plot(ls, first["variance"] * first["L"] / ls, ls="--", lw=0.8, color=color)
        tex = next((t.tex for t in TOY_OBJECTIVES.values() if t.formula == objective and t.tex),
                   objective.removeprefix("f(z) = "))
        ax.set(xscale="log", yscale="log", xlabel="samples per estimate $L$",
               ylabel="variance of the gradient estimate",
               title=rf"$\partial_\mu\, E[{tex}]$, $z \sim N(\mu, \sigma^2)$")
        ax.legend(title=None, fontsize="small")
    fig.tight_layout()
    return fig


def plot_iwae_gap(frame: pd.DataFrame, datapoint: int = 0) -> Figure:
    """Left: mean gap log p(x) - IWAE bound (+/- 2 standard errors) against K, per datapoint, from an
    `iwae_gap_curve` frame. Right: every estimate of the bound for one datapoint, with log p(x) dashed."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    summary = frame.groupby(["datapoint", "k"])["gap"].agg(["mean", "sem"]).reset_index()
    for (point, group), color in zip(summary.groupby("datapoint"), sns.color_palette(n_colors=99), strict=False):
        left.errorbar(group["k"], group["mean"], yerr=2 * group["sem"], marker="o", ms=4, capsize=3,
                      color=color, label=f"datapoint {point}")
    left.axhline(0.0, color="black", lw=0.8)
    left.set(xscale="log", xlabel="importance samples $K$", ylabel=r"$\log p(x) - \hat{\mathcal{L}}_K$ (nats)",
             title="The gap closes as K grows")
    left.legend(fontsize="x-small")
    one = frame[frame["datapoint"] == datapoint]
    if one.empty:
        raise ValueError(f"datapoint={datapoint} is not in the frame; it has {sorted(frame['datapoint'].unique())}")
    sns.stripplot(data=one, x="k", y="iwae_bound", ax=right, size=3, alpha=0.6, color=sns.color_palette()[0])
    right.axhline(float(one["log_px"].iloc[0]), ls="--", color="black", lw=1, label=r"exact $\log p(x)$")
    right.set(xlabel="importance samples $K$", ylabel=r"$\hat{\mathcal{L}}_K$ (nats)",
              title=f"Every estimate, datapoint {datapoint}")
    right.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_toy_training(history: pd.DataFrame) -> Figure:
    """Left: the ELBO (closed form) climbing towards log p(x) during `train_toy_encoder`. Right: the exact
    KL(q(z|x) || p(z|x)) on a log scale, which is the remaining gap."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(history["step"], history["elbo"], label="ELBO (closed form)")
    left.plot(history["step"], history["log_px"], ls="--", color="black", lw=1, label="exact log p(x)")
    left.set(xlabel="AEVB step", ylabel="nats per datapoint (mean over the data)", title="ELBO during training")
    low = float(history["log_px"].iloc[0]) - 3 * max(float(history["kl_posterior"].iloc[-1]), 0.5)
    left.set_ylim(bottom=max(float(history["elbo"].min()), low))  # the first steps would hide the end
    left.legend(fontsize="small")
    right.plot(history["step"], history["kl_posterior"])
    right.set(yscale="log", xlabel="AEVB step", ylabel="KL(q(z|x) || p(z|x)) (nats)", title="The gap")
    fig.tight_layout()
    return fig
