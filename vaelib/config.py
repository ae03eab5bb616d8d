"""RunConfig: every knob of a training run, validated up front and hashed into a run directory name.

One source for each parameter: a profile YAML or a notebook's parameters cell sets it, `RunConfig` declares
its default and checks it. Validation happens before any data is read or any weight is allocated, so a bad
value costs nothing but a clear message. The validators of counts and numbers below (`check_int`,
`check_number`, `check_choice`) are the package's only ones; every module that checks an argument uses them.

The run's key (`RunConfig.hash`) covers every field that changes the result and `CODE_VERSION`, the version
of the code that computes it, so a cache never hands back a run that the current code would not produce.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# The version of the code that determines a run's numbers. It is part of every run's key and is written
# into its config.json, so a run cached by other code is never loaded as if it were current (vaelib.runs).
# Bump it whenever a change alters what a run or an evaluation computes: a model (layers, initialization,
# LOG_VAR_BOUND), a likelihood, an objective or SGVB estimator, the data protocol (binarization, splits,
# subsets, scaling), the training step or the optimizer's setup, a method's update (AEVB, wake-sleep,
# MCEM and its HMC), a log p(x) estimator, or the evaluation's seeds. Runs from before versions existed
# (no "code_version" in config.json) count as version 0.
# History: 1, the first versioned code; 2, the paper MLP's AEVB step on the CPU computed without autograd
# (vaelib.methods.fast_mlp): the same update, rounded differently in float32, so a run's digits move.
CODE_VERSION = 2

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
# How tables, legends and sentences name the data sets and methods.
DATASET_LABELS = {"binarized-mnist": "MNIST", "mnist": "MNIST", "freyface": "Frey Face", "cifar10": "CIFAR-10"}
METHOD_LABELS = {"aevb": "AEVB", "wake-sleep": "Wake-Sleep", "mcem": "MCEM"}

# Defaults that depend on the data set; "auto" fields resolve to these.
_DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist": {"architecture": "mlp", "likelihood": "bernoulli", "hidden_dim": 500},
    "binarized-mnist": {"architecture": "mlp", "likelihood": "bernoulli", "hidden_dim": 500},
    "freyface": {"architecture": "mlp", "likelihood": "gaussian", "hidden_dim": 200},
    "cifar10": {"architecture": "conv", "likelihood": "discretized-logistic", "hidden_dim": 16},
}

# Knobs that change how a run is executed but not what it computes: left out of the hash, so the same
# experiment found on a GPU machine and on a laptop shares one run directory name.
RUNTIME_FIELDS = frozenset({"device", "checkpoint_every"})
# What may differ between a run directory's saved config and the config that resumes it: the runtime knobs
# and the length of training. Anything else would mix two experiments in one directory.
RESUMABLE_FIELDS = RUNTIME_FIELDS | {"epochs"}

# Monte Carlo EM's knobs (Kingma & Welling 2013, Sec. 5), set through `RunConfig.extra` with these keys.
MCEM_DEFAULTS: dict[str, Any] = {
    "hmc_leapfrog": 10,  # leapfrog steps per HMC transition (the paper's 10)
    "hmc_transitions": 5,  # HMC transitions per minibatch before the M-step (the paper does not say)
    "mcem_updates": 5,  # weight updates per HMC sample (the paper's 5)
    "hmc_init": "sir",  # how each minibatch's chains start: "sir" (prior_resample) or "prior"
    "sir_proposals": 30,  # prior draws per chain start; 30 + 5 transitions get within ~2 nats of p(z|x)
    "hmc_step_size": 0.05,  # the first step size; then tuned to 90% acceptance
}


# One line of help per field: `python -m vaelib train --help` is generated from these.
FIELD_HELP: dict[str, str] = {
    "dataset": "data set: " + ", ".join(DATASETS),
    "method": "training method: aevb (the paper's), wake-sleep or mcem (its baselines)",
    "latent_dim": "Nz, latent dimensions",
    "architecture": "auto (mlp for MNIST and Frey Face, conv for CIFAR-10), mlp or conv",
    "likelihood": "decoder p(x|z): auto or one of " + ", ".join(LIKELIHOODS),
    "hidden_dim": "MLP hidden units, or the conv net's base channels (auto: 500 MNIST, 200 Frey Face, 16 CIFAR)",
    "hidden_layers": "MLP hidden layers in encoder and decoder (the paper: 1)",
    "res_blocks": "conv only: residual blocks after each resolution stage",
    "activation": "auto (tanh for the MLP, elu for conv) or one of " + ", ".join(ACTIVATIONS),
    "decoder_std": "gaussian-fixed only: the decoder's standard deviation on the [0, 1] pixel scale",
    "mixture_components": "discretized-logistic-mixture only: logistic components per pixel",
    "estimator": "SGVB estimator A or B (eqs. 6, 7), or iwae (the k-sample importance-weighted bound)",
    "n_samples": "L, samples of z per datapoint (k for iwae)",
    "beta": "weight on the KL term (1: the ELBO)",
    "kl_warmup_epochs": "ramp the KL weight from 0 to beta over this many epochs",
    "epochs": "passes over the training set",
    "batch_size": "M, datapoints per minibatch",
    "optimizer": "adagrad (the paper's) or adam",
    "lr": "the optimizer's global step size",
    "lr_schedule": "constant, or cosine (decay to 0 over the run)",
    "weight_decay": "L2 weight decay (1/N is the paper's N(0, I) prior on the parameters)",
    "init_std": "draw every weight from N(0, init_std^2), biases 0 (the paper: 0.01); unset: PyTorch's init",
    "train_size": "use the first N training examples (unset: all)",
    "test_size": "use the first N test examples (unset: all)",
    "eval_schedule": "test ELBO every epoch, or log: 5 points per decade of samples seen",
    "seed": "random seed of the initialization, the data order and the training noise",
    "device": "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps",
    "checkpoint_every": "epochs between checkpoints",
    "extra": "labels that also key the run, and MCEM settings: JSON, e.g. '{\"hmc_leapfrog\": 20}'",
}


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
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("method", self.method, METHODS)
        check_choice("architecture", self.architecture, ARCHITECTURES + ("auto",))
        check_choice("likelihood", self.likelihood, LIKELIHOODS + ("auto",))
        check_choice("activation", self.activation, ACTIVATIONS + ("auto",))
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("estimator", self.estimator, ESTIMATORS)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice("eval_schedule", self.eval_schedule, EVAL_SCHEDULES)
        for name in ("latent_dim", "hidden_layers", "n_samples", "batch_size", "mixture_components",
                     "checkpoint_every"):
            check_int(name, getattr(self, name), 1)
        for name in ("epochs", "kl_warmup_epochs", "res_blocks", "seed"):
            check_int(name, getattr(self, name), 0)
        for name in ("hidden_dim", "train_size", "test_size"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1)
        check_number("lr", self.lr, 0, strict=True)
        check_number("decoder_std", self.decoder_std, 0, strict=True)
        check_number("beta", self.beta, 0)
        check_number("weight_decay", self.weight_decay, 0)
        if self.init_std is not None:
            check_number("init_std", self.init_std, 0, strict=True)
        if not isinstance(self.extra, dict):
            raise ConfigError(f"extra={self.extra!r} is not allowed; it must be a dict of labels (or MCEM settings)")
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
        mcem_keys = [k for k in self.extra if k in MCEM_DEFAULTS]
        if self.method != "mcem" and mcem_keys:
            raise ConfigError(f"extra[{mcem_keys[0]!r}] is a Monte Carlo EM setting and has no meaning for "
                              f"method={self.method!r}; drop it, or use method='mcem'")
        if self.method == "mcem":
            self.mcem_settings()  # every MCEM knob checked now, not on the first training step

    def mcem_settings(self) -> dict[str, Any]:
        """MCEM's knobs: MCEM_DEFAULTS overridden by `extra` (same keys). ConfigError for a bad value, or for
        an `extra` key that is a near-miss of an MCEM key (a typo would otherwise become a silent label)."""
        for key in self.extra:
            close = difflib.get_close_matches(key, MCEM_DEFAULTS, n=1, cutoff=0.8)
            if key not in MCEM_DEFAULTS and close:
                raise ConfigError(f"extra[{key!r}] is not an MCEM setting; did you mean {close[0]!r}? The settings "
                                  f"are: {', '.join(MCEM_DEFAULTS)}")
        settings = {k: self.extra.get(k, v) for k, v in MCEM_DEFAULTS.items()}
        for key in ("hmc_leapfrog", "hmc_transitions", "mcem_updates", "sir_proposals"):
            check_int(f"extra[{key!r}]", settings[key], 1)
        check_choice("extra['hmc_init']", settings["hmc_init"], ("sir", "prior"))
        check_number("extra['hmc_step_size']", settings["hmc_step_size"], 0, strict=True)
        return settings

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
        """A stable 12-hex-digit digest of everything that changes the result (not device or I/O knobs),
        `CODE_VERSION` included: the same config under another version of the code is another run."""
        payload = {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}
        payload["code_version"] = CODE_VERSION
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def differences(self, other: RunConfig, ignore: Iterable[str] = RESUMABLE_FIELDS) -> list[str]:
        """`field=mine vs theirs` for every field (but `ignore`) where the two configs differ."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}={a[k]!r} vs {b[k]!r}" for k in a if k not in set(ignore) and a[k] != b[k]]

    def run_name(self) -> str:
        return f"{self.dataset}-z{self.latent_dim}-{self.likelihood}-{self.hash()}"

    def replace(self, **changes: Any) -> RunConfig:
        return RunConfig.from_dict({**self.to_dict(), **changes})


def check_choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    """ConfigError unless `value` is one of `allowed`; the message names the closest allowed value first."""
    if value not in allowed:
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{name}={value!r} is not allowed{hint}; choose one of: {', '.join(map(str, allowed))}")


def is_int(value: Any) -> bool:
    """An integer (Python's or numpy's), not a bool: True is an int to Python, never a count to a user."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """ConfigError unless `value` is an integer >= `minimum`; returns it as an int. The one validator of
    counts in vaelib."""
    if not is_int(value) or value < minimum:
        raise ConfigError(f"{name}={value!r} is not allowed; it must be an integer >= {minimum}")
    return int(value)


def check_ints(name: str, values: Any, minimum: int = 1) -> list[int]:
    """ConfigError unless `values` is a non-empty list of integers >= `minimum`; returns it as a list."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ConfigError(f"{name}={values!r} is not allowed; give a non-empty list of integers >= {minimum}")
    values = list(values)
    if not values:
        raise ConfigError(f"{name}=[] is not allowed; give a non-empty list of integers >= {minimum}")
    try:
        return [check_int(name, v, minimum) for v in values]
    except ConfigError:
        raise ConfigError(f"{name}={values!r} is not allowed; give a non-empty list of integers >= {minimum}"
                          ) from None


def check_number(name: str, value: Any, minimum: float, strict: bool = False) -> float:
    """ConfigError unless `value` is a real number >= `minimum` (> with `strict`); returns it."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and (
        value > minimum if strict else value >= minimum)
    if not ok:
        raise ConfigError(f"{name}={value!r} is not allowed; it must be a number {'>' if strict else '>='} {minimum:g}")
    return value
