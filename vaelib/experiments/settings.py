"""The paper's experimental settings (Kingma & Welling 2013, Sec. 5 and App. C) and the arithmetic of
sample budgets, shared by the drivers of Figs. 2 and 3 and the step-size search.

"Samples" count training datapoints processed (epochs x N_train), the paper's x axis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ..config import METHODS, ConfigError, check_choice, check_int, check_ints, check_number

FIG2_LATENT_DIMS: dict[str, tuple[int, ...]] = {"binarized-mnist": (3, 5, 10, 20, 200), "freyface": (2, 5, 10, 20)}
PAPER_SAMPLES = 1e8  # the paper trained each run of Figs. 2 and 3 up to 10^8 training samples
PAPER_STEP_SIZES = (0.01, 0.02, 0.1)  # Adagrad global step sizes the paper chose from
PAPER_INIT_STD = 0.01  # "initialized by random sampling from N(0, 0.01)", read as a standard deviation
FIG3_TRAIN_SIZES = (1000, 50_000)
FIG3_LATENT_DIM, FIG3_HIDDEN_DIM, FIG3_EVAL_POINTS = 3, 100, 1000
_CHECKPOINT_STEPS = 1000  # write a checkpoint about every this many optimizer steps


def epochs_for_samples(samples: float, n_train: int) -> int:
    """Whole epochs needed to evaluate at least `samples` training datapoints (at least one epoch)."""
    check_number("samples budget", samples, 0, strict=True)
    check_int("training set size", n_train, 1)
    return max(1, math.ceil(samples / n_train - 1e-9))

def checkpoint_interval(n_train: int, batch_size: int) -> int:
    """Epochs between checkpoints so that one is written about every 1,000 steps (tiny epochs: rarely)."""
    return max(1, round(_CHECKPOINT_STEPS / math.ceil(n_train / batch_size)))

def paper_weight_decay(n_train: int) -> float:
    """The weight decay that is the paper's N(0, I) prior on the parameters.

    The paper maximizes sum_i ELBO_i + log N(theta; 0, I); training here minimizes the *mean* loss over a
    minibatch, so the prior's share per datapoint is |theta|^2 / (2N), whose gradient theta / N is
    Adagrad's weight_decay = 1/N.
    """
    return 1.0 / n_train


def check_methods(methods: Sequence[str]) -> None:
    """ConfigError unless `methods` is a non-empty list of known training methods."""
    if not methods:
        raise ConfigError("methods is empty; name at least one of: " + ", ".join(METHODS))
    for method in methods:
        check_choice("method", method, METHODS)


def per_method(value: float | Mapping[str, float], method: str, name: str) -> float:
    """`value` itself, or its entry for `method` when it is a mapping {method: value}."""
    if isinstance(value, Mapping):
        if method not in value:
            raise ConfigError(f"{name} has no entry for method {method!r}; give a number or a mapping with "
                              f"keys {', '.join(METHODS)}")
        return value[method]
    return value


__all__ = ["FIG2_LATENT_DIMS", "FIG3_EVAL_POINTS", "FIG3_HIDDEN_DIM", "FIG3_LATENT_DIM", "FIG3_TRAIN_SIZES",
           "PAPER_INIT_STD", "PAPER_SAMPLES", "PAPER_STEP_SIZES", "check_ints", "check_methods",
           "checkpoint_interval", "epochs_for_samples", "paper_weight_decay", "per_method"]
