"""vaelib.evaluate, the path that makes the headline numbers: bits/dim by each likelihood's rule, the MCEM
branch, `max_examples`, the seeded stream and its cache, and log p(x) against independent estimators."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from vaelib import evaluate
from vaelib.config import RunConfig
from vaelib.data import load_dataset
from vaelib.estimators import log_marginal_likelihood_prior_is
from vaelib.models import build_model
from vaelib.runs import HISTORY_COLUMNS, Run
from vaelib.train import fit


def _run(config: RunConfig, path: Path, seed: int = 0) -> Run:
    """An untrained model wrapped as a Run: evaluate's rules do not depend on training."""
    torch.manual_seed(seed)
    return Run(path, config, build_model(config, (1, 28, 28)).eval(), pd.DataFrame(columns=HISTORY_COLUMNS))


@pytest.fixture(scope="module")
def grey(data_dir: Path):
    return load_dataset("mnist", data_dir, train_size=100, test_size=40)


@pytest.fixture(scope="module")
def binary(data_dir: Path):
    return load_dataset("binarized-mnist", data_dir, train_size=100, test_size=40)


@pytest.mark.parametrize("likelihood, rule", [
    ("discretized-logistic", "mass"),  # a mass over the 256 levels: -log p / (D ln 2)
    ("gaussian", "density"),  # a density on [0, 1]^D, moved to the 0-255 scale
    ("sigma-vae", "density"),
    ("mse", "loss"),  # the Gaussian with sigma^2 = 1/2 that the loss implies, then the density rule
])
def test_bits_per_dim_follow_the_likelihoods_rule(likelihood: str, rule: str, grey, tmp_path: Path) -> None:
    config = RunConfig(dataset="mnist", likelihood=likelihood, latent_dim=2, hidden_dim=16, device="cpu")
    result = evaluate.evaluate(_run(config, tmp_path), grey, iw_samples=3, progress=False)
    d, log_px = 784, result["log_likelihood"]
    expected = {"mass": -log_px / (d * math.log(2)),
                "density": -(log_px - d * math.log(256)) / (d * math.log(2)),
                "loss": -(log_px - 392 * math.log(math.pi) - d * math.log(256)) / (d * math.log(2))}[rule]
    assert result["bits_per_dim"] == pytest.approx(expected, rel=1e-9)
    assert ("note_loss" in result) == (rule == "loss")


def test_bits_per_dim_of_binary_pixels_and_of_the_elbo_without_sampling(binary, tmp_path: Path) -> None:
    config = RunConfig(latent_dim=2, hidden_dim=16, device="cpu")
    result = evaluate.evaluate(_run(config, tmp_path), binary, iw_samples=0, progress=False)
    assert math.isnan(result["log_likelihood"])  # not computed, not zero
    assert result["bits_per_dim"] == pytest.approx(-result["elbo"] / (784 * math.log(2)), rel=1e-9)
    assert result["nats_kind"] == "a mass over binary pixels"


def test_max_examples_evaluates_exactly_the_first_examples(binary, tmp_path: Path) -> None:
    config = RunConfig(latent_dim=2, hidden_dim=16, device="cpu")
    run = _run(config, tmp_path)
    part = evaluate.evaluate(run, binary, iw_samples=0, max_examples=15, progress=False)
    assert part["n_examples"] == 15 and "first 15" in part["note"]
    # The same 15 images evaluated directly, as one batch, with the same noise stream.
    x = next(binary.test_batches(15))
    direct = evaluate.evaluate_elbo(run.model, [x])
    assert part["elbo"] == pytest.approx(direct["elbo"], rel=1e-6)
    whole = evaluate.evaluate(run, binary, iw_samples=0, progress=False)
    assert whole["n_examples"] == 40 and whole["elbo"] != part["elbo"]


@pytest.mark.parametrize("bad, name", [({"iw_samples": -1}, "iw_samples=-1"), ({"max_examples": 0}, "max_examples=0")])
def test_bad_arguments_are_refused_before_any_work(bad, name, binary, tmp_path: Path) -> None:
    run = _run(RunConfig(latent_dim=2, hidden_dim=16, device="cpu"), tmp_path)
    with pytest.raises(ValueError, match=name):
        evaluate.evaluate(run, binary, **{"iw_samples": 0, **bad}, progress=False)


def test_importance_sampling_agrees_with_prior_sampling_and_bounds_the_elbo(binary, tmp_path: Path) -> None:
    # With two latent dimensions the prior is a good enough proposal that 20,000 draws pin log p(x) down:
    # an estimator independent of the encoder against which the encoder's importance sampling is checked.
    config = RunConfig(latent_dim=2, hidden_dim=16, device="cpu")
    run = _run(config, tmp_path)
    result = evaluate.evaluate(run, binary, iw_samples=500, max_examples=20, progress=False)
    x = next(binary.test_batches(20))
    torch.manual_seed(1)
    reference = float(log_marginal_likelihood_prior_is(run.model, x, k=20_000).mean())
    assert result["log_likelihood"] == pytest.approx(reference, abs=0.05)
    assert result["log_likelihood"] > result["elbo"]
    assert result["log_likelihood_sem"] > 0


def test_mcem_runs_get_the_hmc_proposal_and_no_elbo(data_dir: Path, tmp_path: Path) -> None:
    config = RunConfig(method="mcem", latent_dim=2, hidden_dim=16, epochs=1, batch_size=50, train_size=100,
                       test_size=20, device="cpu", extra={"hmc_transitions": 1, "sir_proposals": 5})
    run = fit(config, tmp_path / "mcem", data_dir=data_dir, progress=False)
    data = run.load_data(data_dir)
    result = evaluate.evaluate(run, data, iw_samples=50, progress=False)
    assert all(math.isnan(result[k]) for k in ("elbo", "kl", "log_px_z", "active_units"))
    assert "HMC" in result["log_likelihood_estimator"] and math.isfinite(result["log_likelihood"])
    torch.manual_seed(2)
    reference = float(log_marginal_likelihood_prior_is(run.model, next(data.test_batches(20)), k=20_000).mean())
    assert result["log_likelihood"] == pytest.approx(reference, abs=0.5)


def test_the_evaluation_stream_is_fixed_and_leaves_the_callers_alone(binary, tmp_path: Path) -> None:
    run = _run(RunConfig(latent_dim=2, hidden_dim=16, device="cpu"), tmp_path)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = evaluate.evaluate_cached(run, binary, iw_samples=5, progress=False)
    assert torch.equal(torch.get_rng_state(), before), "evaluating moved the caller's random stream"
    (cache,) = tmp_path.glob("eval-*.json")
    cache.unlink()  # recompute: the same stream gives the same number
    torch.manual_seed(999)
    again = evaluate.evaluate_cached(run, binary, iw_samples=5, progress=False)
    assert again["log_likelihood"] == first["log_likelihood"]


def test_unit_statistics(binary, tmp_path: Path) -> None:
    run = _run(RunConfig(latent_dim=4, hidden_dim=16, device="cpu"), tmp_path)
    body = run.model.encoder.body[-1]
    with torch.no_grad():
        body.weight[[0, 4]] = 0.0  # unit 0's mean and log-variance no longer depend on x
        body.bias[[0, 4]] = 0.0  # ... and q(z_0|x) = N(0, 1): no KL
    kl = evaluate.kl_per_dimension(run.model, binary)
    activity = evaluate.unit_activity(run.model, binary)
    assert kl[0] == pytest.approx(0.0, abs=1e-7) and (kl[1:] > 0).all()
    assert activity[0] == pytest.approx(0.0, abs=1e-12)
    means = evaluate.posterior_means(run.model, binary.test_batches(40))
    assert evaluate.active_units(means, threshold=0.0) == 3
