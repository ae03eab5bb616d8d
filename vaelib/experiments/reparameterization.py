"""Chapter 1's demonstrations: reparameterized sampling and the variance of gradient estimators.

Reparameterization (Kingma & Welling 2013, Sec. 2.4) writes z ~ q_phi(z) as z = g_phi(eps) with eps drawn
from a fixed distribution, so that d/dphi E_q[f(z)] = E_eps[d/dphi f(g_phi(eps))]. The paper names three
families of g, each implemented below as a function that returns differentiable samples:

- inverse CDF: z = F^{-1}(u), u ~ U(0, 1)         (`exponential_icdf`, `cauchy_icdf`, `gumbel_icdf`)
- location-scale: z = loc + scale * eps            (`normal_location_scale`, `laplace_location_scale`)
- composition: z = a transformation of other draws (`gamma_sum_of_exponentials`, `chi2_sum_of_squares`,
                                                     `log_normal_exp`, `beta_from_gammas`)

Samples are float64 of shape (n,); parameters may be floats or tensors that require grad. The pictures are
`vaelib.figures.plot_reparameterizations` and `plot_gradient_variance`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import distributions as dist

from ..config import check_int, check_ints

DTYPE = torch.float64

_TINY = torch.finfo(DTYPE).tiny

def _param(value: float | torch.Tensor) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.tensor(float(value), dtype=DTYPE)

def _uniform(n: int, generator: torch.Generator | None) -> torch.Tensor:
    # torch.rand can return exactly 0; clamping keeps log and tan finite and moves a negligible mass (< 1e-15).
    return torch.rand(n, generator=generator, dtype=DTYPE).clamp(_TINY, 1.0 - 1e-16)

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

def gamma_sum_of_exponentials(n: int, shape: int, rate: float | torch.Tensor,
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """Gamma(shape, rate) for integer shape k: the sum of k Exponential(rate) draws. Shape (n,)."""
    k = check_int("shape", shape, 1)
    return exponential_icdf(n * k, rate, generator).reshape(n, k).sum(-1)

def chi2_sum_of_squares(n: int, df: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Chi-squared(df) for integer df: the sum of df squared N(0, 1) draws. Shape (n,)."""
    k = check_int("df", df, 1)
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
    CDF); sample_mean, its mean_std_error (the sample standard deviation over sqrt(n): the error bar of the
    agreement with exact_mean; NaN where E[z] does not exist), exact_mean (NaN likewise); grad_param,
    pathwise_grad (autograd of the sample mean, d/dtheta of (1/n) sum g_theta(eps_i)) and exact_grad
    (autograd of the reference's mean).
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
                     "sample_mean": float(samples.detach().mean()),
                     "mean_std_error": (float(samples.detach().std() / math.sqrt(n_samples))
                                        if math.isfinite(float(exact_mean.detach())) else math.nan),
                     "exact_mean": float(exact_mean.detach()),
                     "grad_param": rep.grad_param or "", "pathwise_grad": pathwise, "exact_grad": exact})
    return pd.DataFrame(rows)

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
    check_int("L", L)
    check_int("n_repeats", n_repeats)
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
    check_ints("sample_counts", sample_counts)
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
