"""vaelib.experiments.reparameterization and bounds: reparameterized samplers against torch.distributions,
gradient estimators against exact gradients, and the ELBO-chapter tables on the linear-Gaussian model."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import distributions as dist  # noqa: E402

from vaelib.experiments import bounds  # noqa: E402
from vaelib.experiments import reparameterization as reparam  # noqa: E402
from vaelib.figures import theory as plots  # noqa: E402
from vaelib.toy import LinearGaussian  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
EXAMPLES = {rep.name: rep for rep in reparam.REPARAMETERIZATIONS}


@pytest.fixture(scope="module")
def table():
    return reparam.check_reparameterizations(n_samples=20_000, seed=0)


def test_every_family_is_covered(table) -> None:
    assert set(table["family"]) == {"inverse CDF", "location-scale", "composition"}
    assert len(table) == len(reparam.REPARAMETERIZATIONS)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_reparameterized_samples_pass_a_ks_test(table, name: str) -> None:
    row = table.set_index("distribution").loc[name]
    # Under the null the p-value is uniform; 1e-3 rejects a correct sampler with probability 0.001.
    assert row["p_value"] > 1e-3, row.to_dict()
    # At n = 20,000 the 1e-3 critical KS distance is ~1.95 / sqrt(n) = 0.014.
    assert row["ks_statistic"] < 1.95 / math.sqrt(20_000)


def f64(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64)


@pytest.mark.parametrize(("name", "wrong"), [
    ("Exponential(rate=2)", dist.Exponential(f64(2.2))),
    ("Normal(1, 2)", dist.Laplace(f64(1.0), f64(math.sqrt(2.0)))),  # same mean and variance, other shape
    ("Beta(2, 3)", dist.Beta(f64(2.0), f64(3.3))),
])
def test_ks_test_rejects_a_wrong_reference(name: str, wrong: dist.Distribution) -> None:
    samples, right = reparam.draw(EXAMPLES[name], 20_000, seed=0)
    assert reparam.ks_test(samples, right)[1] > 1e-3
    assert reparam.ks_test(samples, wrong)[1] < 1e-6


def test_ks_test_handles_samples_far_in_a_tail() -> None:
    # A transformed distribution's cdf pushes extreme values onto its base's support edge; that must
    # count as CDF 0 (a large KS distance), not raise.
    gumbel = dist.Gumbel(f64(0.5), f64(2.0))
    statistic, p_value = reparam.ks_test(torch.linspace(-60.0, -50.0, 100, dtype=torch.float64), gumbel)
    assert statistic > 0.99 and p_value < 1e-6


@pytest.mark.parametrize("name", [rep.name for rep in reparam.REPARAMETERIZATIONS if rep.grad_param])
def test_pathwise_gradient_of_the_mean_is_unbiased(name: str) -> None:
    rep = EXAMPLES[name]
    estimates, exact = [], None
    for seed in range(20):
        params = reparam._tensor_params(rep)
        samples = rep.sampler(2000, generator=torch.Generator().manual_seed(seed), **params)
        theta = params[rep.grad_param]
        (grad,) = torch.autograd.grad(samples.mean(), theta, allow_unused=True)
        estimates.append(0.0 if grad is None else float(grad))
        (exact_grad,) = torch.autograd.grad(rep.reference(**params).mean, theta, allow_unused=True)
        exact = 0.0 if exact_grad is None else float(exact_grad)
    values = torch.tensor(estimates, dtype=torch.float64)
    se = float(values.std()) / math.sqrt(len(values))
    assert abs(float(values.mean()) - exact) < 5 * se + 1e-9, (float(values.mean()), exact, se)


def test_table_gradients_are_close_to_exact(table) -> None:
    with_grad = table[table["grad_param"] != ""]
    assert len(with_grad) >= 4
    assert ((with_grad["pathwise_grad"] - with_grad["exact_grad"]).abs() < 0.1).all()
    assert table.loc[table["grad_param"] == "", "pathwise_grad"].isna().all()


@pytest.mark.parametrize("objective", list(reparam.TOY_OBJECTIVES))
def test_both_gradient_estimators_are_unbiased(objective: str) -> None:
    exact = reparam.TOY_OBJECTIVES[objective].exact_gradient(0.8, 0.7)  # sigma != 1: a missing 1/sigma would show
    estimates = reparam.gradient_estimates(L=10, n_repeats=4000, mu=0.8, sigma=0.7, objective=objective, seed=0)
    for name, values in estimates.items():
        se = float(values.std()) / math.sqrt(len(values))
        assert abs(float(values.mean()) - exact) < 5 * se, (name, float(values.mean()), exact, se)


def test_score_function_has_higher_variance_than_reparameterization_on_z_squared() -> None:
    frame = reparam.gradient_variance(sample_counts=[1, 10, 100], n_repeats=2000, objectives=["square"], seed=0)
    wide = frame.pivot(index="L", columns="estimator", values="variance")
    assert (wide["score function"] > 2 * wide["reparameterization"]).all(), wide
    # Averaging L independent draws divides the variance by L, for both estimators.
    ratio = wide.loc[1] / wide.loc[100]
    assert ((ratio > 50) & (ratio < 200)).all(), ratio


def test_score_function_variance_grows_with_a_constant_shift_of_f_and_reparameterization_does_not() -> None:
    # f + c has the same gradient; the score-function estimator pays for c, the pathwise one does not.
    shifted = reparam.ToyObjective("shifted", "f(z) = z^2 + 10", lambda z: z.pow(2) + 10.0, lambda mu, sigma: 2 * mu)
    reparam.TOY_OBJECTIVES["_shifted"] = shifted
    try:
        base = reparam.gradient_estimates(10, 2000, objective="square", seed=1)
        moved = reparam.gradient_estimates(10, 2000, objective="_shifted", seed=1)
    finally:
        del reparam.TOY_OBJECTIVES["_shifted"]
    torch.testing.assert_close(moved["reparameterization"], base["reparameterization"])
    assert moved["score function"].var() > 3 * base["score function"].var()


def linear_gaussian(exact: bool) -> tuple[LinearGaussian, torch.Tensor]:
    model = LinearGaussian(data_dim=6, latent_dim=2, sigma=0.5, seed=0).use_exact_posterior()
    if not exact:
        model.perturb_encoder(mean_noise=0.4, log_var_shift=0.6, seed=2)
    return model, model.sample_x(3, torch.Generator().manual_seed(1))


def test_elbo_gap_table_identities() -> None:
    model, x = linear_gaussian(exact=False)
    frame = bounds.elbo_gap_table(model, x, n_samples=20_000, ks=(1, 50, 5000))
    assert list(frame.index) == [0, 1, 2]
    assert ((frame["elbo_plus_kl"] - frame["log_px"]).abs() < 1e-9).all()
    assert (frame["gap"] > 0).all() and ((frame["gap"] - frame["kl_posterior"]).abs() < 1e-9).all()
    # Monte Carlo against closed forms; 0.1 nats is ~5 standard errors at L = 20,000 for this model.
    for column in ("elbo_A", "elbo_B"):
        assert ((frame[column] - frame["elbo_exact"]).abs() < 0.1).all(), frame[[column, "elbo_exact"]]
    assert ((frame["kl_prior_mc"] - frame["kl_prior_analytic"]).abs() < 0.1).all()
    assert ((frame["iwae_k5000"] - frame["log_px"]).abs() < frame["gap"]).all()


def test_elbo_gap_table_at_the_exact_posterior_has_no_gap() -> None:
    model, x = linear_gaussian(exact=True)
    frame = bounds.elbo_gap_table(model, x, n_samples=100, ks=(1, 5))
    for column in ("elbo_exact", "elbo_A", "iwae_k1", "iwae_k5"):
        assert ((frame[column] - frame["log_px"]).abs() < 1e-9).all(), column


def test_estimator_moments_a_has_zero_variance_only_at_the_exact_posterior() -> None:
    model, x = linear_gaussian(exact=True)
    moments = bounds.estimator_moments(model, x, n_draws=2000).set_index(["estimator", "datapoint"])
    assert (moments.loc["A", "variance"] < 1e-18).all()
    assert (moments.loc["B", "variance"] > 1e-2).all()
    model, x = linear_gaussian(exact=False)
    moments = bounds.estimator_moments(model, x, n_draws=5000)
    assert (moments["variance"] > 1e-2).all()
    assert ((moments["mean"] - moments["elbo_exact"]).abs() < 5 * moments["std_error"]).all()


def test_elbo_gradient_table_matches_exact() -> None:
    model, x = linear_gaussian(exact=False)
    frame = bounds.elbo_gradient_table(model, x, n_samples=20_000)
    assert len(frame) == 3 * 2
    assert (frame["exact"].abs() > 1e-2).any()
    assert ((frame["sgvb"] - frame["exact"]).abs() < 0.1 + 0.05 * frame["exact"].abs()).all(), frame


def test_iwae_gap_curve_closes_the_gap() -> None:
    model, x = linear_gaussian(exact=False)
    frame = bounds.iwae_gap_curve(model, x, ks=(1, 10, 1000), n_repeats=50)
    assert len(frame) == 3 * 50 * 3
    mean_gap = frame.groupby("k")["gap"].mean()
    assert mean_gap[1] > mean_gap[10] > mean_gap[1000]
    assert mean_gap[1000] < mean_gap[1] / 10


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="sample_counts"):
        reparam.gradient_variance(sample_counts=[0, 10])
    with pytest.raises(ValueError, match="square"):
        reparam.gradient_variance(objectives=["cube"])
    with pytest.raises(ValueError, match="1-d"):
        reparam.ks_test(torch.zeros(3, 2), dist.Normal(0.0, 1.0))
    with pytest.raises(ValueError, match=r"shape=2.5 .* integer >= 1"):
        reparam.gamma_sum_of_exponentials(10, 2.5, 1.0)
    with pytest.raises(ValueError, match="ks"):
        bounds.iwae_gap_curve(*linear_gaussian(exact=True), ks=[])
    with pytest.raises(ValueError, match="datapoint=7"):
        plots.plot_iwae_gap(bounds.iwae_gap_curve(*linear_gaussian(exact=True), ks=[1], n_repeats=2), datapoint=7)


def test_plots_return_figures() -> None:
    figures = [
        plots.plot_reparameterizations(n_samples=500),
        plots.plot_gradient_variance(reparam.gradient_variance([1, 10], n_repeats=50)),
        plots.plot_iwae_gap(bounds.iwae_gap_curve(*linear_gaussian(exact=False), ks=(1, 10), n_repeats=5)),
    ]
    for fig in figures:
        assert isinstance(fig, Figure) and fig.axes
        plt.close(fig)


def test_sample_means_agree_with_the_exact_means_within_their_error_bars(table) -> None:
    """The chapter's agreement claim, with its error bar: within 5 standard errors wherever E[z] exists."""
    finite = table[table["exact_mean"].map(math.isfinite)]
    assert len(finite) >= 5 and finite["mean_std_error"].gt(0).all()
    z = (finite["sample_mean"] - finite["exact_mean"]).abs() / finite["mean_std_error"]
    assert (z < 5).all(), finite.assign(z=z)[["distribution", "z"]]
    assert table.loc[~table["exact_mean"].map(math.isfinite), "mean_std_error"].isna().all()
