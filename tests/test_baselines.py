"""The paper's baselines (vaelib.methods, hmc, estimators): HMC correctness and step-size tuning, wake-sleep's
split gradients, wake-sleep and Monte Carlo EM training through `fit`, and the marginal-likelihood
estimators against the exact log p(x) of a linear-Gaussian model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from vaelib.config import MCEM_DEFAULTS, ConfigError, RunConfig
from vaelib.estimators import (
    log_marginal_likelihood_hmc_is,
    log_marginal_likelihood_paper,
    log_marginal_likelihood_prior_is,
    marginal_log_likelihood,
)
from vaelib.hmc import adapt_step_size, hmc_sample, posterior_samples
from vaelib.methods import UPDATES, NonFiniteLossError, mcem_update, wake_sleep_terms, wake_sleep_update
from vaelib.models import build_model
from vaelib.toy import LinearGaussian
from vaelib.train import fit, make_optimizer

MEAN = torch.tensor([1.0, -2.0])
COV = torch.tensor([[1.0, 0.6], [0.6, 0.5]])  # correlated, condition number ~14


PRECISION = torch.linalg.inv(COV)


def gaussian() -> torch.distributions.MultivariateNormal:
    return torch.distributions.MultivariateNormal(MEAN, COV)


def gaussian_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; MEAN, COV) up to a constant (all HMC needs), in few small ops: (B,)."""
    d = z - MEAN
    return -0.5 * ((d @ PRECISION) * d).sum(-1)


# HMC runs thousands of ops on tensors of a few hundred numbers: a second thread only adds a synchronization
# per op, which on a busy 2-core machine costs milliseconds each.
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_vae(latent_dim: int = 2, seed: int = 0):
    """A 4x4-pixel Bernoulli VAE (D = 16) with 16 hidden units: fast enough to differentiate by the dozen."""
    torch.manual_seed(seed)
    config = RunConfig(dataset="binarized-mnist", latent_dim=latent_dim, hidden_dim=16, device="cpu")
    return build_model(config, (1, 4, 4)), config


# --- HMC ----------------------------------------------------------------------------------------------------
def test_hmc_leaves_a_gaussian_invariant() -> None:
    """Chains started AT exact draws of N(m, S) must still be exact draws after many transitions. With the
    step size where ~80% of proposals are accepted, a sampler without its Metropolis correction, or with a
    wrong final half-step, moves the variance by > 5 standard errors at this chain count."""
    torch.manual_seed(0)
    n = 10_000
    z = gaussian().sample((n,))
    accepts = []
    for _ in range(20):
        z, accept = hmc_sample(gaussian_log_prob, z, step_size=0.5, n_leapfrog=10)
        accepts.append(accept.mean())
    assert 0.5 < float(torch.stack(accepts).mean()) < 0.99  # rejections happen, so the MH step matters
    var = COV.diagonal()
    mean_err = (z.mean(0) - MEAN) / (var / n).sqrt()
    var_err = (z.var(0) - var) / (var * math.sqrt(2 / (n - 1)))
    cov_se = math.sqrt((COV[0, 0] * COV[1, 1] + COV[0, 1] ** 2) / n)
    cov_err = (torch.cov(z.T)[0, 1] - COV[0, 1]) / cov_se
    assert mean_err.abs().max() < 5, mean_err
    assert var_err.abs().max() < 5, var_err
    assert abs(cov_err) < 5, cov_err


@pytest.mark.parametrize("start", [5.0, 0.01])
def test_step_size_adaptation_reaches_90_percent_acceptance(start: float) -> None:
    torch.manual_seed(1)
    z, step = torch.zeros(500, 2), start
    for _ in range(100):
        z, accept = hmc_sample(gaussian_log_prob, z, step)
        step = adapt_step_size(step, accept)
    frozen = [hmc_sample(gaussian_log_prob, z, step)[1].mean() for _ in range(20)]
    assert 0.85 < float(torch.stack(frozen).mean()) < 0.95, (start, step)


def test_per_chain_step_sizes_adapt_separately() -> None:
    """Two groups of chains with targets of very different widths settle at very different steps."""
    torch.manual_seed(2)
    scale = torch.cat([torch.full((200, 1), 0.01), torch.ones(200, 1)])
    log_prob = lambda z: -0.5 * (z / scale).pow(2).sum(-1)  # noqa: E731
    z, step = torch.zeros(400, 2), torch.full((400, 1), 0.1)
    for _ in range(100):
        z, accept = hmc_sample(log_prob, z, step)
        step = adapt_step_size(step, accept)
    assert step[:200].median() * 20 < step[200:].median()


def test_hmc_rejects_diverging_trajectories() -> None:
    z0 = torch.full((8, 2), 2.0)
    z, accept = hmc_sample(lambda z: -z.pow(4).sum(-1), z0, step_size=50.0)  # energy overflows to NaN
    assert torch.equal(z, z0) and (accept == 0).all()
    with pytest.raises(ValueError, match="n_leapfrog"):
        hmc_sample(lambda z: -z.pow(2).sum(-1), z0, 0.1, n_leapfrog=0)


# --- wake-sleep -----------------------------------------------------------------------------------------
def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}


def test_wake_and_sleep_gradients_reach_disjoint_parameters() -> None:
    model, _ = tiny_vae()
    x = (torch.rand(32, 16) < 0.4).float()

    def phase_grads(which: str) -> dict[str, torch.Tensor | None]:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(3)  # the same draws for every phase
        terms = wake_sleep_terms(model, x)
        loss = {"wake": -terms.wake.mean(), "sleep": -terms.sleep.mean(),
                "both": -(terms.wake.mean() + terms.sleep.mean())}[which]
        loss.backward()
        return _grads(model)

    wake, sleep, both = phase_grads("wake"), phase_grads("sleep"), phase_grads("both")
    for name in wake:
        if name.startswith("encoder."):
            assert wake[name] is None, f"the wake phase reached {name}"
            assert sleep[name] is not None and sleep[name].abs().sum() > 0, name
            torch.testing.assert_close(both[name], sleep[name])
        else:
            assert name.startswith("decoder."), name
            assert sleep[name] is None, f"the sleep phase reached {name}"
            assert wake[name] is not None and wake[name].abs().sum() > 0, name
            torch.testing.assert_close(both[name], wake[name])


def test_wake_sleep_update_contract() -> None:
    model, config = tiny_vae()
    config = config.replace(method="wake-sleep")
    optimizer = make_optimizer(model, config)
    x = (torch.rand(32, 16) < 0.4).float()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sums = wake_sleep_update(model, optimizer, x, config, 1.0)
    assert sums.shape == (4,) and torch.isfinite(sums).all()
    objective, elbo, log_px_z, kl = sums.tolist()
    assert elbo == pytest.approx(log_px_z - kl, rel=1e-5) and kl > 0 and elbo < 0
    assert all(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # both nets moved
    with pytest.raises(ConfigError, match="beta=0.5"):
        wake_sleep_update(model, optimizer, x, config.replace(beta=0.5), 0.5)
    with torch.no_grad():
        model.decoder[0].weight.fill_(math.nan)
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NonFiniteLossError):
        wake_sleep_update(model, optimizer, x, config, 1.0)
    unchanged = [torch.equal(frozen[k], v) for k, v in model.state_dict().items() if k != "decoder.0.weight"]
    assert all(unchanged)  # the guard fires before the optimizer step


def test_baselines_are_registered_with_the_training_loop() -> None:
    assert UPDATES["wake-sleep"] is wake_sleep_update
    assert UPDATES["mcem"] is mcem_update


def test_wake_sleep_training_raises_the_elbo(tiny_config: RunConfig, data_dir: Path, tmp_path: Path) -> None:
    config = tiny_config.replace(method="wake-sleep", epochs=4, optimizer="adagrad", lr=0.05)
    history = fit(config, tmp_path / "ws", data_dir=data_dir, progress=False).history
    assert history[["train_objective", "train_elbo", "test_elbo", "test_kl"]].notna().all().all()
    first, last = history.iloc[0], history.iloc[-1]
    assert last.train_elbo > first.train_elbo + 5.0, history[["epoch", "train_elbo", "test_elbo"]]
    assert last.test_elbo > first.test_elbo + 5.0
    assert last.train_objective > first.train_objective + 5.0


# --- Monte Carlo EM --------------------------------------------------------------------------------------
def test_mcem_trains_the_decoder_only_and_raises_log_px(tiny_config: RunConfig, data_dir: Path,
                                                         tmp_path: Path) -> None:
    config = tiny_config.replace(method="mcem", latent_dim=2, hidden_dim=32, epochs=3, train_size=200,
                                 optimizer="adagrad", lr=0.05, extra={"hmc_transitions": 3})
    torch.manual_seed(config.seed)
    untrained = build_model(config, (1, 28, 28))  # fit seeds the same way, so this is its starting point
    run = fit(config, tmp_path / "mcem", data_dir=data_dir, progress=False)
    history = run.history
    # No recognition model is trained, so the ELBO columns are undefined; the objective is log p(x, z).
    assert history[["train_elbo", "train_log_px_z", "train_kl", "test_elbo"]].isna().all().all()
    assert history.train_objective.iloc[-1] > history.train_objective.iloc[0] + 20.0, history.train_objective
    for name, p in run.model.encoder.state_dict().items():
        torch.testing.assert_close(p, untrained.encoder.state_dict()[name], rtol=0, atol=0)
    x = next(run.load_data(data_dir).split_batches("train", 50))
    torch.manual_seed(4)
    trained_ll = log_marginal_likelihood_prior_is(run.model, x, k=500).mean()
    untrained_ll = log_marginal_likelihood_prior_is(untrained, x, k=500).mean()
    assert trained_ll > untrained_ll + 50.0, (float(trained_ll), float(untrained_ll))


def test_mcem_step_size_survives_resume(tiny_config: RunConfig, data_dir: Path, tmp_path: Path) -> None:
    config = tiny_config.replace(method="mcem", latent_dim=2, hidden_dim=16, epochs=2, train_size=100,
                                 test_size=50, extra={"hmc_transitions": 1, "sir_proposals": 5})
    whole = fit(config, tmp_path / "whole", data_dir=data_dir, progress=False)
    fit(config.replace(epochs=1), tmp_path / "parts", data_dir=data_dir, progress=False)
    resumed = fit(config, tmp_path / "parts", resume=True, data_dir=data_dir, progress=False)
    for key, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    steps = [torch.load(run.path / "checkpoint.pt", weights_only=False)["optimizer"]["param_groups"][0]
             ["hmc_step_size"] for run in (whole, resumed)]
    assert steps[0] == steps[1] and steps[0] != MCEM_DEFAULTS["hmc_step_size"]


def test_mcem_rejects_bad_settings_when_the_config_is_made() -> None:
    config = RunConfig(method="mcem", latent_dim=2, hidden_dim=16, device="cpu")
    assert config.mcem_settings()["mcem_updates"] == 5 and config.mcem_settings()["hmc_leapfrog"] == 10
    # Every bad MCEM knob is refused by RunConfig itself, before any data is read or any step is taken.
    with pytest.raises(ConfigError, match="hmc_leapfrog"):
        config.replace(extra={"hmc_leapfrog": 0})
    with pytest.raises(ConfigError, match="hmc_init"):
        config.replace(extra={"hmc_init": "encoder"})
    with pytest.raises(ConfigError, match="hmc_step_size"):
        config.replace(extra={"hmc_step_size": -1.0})
    with pytest.raises(ConfigError, match="did you mean 'hmc_leapfrog'"):
        config.replace(extra={"hmc_leapfog": 20})  # a typo would otherwise be a silent label
    with pytest.raises(ConfigError, match="no meaning for method='aevb'"):
        RunConfig(extra={"hmc_transitions": 3})
    # Knobs of the AEVB objective are refused when the config is made, before any data is read.
    with pytest.raises(ConfigError, match="n_samples=5"):
        config.replace(n_samples=5)
    with pytest.raises(ConfigError, match="beta=2.0"):
        RunConfig(method="wake-sleep", beta=2.0)


# --- marginal likelihood on an exact model -----------------------------------------------------------------
@pytest.fixture(scope="module")
def linear_gaussian() -> tuple[LinearGaussian, torch.Tensor, torch.Tensor]:
    """A correlated-posterior linear-Gaussian model (D = 6, Z = 2), 20 datapoints and their exact log p(x)."""
    model = LinearGaussian(data_dim=6, latent_dim=2, sigma=0.5, orthogonal=False, seed=0)
    x = model.sample_x(20, torch.Generator().manual_seed(0))
    return model, x, model.log_marginal(x).detach()


def test_hmc_posterior_samples_match_the_exact_posterior(linear_gaussian) -> None:
    model, x, _ = linear_gaussian
    torch.manual_seed(5)
    samples = posterior_samples(model, x, n_samples=400, n_chains=4, n_burnin=50)
    mean, cov = model.exact_posterior(x)
    assert samples.z.shape == (400, 20, 2) and 0.8 < samples.accept_rate < 0.97
    # ~400 draws with some autocorrelation: the mean's error is well under a tenth of a posterior std.
    err = (samples.z.mean(0) - mean.detach()) / cov.diagonal().detach().sqrt()
    assert err.abs().max() < 0.35, err
    var_ratio = samples.z.var(0).mean(0) / cov.diagonal().detach()
    assert ((var_ratio > 0.85) & (var_ratio < 1.15)).all(), var_ratio


@pytest.mark.parametrize("estimator, kwargs, tol", [
    ("prior-is", {"k": 100_000, "chunk_size": 20_000}, 0.25),  # the posterior is ~1/20 of the prior's area
    ("hmc-is", {"k": 1000, "n_posterior_samples": 100}, 0.06),
    ("paper", {"n_posterior_samples": 200, "n_chains": 4}, 0.25),  # harmonic-mean type: noisier
])
def test_marginal_likelihood_estimators_match_the_exact_value(linear_gaussian, estimator: str, kwargs: dict,
                                                              tol: float) -> None:
    """Within `tol` nats of the exact log p(x) at every one of 20 points, and unbiased to 0.05 nats on
    average. Dropping q's normalizer or p(z) from a weight would be off by nats."""
    model, x, exact = linear_gaussian
    torch.manual_seed(6)
    values = marginal_log_likelihood(model, x.split(10), estimator, progress=False, **kwargs)
    assert values.shape == (20,) and torch.isfinite(values).all()
    error = values - exact
    assert error.abs().max() < tol and abs(error.mean()) < 0.05, error


def test_estimators_reject_too_few_samples(linear_gaussian) -> None:
    model, x, _ = linear_gaussian
    with pytest.raises(ValueError, match="estimator='harmonic'"):
        marginal_log_likelihood(model, [x], "harmonic", progress=False)
    with pytest.raises(ValueError, match="n_posterior_samples=3"):
        log_marginal_likelihood_hmc_is(model, x, n_posterior_samples=3)
    with pytest.raises(ValueError, match="n_posterior_samples=6"):
        log_marginal_likelihood_paper(model, x, n_posterior_samples=6)
