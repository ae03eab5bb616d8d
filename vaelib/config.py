"""RunConfig: every knob of a training run, validated up front and hashed into a run directory name.

One source for each parameter: a profile YAML or a notebook's parameters cell sets it, `RunConfig` declares
its default and checks it. Validation happens before any data is read or any weight is allocated, so a bad
value costs nothing but a clear message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

METHODS = ("aevb", "wake-sleep", "mcem")
DATASETS = ("mnist", "binarized-mnist", "cifar10", "freyface")
ARCHITECTURES = ("mlp", "conv")
LIKELIHOODS = (
    "bernoulli",
    "gaussian",
    "gaussian-fixed",
    "sigma-vae",
    "mse",
    "l1",
    "discretized-logistic",
    "discretized-logistic-mixture",
)
ACTIVATIONS = ("tanh", "relu", "elu", "softplus")
OPTIMIZERS = ("adagrad", "adam")
ESTIMATORS = ("A", "B", "iwae")
LR_SCHEDULES = ("constant", "cosine")
EVAL_SCHEDULES = ("every", "log")

# Defaults that depend on the data set; "auto" fields resolve to these.
_DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist": {"architecture": "mlp", "likelihood": "bernoulli", "hidden_dim": 500},
    "binarized-mnist": {"architecture": "mlp", "likelihood": "bernoulli", "hidden_dim": 500},
    "freyface": {"architecture": "mlp", "likelihood": "gaussian", "hidden_dim": 200},
    "cifar10": {"architecture": "conv", "likelihood": "discretized-logistic", "hidden_dim": 16},
}

# Knobs that change how a run is executed but not what it computes: left out of the hash, so the same
# experiment found on a GPU machine and on a laptop shares one run directory name.
_RUNTIME_FIELDS = frozenset({"device", "checkpoint_every"})


class ConfigError(ValueError):
    """A run parameter has a value that is not allowed; the message names the value and the allowed ones."""


@dataclass
class RunConfig:
    """Everything that defines one AEVB training run.

    Units: `lr` is the optimizer's global step size; `batch_size` is M in the paper (datapoints per
    minibatch); `n_samples` is L (samples of z per datapoint) for estimators A and B, and k for "iwae".
    `train_size`/`test_size` take the first N examples of each split (None: all of it).
    """

    dataset: str = "binarized-mnist"
    method: str = "aevb"
    latent_dim: int = 20
    architecture: str = "auto"
    likelihood: str = "auto"
    hidden_dim: int | None = None  # MLP hidden units, or the conv net's base channel count
    hidden_layers: int = 1  # MLP hidden layers (the paper: 1)
    res_blocks: int = 0  # conv only: residual blocks after each of the two resolution stages
    activation: str = "auto"  # auto: tanh for the MLP (the paper's), elu for the conv net
    decoder_std: float = 0.1  # only for the fixed-variance Gaussian decoder, on the [0, 1] pixel scale
    mixture_components: int = 5  # only for discretized-logistic-mixture
    estimator: str = "B"
    n_samples: int = 1
    beta: float = 1.0
    kl_warmup_epochs: int = 0
    epochs: int = 10
    batch_size: int = 100
    optimizer: str = "adagrad"
    lr: float = 0.02
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    init_std: float | None = None  # None: PyTorch's default init; the paper drew weights from N(0, 0.01)
    train_size: int | None = None
    test_size: int | None = None
    eval_schedule: str = "every"
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 1
    extra: dict[str, Any] = field(default_factory=dict)  # free-form labels that also key the run

    def __post_init__(self) -> None:
        self.validate()
        defaults = _DATASET_DEFAULTS[self.dataset]
        if self.architecture == "auto":
            self.architecture = defaults["architecture"]
        if self.likelihood == "auto":
            self.likelihood = defaults["likelihood"]
        if self.hidden_dim is None:
            self.hidden_dim = defaults["hidden_dim"] if self.architecture == defaults["architecture"] else (
                32 if self.architecture == "conv" else 500)
        if self.activation == "auto":
            self.activation = "tanh" if self.architecture == "mlp" else "elu"
        self._validate_combination()

    def validate(self) -> None:
        """Raise ConfigError for the first value that is not allowed."""
        _choice("dataset", self.dataset, DATASETS)
        _choice("method", self.method, METHODS)
        _choice("architecture", self.architecture, ARCHITECTURES + ("auto",))
        _choice("likelihood", self.likelihood, LIKELIHOODS + ("auto",))
        _choice("activation", self.activation, ACTIVATIONS + ("auto",))
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("estimator", self.estimator, ESTIMATORS)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("eval_schedule", self.eval_schedule, EVAL_SCHEDULES)
        _positive_int("latent_dim", self.latent_dim)
        _positive_int("hidden_layers", self.hidden_layers)
        _positive_int("n_samples", self.n_samples)
        _positive_int("batch_size", self.batch_size)
        _positive_int("mixture_components", self.mixture_components)
        _positive_int("checkpoint_every", self.checkpoint_every)
        _non_negative_int("epochs", self.epochs)
        _non_negative_int("kl_warmup_epochs", self.kl_warmup_epochs)
        _non_negative_int("res_blocks", self.res_blocks)
        _non_negative_int("seed", self.seed)
        if self.hidden_dim is not None:
            _positive_int("hidden_dim", self.hidden_dim)
        for name in ("train_size", "test_size"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        _positive_float("lr", self.lr)
        _positive_float("decoder_std", self.decoder_std)
        _non_negative_float("beta", self.beta)
        _non_negative_float("weight_decay", self.weight_decay)
        if self.init_std is not None:
            _positive_float("init_std", self.init_std)
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "mps") or self.device.startswith("cuda")
        ):
            raise ConfigError(
                f"device={self.device!r} is not allowed; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
            )

    def _validate_combination(self) -> None:
        if self.likelihood == "bernoulli" and self.dataset in ("cifar10", "freyface"):
            raise ConfigError(
                f"likelihood='bernoulli' does not fit dataset={self.dataset!r} (grey levels, not bits); "
                "use 'gaussian', 'discretized-logistic' or another likelihood from "
                f"{', '.join(LIKELIHOODS)}"
            )
        if self.dataset == "binarized-mnist" and self.likelihood != "bernoulli":
            raise ConfigError(
                f"likelihood={self.likelihood!r} does not fit binary data (dataset='binarized-mnist'); "
                "use likelihood='bernoulli', or dataset='mnist' for grey levels"
            )
        if self.method != "aevb":
            # These knobs shape the AEVB objective only; a baseline run keyed by one would be keyed by a
            # setting that did nothing.
            fixed = {"beta": 1.0, "kl_warmup_epochs": 0, "estimator": "B"}
            if self.method == "mcem":
                fixed["n_samples"] = 1
            bad = [f"{k}={getattr(self, k)!r}" for k, v in fixed.items() if getattr(self, k) != v]
            if bad:
                allowed = ", ".join(f"{k}={v!r}" for k, v in fixed.items())
                raise ConfigError(f"{', '.join(bad)} has no meaning for method={self.method!r}; use {allowed}")
        if self.estimator == "iwae" and self.beta != 1.0:
            raise ConfigError(f"beta={self.beta} is not allowed with estimator='iwae'; use beta=1.0")

    # --- identity -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown run parameter(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def hash(self) -> str:
        """A stable 12-hex-digit digest of everything that changes the result (not device or I/O knobs)."""
        payload = {k: v for k, v in self.to_dict().items() if k not in _RUNTIME_FIELDS}
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def run_name(self) -> str:
        return f"{self.dataset}-z{self.latent_dim}-{self.likelihood}-{self.hash()}"

    def replace(self, **changes: Any) -> RunConfig:
        return RunConfig.from_dict({**self.to_dict(), **changes})


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of: {', '.join(allowed)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(name: str, value: Any) -> None:
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{name}={value!r} is not allowed; it must be an integer >= 1")


def _non_negative_int(name: str, value: Any) -> None:
    if not _is_int(value) or value < 0:
        raise ConfigError(f"{name}={value!r} is not allowed; it must be an integer >= 0")


def _positive_float(name: str, value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise ConfigError(f"{name}={value!r} is not allowed; it must be a number > 0")


def _non_negative_float(name: str, value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
        raise ConfigError(f"{name}={value!r} is not allowed; it must be a number >= 0")
