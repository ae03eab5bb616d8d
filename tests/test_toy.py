"""The linear-Gaussian model (vaelib.toy): its closed forms against independent derivations, and the
library's SGVB / IWAE estimators (vaelib.objectives, unchanged) against those closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from vaelib.objectives import elbo, iwae_bound, normal_log_prob, std_normal_log_prob
from vaelib.toy import LinearGaussian

pytestmark = pytest.mark.usefixtures("one_thread")


def data(model: LinearGaussian, n: int = 4, seed: int = 1) -> torch.Tensor:
    return model.sample_x(n, torch.Generator().manual_seed(seed))


def mismatched(orthogonal: bool = True) -> LinearGaussian:
    return LinearGaussian(data_dim=6, latent_dim=3, sigma=0.6, orthogonal=orthogonal, seed=0).use_exact_posterior() \
        .perturb_encoder(mean_noise=0.4, log_var_shift=0.7, seed=3)


def per_draw(model: LinearGaussian, x: torch.Tensor, estimator: str, n: int) -> torch.Tensor:
    """n independent single-sample (L = 1) ELBO estimates per datapoint: (n, B)."""
    with torch.no_grad():
        return elbo(model, x.repeat(n, 1), estimator, 1).elbo.reshape(n, -1)


@pytest.mark.parametrize("orthogonal", [True, False])
def test_exact_posterior_matches_gaussian_conditioning(orthogonal: bool) -> None:
    # The joint (z, x) is Gaussian with Cov(z, x) = W^T, so p(z|x) follows from the conditioning formula,
    # an independent route from the precision form the model uses.
    model = LinearGaussian(data_dim=5, latent_dim=3, sigma=0.7, orthogonal=orthogonal, seed=2)
    x = data(model)
    with torch.no_grad():
        cov_x = model.marginal_covariance()
        gain = model.W.T @ torch.linalg.inv(cov_x)  # (Z, D)
        mean_expected = (x - model.b) @ gain.T
        cov_expected = torch.eye(3, dtype=torch.float64) - gain @ model.W
        mean, cov = model.exact_posterior(x)
    torch.testing.assert_close(mean, mean_expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(cov, cov_expected, rtol=1e-9, atol=1e-9)
    off_diagonal = cov - torch.diag(torch.diagonal(cov))
    if orthogonal:
        assert off_diagonal.abs().max() < 1e-12
    else:
        assert off_diagonal.abs().max() > 1e-3


@pytest.mark.parametrize("orthogonal", [True, False])
def test_log_marginal_satisfies_bayes_rule(orthogonal: bool) -> None:
    # log p(x) = log p(x|z) + log p(z) - log p(z|x) at ANY z.
    model = LinearGaussian(data_dim=5, latent_dim=2, sigma=0.4, orthogonal=orthogonal, seed=4)
    x = data(model)
    z = torch.randn(3, *x.shape[:1], 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        mean, cov = model.exact_posterior(x)
        log_post = MultivariateNormal(mean, covariance_matrix=cov).log_prob(z)  # (3, B)
        rhs = model.log_prob_x_given_z(x, model.decode(z)) + std_normal_log_prob(z) - log_post
        expected = model.log_marginal(x).expand_as(rhs)
    torch.testing.assert_close(rhs, expected, rtol=1e-9, atol=1e-9)


def test_sample_x_follows_the_marginal() -> None:
    model = LinearGaussian(data_dim=4, latent_dim=2, sigma=0.5, seed=5)
    x = model.sample_x(200_000, torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(x.mean(0), model.b.detach(), atol=0.02, rtol=0)
        torch.testing.assert_close(torch.cov(x.T), model.marginal_covariance(), atol=0.05, rtol=0.02)


def test_elbo_is_below_log_px_for_a_mismatched_q() -> None:
    model = mismatched()
    x = data(model)
    draws = per_draw(model, x, "B", 20_000)
    with torch.no_grad():
        log_px = model.log_marginal(x)
        closed_form = model.elbo_exact(x)
    se = draws.std(0) / math.sqrt(draws.shape[0])
    assert (draws.mean(0) + 5 * se < log_px).all()
    assert (closed_form < log_px - 1e-3).all()


def test_at_the_exact_posterior_every_single_sample_estimate_a_is_log_px() -> None:
    # q = p(z|x) makes p(x, z) / q(z|x) = p(x) for every z: estimator A has zero variance.
    model = LinearGaussian(data_dim=6, latent_dim=3, sigma=0.6, seed=0).use_exact_posterior()
    x = data(model)
    draws = per_draw(model, x, "A", 500)
    with torch.no_grad():
        log_px = model.log_marginal(x)
        torch.testing.assert_close(draws, log_px.expand_as(draws), rtol=0, atol=1e-9)
        torch.testing.assert_close(model.elbo_exact(x), log_px, rtol=0, atol=1e-9)
        assert model.kl_to_true_posterior(x).abs().max() < 1e-9
        for k in (1, 7, 100):
            torch.testing.assert_close(iwae_bound(model, x, k), log_px, rtol=0, atol=1e-9)
    # Estimator B is still noisy (its log p(x|z) term varies with z), but centred on log p(x).
    draws_b = per_draw(model, x, "B", 20_000)
    assert (draws_b.var(0) > 1e-3).all()
    assert ((draws_b.mean(0) - log_px).abs() < 5 * draws_b.std(0) / math.sqrt(20_000)).all()


@pytest.mark.parametrize("orthogonal", [True, False])
def test_log_px_equals_elbo_plus_kl_to_the_true_posterior(orthogonal: bool) -> None:
    model = mismatched(orthogonal)
    x = data(model)
    with torch.no_grad():
        log_px, kl = model.log_marginal(x), model.kl_to_true_posterior(x)
        torch.testing.assert_close(model.elbo_exact(x) + kl, log_px, rtol=0, atol=1e-9)
    assert (kl > 1e-3).all()
    draws = per_draw(model, x, "A", 40_000)  # the identity again, through the library's Monte Carlo ELBO
    se = draws.std(0) / math.sqrt(draws.shape[0])
    assert ((draws.mean(0) + kl - log_px).abs() < 5 * se).all()


def test_non_orthogonal_w_leaves_a_gap_even_at_the_best_diagonal_q() -> None:
    model = LinearGaussian(data_dim=6, latent_dim=3, sigma=0.3, orthogonal=False, seed=0).use_exact_posterior()
    x = data(model)
    with torch.no_grad():
        kl = model.kl_to_true_posterior(x)
    assert (kl > 1e-3).all()
    # The mean-field optimum: shrinking or widening any variance, or moving the mean, only adds KL.
    for change in ({"mean_noise": 0.1, "log_var_shift": 0.0}, {"mean_noise": 0.0, "log_var_shift": 0.2},
                   {"mean_noise": 0.0, "log_var_shift": -0.2}):
        other = LinearGaussian(data_dim=6, latent_dim=3, sigma=0.3, orthogonal=False, seed=0).use_exact_posterior()
        other.perturb_encoder(seed=1, **change)
        with torch.no_grad():
            assert (other.kl_to_true_posterior(x) > kl).all()


def test_kl_to_true_posterior_matches_monte_carlo() -> None:
    model = mismatched(orthogonal=False)
    x = data(model)
    with torch.no_grad():
        loc, log_var = model.posterior(x)
        z = loc + torch.exp(0.5 * log_var) * torch.randn(50_000, *loc.shape, generator=torch.Generator().manual_seed(0),
                                                         dtype=torch.float64)
        mean, cov = model.exact_posterior(x)
        log_ratio = normal_log_prob(z, loc, log_var) - MultivariateNormal(mean, covariance_matrix=cov).log_prob(z)
        se = log_ratio.std(0) / math.sqrt(z.shape[0])
        assert ((log_ratio.mean(0) - model.kl_to_true_posterior(x)).abs() < 5 * se).all()


def test_iwae_bound_rises_with_k_towards_log_px() -> None:
    torch.manual_seed(0)
    model = mismatched()
    x = data(model, n=3)
    repeats = 400
    with torch.no_grad():
        log_px = model.log_marginal(x)
        gaps = {k: log_px - iwae_bound(model, x.repeat(repeats, 1), k).reshape(repeats, -1)
                for k in (1, 10, 100, 1000)}  # (repeats, B) each
        kl = model.kl_to_true_posterior(x)
    mean = {k: g.mean(0) for k, g in gaps.items()}
    se = {k: g.std(0) / math.sqrt(repeats) for k, g in gaps.items()}
    assert ((mean[1] - kl).abs() < 5 * se[1]).all()  # K = 1 is the ELBO: its expected gap is the KL
    for small, large in ((1, 10), (10, 100), (100, 1000)):
        assert (mean[large] < mean[small]).all(), (small, large, mean[small], mean[large])
    assert (mean[1000] < mean[1] / 10).all()
    assert (mean[1000] > -5 * se[1000]).all()  # still a lower bound in expectation


def _sgvb_gradients(model: LinearGaussian, x: torch.Tensor, estimator: str, repeats: int, n_samples: int):
    torch.manual_seed(0)
    grads = {"c": [], "log_var": []}
    for _ in range(repeats):
        model.zero_grad()
        elbo(model, x, estimator, n_samples).elbo.sum().backward()
        grads["c"].append(model.c.grad.clone())
        grads["log_var"].append(model.log_var.grad.clone())
    return {k: torch.stack(v) for k, v in grads.items()}


@pytest.mark.parametrize("estimator", ["A", "B"])
def test_reparameterized_elbo_gradient_matches_the_analytic_gradient(estimator: str) -> None:
    model = mismatched()
    x = data(model)
    # The encoder mean is mu = A x + c, so d ELBO / d c = sum over the batch of d ELBO / d mu.
    analytic_c = model.elbo_gradient_wrt_mean(x).detach().sum(0)
    model.zero_grad()
    model.elbo_exact(x).sum().backward()
    exact_c, exact_log_var = model.c.grad.clone(), model.log_var.grad.clone()
    torch.testing.assert_close(exact_c, analytic_c, rtol=1e-9, atol=1e-9)  # the derivation in the docstring
    sgvb = _sgvb_gradients(model, x, estimator, repeats=20, n_samples=500)
    for name, exact in (("c", exact_c), ("log_var", exact_log_var)):
        mean, se = sgvb[name].mean(0), sgvb[name].std(0) / math.sqrt(sgvb[name].shape[0])
        assert ((mean - exact).abs() < 5 * se + 1e-9).all(), (name, mean, exact, se)


def test_gradient_vanishes_at_the_exact_posterior_mean() -> None:
    model = LinearGaussian(data_dim=6, latent_dim=3, sigma=0.6, seed=0).use_exact_posterior()
    x = data(model)
    assert model.elbo_gradient_wrt_mean(x).abs().max() < 1e-9
    assert mismatched().elbo_gradient_wrt_mean(x).abs().max() > 1e-2


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="sigma"):
        LinearGaussian(sigma=0.0)
    with pytest.raises(ValueError, match="orthogonal"):
        LinearGaussian(data_dim=2, latent_dim=3)
    with pytest.raises(ValueError, match="column_scales"):
        LinearGaussian(latent_dim=2, column_scales=[1.0, 2.0, 3.0])
    model = LinearGaussian(data_dim=4, latent_dim=2)
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        model.log_marginal(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="positive integer"):
        model.sample_x(0)


def test_quieter_estimator_finding_follows_the_table_either_way() -> None:
    import pandas as pd

    from vaelib.experiments.bounds import quieter_estimator_finding

    def table(var_a: list[float], var_b: list[float]) -> pd.DataFrame:
        rows = [{"datapoint": i, "estimator": e, "variance": v}
                for e, vs in (("A", var_a), ("B", var_b)) for i, v in enumerate(vs)]
        return pd.DataFrame(rows)

    a_quieter = quieter_estimator_finding(table([1, 1, 1, 5, 5], [2, 2, 2, 1, 1]))
    assert "estimator A" in a_quieter and "3 of 5" in a_quieter and "B at 2" in a_quieter
    b_quieter = quieter_estimator_finding(table([2, 2, 2, 1, 1], [1, 1, 1, 5, 5]))
    assert "estimator B" in b_quieter and "3 of 5" in b_quieter
    assert "Neither" in quieter_estimator_finding(table([1, 2], [2, 1]))
    with pytest.raises(ValueError, match="lacks columns"):
        quieter_estimator_finding(pd.DataFrame({"datapoint": [0]}))
