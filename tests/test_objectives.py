"""The SGVB estimators, the importance-weighted bound, unit conversions, active units (vaelib.objectives)
and the decoder likelihoods (vaelib.likelihoods).

Every stochastic comparison uses a tolerance derived from the samples themselves (a few standard errors),
never a tolerance tuned to pass; seeds are fixed so the suite is reproducible.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.distributions import Independent, Normal
from torch.distributions import kl_divergence as torch_kl

from vaelib.config import RunConfig
from vaelib.data import load_dataset
from vaelib.evaluate import active_units
from vaelib.likelihoods import (
    Bernoulli,
    DiscretizedLogisticMixture,
    FixedGaussian,
    Gaussian,
    L1Loss,
    MSELoss,
    SigmaVAE,
    make_likelihood,
)
from vaelib.models import build_model
from vaelib.objectives import (
    bits_per_dim,
    continuous_bits_per_dim,
    elbo,
    iwae_bound,
    kl_divergence,
    normal_log_prob,
    rsample,
    std_normal_log_prob,
)

N_SE = 5.0  # tolerance in standard errors: a false failure has probability ~1e-6 per comparison


def standard_error(draws: torch.Tensor) -> torch.Tensor:
    """Standard error of the mean over dimension 0."""
    return draws.std(0) / math.sqrt(draws.shape[0])


@pytest.fixture(scope="module")
def model_and_x(data_dir):
    """An untrained tiny VAE and 4 binarized test digits: the posterior is far from exact, so the bounds
    are far apart and their ordering is visible above the noise."""
    torch.manual_seed(0)
    config = RunConfig(dataset="binarized-mnist", latent_dim=5, hidden_dim=64, device="cpu")
    model = build_model(config, (1, 28, 28)).eval()
    data = load_dataset("binarized-mnist", data_dir, train_size=10, test_size=4)
    return model, next(data.test_batches(4))


def repeated(model, x: torch.Tensor, fn, repeats: int) -> torch.Tensor:
    """`repeats` independent estimates per datapoint, (repeats, B): each row of x.repeat gets its own eps."""
    with torch.no_grad():
        return fn(model, x.repeat(repeats, 1)).reshape(repeats, x.shape[0])


# --- KL and Gaussian log densities ---------------------------------------------------------------------
def test_analytic_kl_matches_monte_carlo() -> None:
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(6, 4, generator=g) * 1.5
    log_var = torch.randn(6, 4, generator=g)
    analytic = kl_divergence(loc, log_var).sum(-1)  # (B,)

    n = 20_000
    z = rsample(loc, log_var, n, generator=g)  # (n, B, Z)
    draws = normal_log_prob(z, loc, log_var) - std_normal_log_prob(z)  # log q - log p, (n, B)
    mc, se = draws.mean(0), standard_error(draws)
    assert torch.all((analytic - mc).abs() < N_SE * se), (analytic, mc, se)

    # And against an independent closed form (torch.distributions).
    q = Independent(Normal(loc, torch.exp(0.5 * log_var)), 1)
    p = Independent(Normal(torch.zeros_like(loc), torch.ones_like(loc)), 1)
    torch.testing.assert_close(analytic, torch_kl(q, p), rtol=1e-5, atol=1e-5)


def test_kl_is_zero_only_at_the_prior() -> None:
    zeros = torch.zeros(3, 2)
    assert torch.all(kl_divergence(zeros, zeros) == 0)
    g = torch.Generator().manual_seed(1)
    assert torch.all(kl_divergence(torch.randn(3, 2, generator=g), torch.randn(3, 2, generator=g)) > 0)


def test_normal_log_probs_match_torch_distributions() -> None:
    g = torch.Generator().manual_seed(2)
    loc, log_var = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    z = torch.randn(7, 5, 3, generator=g)
    expected = Normal(loc, torch.exp(0.5 * log_var)).log_prob(z).sum(-1)
    torch.testing.assert_close(normal_log_prob(z, loc, log_var), expected)
    torch.testing.assert_close(std_normal_log_prob(z), Normal(0.0, 1.0).log_prob(z).sum(-1))


def test_rsample_has_the_posterior_moments_and_carries_gradients() -> None:
    g = torch.Generator().manual_seed(3)
    loc = torch.tensor([[2.0, -1.0]], requires_grad=True)
    log_var = torch.tensor([[math.log(0.25), math.log(4.0)]], requires_grad=True)
    z = rsample(loc, log_var, 40_000, generator=g)
    assert z.shape == (40_000, 1, 2)
    mean = z.mean(0)
    se = z.std(0) / math.sqrt(z.shape[0])
    assert torch.all((mean - loc).abs() < N_SE * se)
    # Sample variance has SE ~ var * sqrt(2 / (n - 1)) for a Gaussian.
    var = z.var(0)
    true_var = torch.exp(log_var)
    assert torch.all((var - true_var).abs() < N_SE * true_var * math.sqrt(2 / (z.shape[0] - 1)))
    z.sum().backward()  # d z / d loc = 1 for every draw
    assert torch.allclose(loc.grad, torch.full_like(loc, 40_000.0))


# --- SGVB estimators A and B -----------------------------------------------------------------------------
def test_estimators_a_and_b_agree_in_expectation(model_and_x) -> None:
    model, x = model_and_x
    repeats = 1000
    # Independent draws: the means agree within the (large) noise of log p(x|z).
    a = repeated(model, x, lambda m, xx: elbo(m, xx, "A", 1).elbo, repeats)
    b = repeated(model, x, lambda m, xx: elbo(m, xx, "B", 1).elbo, repeats)
    tolerance = N_SE * torch.sqrt(standard_error(a) ** 2 + standard_error(b) ** 2)
    assert torch.all((a.mean(0) - b.mean(0)).abs() < tolerance), (a.mean(0), b.mean(0), tolerance)
    # Common random numbers: with the same eps the two differ only in the KL term, so the paired difference
    # has a far smaller standard error and would expose a bias of a tenth of a nat.
    torch.manual_seed(11)
    terms_a = elbo(model, x.repeat(repeats, 1), "A", 1)
    torch.manual_seed(11)
    terms_b = elbo(model, x.repeat(repeats, 1), "B", 1)
    torch.testing.assert_close(terms_a.log_px_z, terms_b.log_px_z)  # the pairing worked: same draws of z
    diff = (terms_a.elbo - terms_b.elbo).detach().reshape(repeats, -1)
    assert torch.all(diff.mean(0).abs() < N_SE * standard_error(diff)), (diff.mean(0), standard_error(diff))
    assert torch.all(N_SE * standard_error(diff) < 0.1)


def test_estimator_b_removes_the_kl_variance(model_and_x) -> None:
    model, x = model_and_x
    repeats = 500
    kl_a = repeated(model, x, lambda m, xx: elbo(m, xx, "A", 1).kl, repeats)
    kl_b = repeated(model, x, lambda m, xx: elbo(m, xx, "B", 1).kl, repeats)
    # B's KL is exact: no variance at all; A's Monte Carlo KL fluctuates around the same value.
    assert torch.all(kl_b.std(0) == 0)
    assert torch.all(kl_a.std(0) > 0.01)
    assert torch.all((kl_a.mean(0) - kl_b[0]).abs() < N_SE * standard_error(kl_a))
    assert torch.all(kl_a.var(0) > kl_b.var(0))


def test_elbo_terms_are_consistent_and_beta_only_scales_the_kl(model_and_x) -> None:
    model, x = model_and_x
    torch.manual_seed(5)
    with torch.no_grad():
        plain = elbo(model, x, "B", 3)
        torch.manual_seed(5)
        weighted = elbo(model, x, "B", 3, beta=0.25)
    torch.testing.assert_close(plain.elbo, plain.log_px_z - plain.kl)
    torch.testing.assert_close(plain.objective, plain.elbo)
    torch.testing.assert_close(weighted.elbo, plain.elbo)  # the same draws: beta changes only the objective
    torch.testing.assert_close(weighted.objective, plain.log_px_z - 0.25 * plain.kl)
    assert torch.all(plain.kl > 0)
    with pytest.raises(ValueError, match="'C'"):
        elbo(model, x, "C")


# --- the importance-weighted bound -------------------------------------------------------------------------
def test_iwae_with_one_sample_is_the_elbo_in_expectation(model_and_x) -> None:
    model, x = model_and_x
    repeats = 500
    k1 = repeated(model, x, lambda m, xx: iwae_bound(m, xx, 1), repeats)
    b = repeated(model, x, lambda m, xx: elbo(m, xx, "B", 1).elbo, repeats)
    tolerance = N_SE * torch.sqrt(standard_error(k1) ** 2 + standard_error(b) ** 2)
    assert torch.all((k1.mean(0) - b.mean(0)).abs() < tolerance)


def test_iwae_bound_rises_with_k(model_and_x) -> None:
    model, x = model_and_x
    draws = {k: repeated(model, x, lambda m, xx, k=k: iwae_bound(m, xx, k), r)
             for k, r in ((1, 500), (10, 200), (100, 20))}
    means = {k: d.mean(0) for k, d in draws.items()}
    se = {k: standard_error(d) for k, d in draws.items()}
    for small, large in ((1, 10), (10, 100)):
        noise = N_SE * torch.sqrt(se[small] ** 2 + se[large] ** 2)
        assert torch.all(means[large] >= means[small] - noise), (small, large, means, noise)
    # With this poor posterior the gain from k=1 to k=10 is several nats, far above the noise.
    assert torch.all(means[10] > means[1] + N_SE * torch.sqrt(se[1] ** 2 + se[10] ** 2))


def test_iwae_chunking_does_not_change_the_distribution(model_and_x) -> None:
    model, x = model_and_x
    repeats, k = 40, 30
    small = repeated(model, x, lambda m, xx: iwae_bound(m, xx, k, chunk_size=7), repeats)  # 4 full + 1 partial
    whole = repeated(model, x, lambda m, xx: iwae_bound(m, xx, k, chunk_size=1000), repeats)
    assert torch.isfinite(small).all()
    tolerance = N_SE * torch.sqrt(standard_error(small) ** 2 + standard_error(whole) ** 2)
    assert torch.all((small.mean(0) - whole.mean(0)).abs() < tolerance)


def test_iwae_chunks_combine_exactly(model_and_x, monkeypatch) -> None:
    # With the draws fixed, chunking is only a regrouping of one logsumexp: the values must agree to rounding.
    # Pin eps to a fixed table so that both chunkings see the same k draws.
    model, x = model_and_x
    k = 23
    table = torch.randn(k, *x.shape[:1], model.latent_dim, generator=torch.Generator().manual_seed(7))
    position = {"next": 0}

    def fixed_rsample(loc, log_var, n_samples=1, generator=None):
        start = position["next"]
        position["next"] = start + n_samples
        return loc + torch.exp(0.5 * log_var) * table[start:start + n_samples]

    import vaelib.objectives as objectives

    monkeypatch.setattr(objectives, "rsample", fixed_rsample)
    values = []
    for chunk in (1, 5, 23, 1000):
        position["next"] = 0
        values.append(iwae_bound(model, x, k, chunk_size=chunk))
    for other in values[1:]:
        torch.testing.assert_close(other, values[0], rtol=1e-5, atol=1e-4)


# --- unit conversions ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_dims", [1, 784, 3072])
def test_bits_per_dim_of_uniform_models(num_dims: int) -> None:
    # A discrete model uniform over 256 levels: log p(x) = -D log 256 nats, i.e. exactly 8 bits per dim.
    assert bits_per_dim(-num_dims * math.log(256), num_dims) == pytest.approx(8.0, rel=1e-12)
    # A fair coin per binary pixel: log p = -D log 2, 1 bit per dim.
    assert bits_per_dim(-num_dims * math.log(2), num_dims) == pytest.approx(1.0, rel=1e-12)
    # The uniform density on [0, 1]^D has log density 0; each of the 256 bins of width 1/256 then holds mass
    # 1/256, so on the 256-level scale it is the same 8 bits per dim as the uniform discrete model.
    assert continuous_bits_per_dim(0.0, num_dims) == pytest.approx(8.0, rel=1e-12)
    # Uniform on [0, 1/2]^D: density 2^D, log density D log 2; halving the support saves one bit per dim.
    assert continuous_bits_per_dim(num_dims * math.log(2), num_dims) == pytest.approx(7.0, rel=1e-12)


def test_bits_per_dim_accepts_tensors() -> None:
    nats = torch.tensor([-784 * math.log(256), -784 * math.log(2)], dtype=torch.float64)
    torch.testing.assert_close(bits_per_dim(nats, 784), torch.tensor([8.0, 1.0], dtype=torch.float64))


# --- active units --------------------------------------------------------------------------------------------
def test_active_units_counts_columns_whose_mean_varies() -> None:
    g = torch.Generator().manual_seed(0)
    stds = torch.tensor([0.0, 0.05, 0.2, 1.0, 3.0])  # variances 0, 0.0025, 0.04, 1, 9
    offsets = torch.tensor([5.0, -2.0, 0.0, 1.0, 0.0])  # a constant offset must not count as activity
    means = offsets + stds * torch.randn(4000, 5, generator=g)
    assert active_units(means) == 3  # threshold 0.01: the columns with variance 0.04, 1 and 9
    assert active_units(means, threshold=0.001) == 4  # now the 0.0025 column counts too
    assert active_units(means, threshold=2.0) == 1
    assert active_units(torch.zeros(100, 7)) == 0


# --- likelihoods are proper probabilities --------------------------------------------------------------------
def test_bernoulli_sums_to_one_over_all_binary_images() -> None:
    d = 4
    logits = torch.randn(3, d, generator=torch.Generator().manual_seed(0)) * 3
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)))  # all 2^D binary images
    lik = Bernoulli()
    log_p = torch.stack([lik.log_prob(image.expand(3, d), logits) for image in images])  # (2^D, 3)
    torch.testing.assert_close(torch.logsumexp(log_p, 0), torch.zeros(3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("components", [1, 5])
def test_discretized_logistic_masses_sum_to_one(components: int) -> None:
    lik = DiscretizedLogisticMixture(components)
    g = torch.Generator().manual_seed(components)
    n = 64
    params = torch.randn(n, lik.params_per_dim, generator=g) * 3  # one pixel, many parameter settings
    # log-scales from e^-7.5 (below the clamp at -7) to e^1.5: from a spike on one level to near-flat.
    params[:, -components:] = torch.rand(n, components, generator=g) * 9.0 - 7.5
    levels = torch.arange(256, dtype=torch.uint8).float() / 255.0  # exactly what the data pipeline yields
    x = levels.repeat_interleave(n).unsqueeze(1)  # (256 n, 1): every level under every parameter setting
    log_p = lik.log_prob(x, params.repeat(256, 1)).reshape(256, n)
    assert torch.all(log_p <= 1e-6)
    torch.testing.assert_close(torch.logsumexp(log_p, 0), torch.zeros(n), atol=1e-4, rtol=0)


def test_discretized_logistic_samples_are_grey_levels() -> None:
    lik = DiscretizedLogisticMixture(5)
    params = torch.randn(8, lik.params_per_dim * 10, generator=torch.Generator().manual_seed(0))
    x = lik.sample(params)
    assert x.shape == (8, 10)
    assert torch.all((x >= 0) & (x <= 1))
    torch.testing.assert_close(x * 255, (x * 255).round())


@pytest.mark.parametrize("name", ["gaussian", "gaussian-fixed", "sigma-vae"])
def test_gaussian_densities_integrate_to_one(name: str) -> None:
    lik = make_likelihood(name, decoder_std=0.1).eval()  # sigma-vae: the stored scale, not a batch statistic
    if name == "sigma-vae":
        lik.log_var.fill_(math.log(0.05**2))
    for loc_logit, log_var in ((0.0, math.log(0.1**2)), (2.0, math.log(0.3**2)), (-1.0, -9.0)):
        params = torch.tensor([[loc_logit, log_var]] if lik.params_per_dim == 2 else [[loc_logit]],
                              dtype=torch.float64)
        x = torch.linspace(-4.0, 5.0, 200_001, dtype=torch.float64).unsqueeze(1)  # covers +-10 sigma
        density = torch.exp(lik.log_prob(x, params.expand(len(x), -1)))
        integral = torch.trapezoid(density, x.squeeze(1))
        assert integral.item() == pytest.approx(1.0, abs=1e-4), (name, loc_logit, log_var)


def test_gaussian_log_prob_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(4)
    # log-variances inside the decoder's soft range [-9.2, 2], where no clamping applies
    loc_logits, log_var = torch.randn(3, 6, generator=g), torch.rand(3, 6, generator=g) * 9.0 - 7.0
    x = torch.rand(3, 6, generator=g)
    expected = Normal(torch.sigmoid(loc_logits), torch.exp(0.5 * log_var)).log_prob(x).sum(-1)
    torch.testing.assert_close(Gaussian().log_prob(x, torch.cat([loc_logits, log_var], -1)), expected)
    expected_fixed = Normal(torch.sigmoid(loc_logits), 0.2).log_prob(x).sum(-1)
    torch.testing.assert_close(FixedGaussian(0.2).log_prob(x, loc_logits), expected_fixed)


def test_sigma_vae_uses_the_batch_mse_as_its_variance_in_training() -> None:
    lik = SigmaVAE().train()
    g = torch.Generator().manual_seed(5)
    params, x = torch.randn(4, 10, generator=g), torch.rand(4, 10, generator=g)
    mse = (x - torch.sigmoid(params)).pow(2).mean()
    expected = Normal(torch.sigmoid(params), mse.sqrt()).log_prob(x).sum(-1)
    torch.testing.assert_close(lik.log_prob(x, params), expected)


def test_losses_are_flagged_as_not_likelihoods() -> None:
    assert MSELoss.is_likelihood is False and L1Loss.is_likelihood is False
    for name in ("bernoulli", "gaussian", "gaussian-fixed", "sigma-vae", "discretized-logistic",
                 "discretized-logistic-mixture"):
        assert make_likelihood(name).is_likelihood, name
    assert make_likelihood("discretized-logistic").discrete and not make_likelihood("gaussian").discrete
    with pytest.raises(ValueError, match="'poisson'"):
        make_likelihood("poisson")
