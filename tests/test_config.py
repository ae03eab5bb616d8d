"""RunConfig (vaelib.config): every bad value is refused with a message that names it and the allowed values,
and the hash keys runs by what changes their result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vaelib.config import (
    ACTIVATIONS,
    ARCHITECTURES,
    DATASETS,
    ESTIMATORS,
    EVAL_SCHEDULES,
    LIKELIHOODS,
    LR_SCHEDULES,
    METHODS,
    OPTIMIZERS,
    ConfigError,
    RunConfig,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("field, value, allowed", [
    ("dataset", "svhn", DATASETS),
    ("method", "em", METHODS),
    ("optimizer", "sgd", OPTIMIZERS),
    ("estimator", "C", ESTIMATORS),
    ("likelihood", "poisson", LIKELIHOODS),
    ("architecture", "resnet", ARCHITECTURES),
    ("activation", "gelu", ACTIVATIONS),
    ("lr_schedule", "step", LR_SCHEDULES),
    ("eval_schedule", "never", EVAL_SCHEDULES),
])
def test_unknown_choice_names_the_value_and_the_allowed_ones(field: str, value: str, allowed: tuple) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig(**{field: value})
    message = str(info.value)
    assert field in message and repr(value) in message
    for choice in allowed:
        assert choice in message


@pytest.mark.parametrize("field, value, rule", [
    ("latent_dim", 0, ">= 1"),
    ("latent_dim", -3, ">= 1"),
    ("latent_dim", 2.5, ">= 1"),
    ("latent_dim", True, ">= 1"),
    ("hidden_dim", 0, ">= 1"),
    ("hidden_layers", 0, ">= 1"),
    ("batch_size", 0, ">= 1"),
    ("n_samples", 0, ">= 1"),
    ("train_size", 0, ">= 1"),
    ("test_size", -5, ">= 1"),
    ("epochs", -1, ">= 0"),
    ("kl_warmup_epochs", -2, ">= 0"),
    ("seed", -1, ">= 0"),
    ("lr", -1.0, "> 0"),
    ("lr", 0.0, "> 0"),
    ("lr", float("nan"), "> 0"),
    ("lr", "0.01", "> 0"),
    ("decoder_std", 0.0, "> 0"),
    ("init_std", -0.01, "> 0"),
    ("beta", -0.1, ">= 0"),
    ("weight_decay", -1e-4, ">= 0"),
])
def test_bad_numbers_name_the_value_and_the_rule(field: str, value, rule: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig(**{field: value})
    message = str(info.value)
    assert f"{field}={value!r}" in message and rule in message


def test_bad_device_names_the_allowed_devices() -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig(device="tpu")
    assert "'tpu'" in str(info.value)
    for device in ("auto", "cpu", "cuda", "mps"):
        assert device in str(info.value)


@pytest.mark.parametrize("changes, names", [
    ({"dataset": "cifar10", "likelihood": "bernoulli"}, ["'bernoulli'", "'cifar10'", "discretized-logistic"]),
    ({"dataset": "freyface", "likelihood": "bernoulli"}, ["'bernoulli'", "'freyface'", "gaussian"]),
    ({"dataset": "binarized-mnist", "likelihood": "gaussian"}, ["'gaussian'", "'binarized-mnist'", "bernoulli"]),
    ({"estimator": "iwae", "beta": 0.5}, ["beta=0.5", "iwae"]),
])
def test_combinations_that_do_not_fit_are_refused(changes: dict, names: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig(**changes)
    for name in names:
        assert name in str(info.value)


def test_auto_fields_resolve_per_dataset() -> None:
    frey = RunConfig(dataset="freyface")
    assert (frey.likelihood, frey.architecture, frey.hidden_dim, frey.activation) == ("gaussian", "mlp", 200, "tanh")
    cifar = RunConfig(dataset="cifar10")
    assert (cifar.likelihood, cifar.architecture, cifar.activation) == ("discretized-logistic", "conv", "elu")
    # Spelling out what "auto" resolves to is the same experiment.
    assert RunConfig(dataset="freyface", likelihood="gaussian", hidden_dim=200).hash() == frey.hash()


def test_from_dict_refuses_unknown_keys_and_round_trips() -> None:
    with pytest.raises(ConfigError, match="latent_dims"):
        RunConfig.from_dict({"latent_dims": 3})
    config = RunConfig(latent_dim=7, extra={"figure": "2"})
    again = RunConfig.from_dict(config.to_dict())
    assert again == config and again.hash() == config.hash()
    with pytest.raises(ConfigError, match="lr=-1"):
        config.replace(lr=-1)


def test_hash_is_stable_across_instances_and_processes() -> None:
    config = RunConfig(latent_dim=3, lr=0.01, extra={"b": 1, "a": 2})
    assert config.hash() == RunConfig(latent_dim=3, lr=0.01, extra={"a": 2, "b": 1}).hash()
    assert len(config.hash()) == 12 and int(config.hash(), 16) >= 0
    assert config.hash() in config.run_name() and config.run_name().startswith("binarized-mnist-z3-")
    code = ("from vaelib.config import RunConfig; "
            "print(RunConfig(latent_dim=3, lr=0.01, extra={'b': 1, 'a': 2}).hash())")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == config.hash()


@pytest.mark.parametrize("changes", [
    {"latent_dim": 21}, {"lr": 0.021}, {"seed": 1}, {"estimator": "A"}, {"epochs": 11}, {"batch_size": 50},
    {"optimizer": "adam"}, {"hidden_dim": 400}, {"n_samples": 2}, {"beta": 0.5}, {"train_size": 1000},
    {"dataset": "mnist"}, {"method": "wake-sleep"}, {"init_std": 0.01}, {"extra": {"note": "x"}},
])
def test_hash_changes_with_every_result_changing_field(changes: dict) -> None:
    assert RunConfig().replace(**changes).hash() != RunConfig().hash()


@pytest.mark.parametrize("changes", [{"device": "cpu"}, {"device": "cuda:1"}, {"checkpoint_every": 5}])
def test_hash_ignores_runtime_fields(changes: dict) -> None:
    assert RunConfig().replace(**changes).hash() == RunConfig().hash()
