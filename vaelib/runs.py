"""Runs on disk: the run directory, its files, the one run cache, and the lock that gives each run one trainer.

A run lives in a directory:

    config.json     the RunConfig, and the `code_version` of the code that trained it
    history.csv     one row per epoch (HISTORY_COLUMNS), nats per example
    checkpoint.pt   model, optimizer, every random state and the history: what a resume continues from
    model-epochNNNNNN.pt   weights after epoch NNNNNN, kept where an experiment evaluates a run mid-way
    eval-*.json     evaluations of this run (vaelib.evaluate), keyed by what computed them
    .lock           held by the process that trains the run

The cache (`run_dir`) names a directory by `RunConfig.run_name()`, whose hash covers the config and
`config.CODE_VERSION`: a run made by other code has another name and is never found, and one opened by its
path is refused (`StaleRunError`). Every file is written atomically (vaelib.io), so a checkpoint half-written
when a process died never carries the real name and is never loaded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from . import config as _config
from . import paths
from .config import ConfigError, RunConfig
from .data import Dataset, image_shape, load_dataset
from .io import save_torch_atomic, write_text_atomic
from .models import VAE, build_model

CONFIG_FILE, HISTORY_FILE, CHECKPOINT_FILE, LOCK_FILE = "config.json", "history.csv", "checkpoint.pt", ".lock"
HISTORY_COLUMNS = [
    "epoch", "samples_seen", "train_objective", "train_elbo", "train_log_px_z", "train_kl",
    "test_elbo", "test_log_px_z", "test_kl", "beta", "lr", "seconds", "eval_seconds",
]


class StaleRunError(ConfigError):
    """A run directory was made by another version of the code; the message names the run, its version and
    how to clear it."""


def select_device(device: str = "auto") -> torch.device:
    """"auto": CUDA if present, then Apple MPS, then CPU; otherwise the named device."""
    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={device!r} was asked for but CUDA is not available; use 'cpu' or 'auto'")
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# --- where a run lives -----------------------------------------------------------------------------------
def run_dir(config: RunConfig, runs_dir: str | os.PathLike | None = None) -> Path:
    """The cache directory of `config`: `<runs dir>/<config.run_name()>` (see `vaelib.paths.runs_dir`)."""
    return paths.runs_dir(runs_dir) / config.run_name()


def staged_run_dir(config: RunConfig, runs_dir: str | os.PathLike | None = None) -> Path:
    """The one directory a run grows in whatever its final epoch count (the hash leaves `epochs` out): an
    experiment that evaluates a run after several stages resumes it here and keeps a snapshot per stage."""
    base = config.replace(epochs=0)
    return paths.runs_dir(runs_dir) / (f"{config.dataset}-z{config.latent_dim}-{config.method}"
                                       f"-n{config.train_size}-staged-{base.hash()}")


def write_config(out: Path, config: RunConfig) -> None:
    """config.json: the config's fields and the code version that trains it."""
    write_text_atomic(Path(out) / CONFIG_FILE,
                      json.dumps({**config.to_dict(), "code_version": _config.CODE_VERSION}, indent=2, sort_keys=True))


def read_config(out: str | os.PathLike) -> tuple[RunConfig, int]:
    """(RunConfig, code version) from `out/config.json`; a file without a version is version 0."""
    values = json.loads((Path(out) / CONFIG_FILE).read_text())
    version = int(values.pop("code_version", 0))
    return RunConfig.from_dict(values), version


def check_current(out: str | os.PathLike) -> RunConfig:
    """The run's config, or StaleRunError if another version of the code made it."""
    config, version = read_config(out)
    if version != _config.CODE_VERSION:
        raise StaleRunError(
            f"run {out} was made by vaelib code version {version}, and this code is version "
            f"{_config.CODE_VERSION} (vaelib.config.CODE_VERSION): its numbers may not be what this code "
            "computes. Delete the directory to clear it (a cached run is retrained on the next request), "
            "or train it again into a new directory")
    return config


# --- checkpoints ---------------------------------------------------------------------------------------
def save_checkpoint(out: Path, state: dict[str, Any]) -> None:
    save_torch_atomic(state, Path(out) / CHECKPOINT_FILE)


def load_checkpoint(out: str | os.PathLike, device: torch.device | str = "cpu") -> dict[str, Any]:
    return torch.load(Path(out) / CHECKPOINT_FILE, map_location=device, weights_only=False)


def checkpoint_epoch(out: str | os.PathLike) -> int:
    """Epochs the run's checkpoint holds (0 without one). A resume continues from there: history.csv may
    run ahead of it by the rows written since the last checkpoint."""
    if not (Path(out) / CHECKPOINT_FILE).exists():
        return 0
    return int(load_checkpoint(out)["epoch"])


def snapshot_path(out: str | os.PathLike, epoch: int) -> Path:
    return Path(out) / f"model-epoch{epoch:06d}.pt"


def save_snapshot(out: str | os.PathLike, epoch: int, model: torch.nn.Module) -> None:
    save_torch_atomic(model.state_dict(), snapshot_path(out, epoch))


def load_snapshot(out: str | os.PathLike, epoch: int, config: RunConfig) -> VAE | None:
    """The model after `epoch` epochs from its snapshot, on `config.device`; None if there is none."""
    path = snapshot_path(out, epoch)
    if not path.exists():
        return None
    model = build_model(config, image_shape(config.dataset))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.to(select_device(config.device)).eval()


# --- runs ------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """A trained (or partly trained) model with its config, history and directory."""

    path: Path
    config: RunConfig
    model: VAE
    history: pd.DataFrame

    @property
    def epochs_done(self) -> int:
        return int(self.history["epoch"].max()) if len(self.history) else 0

    def load_data(self, data_dir: str | os.PathLike | None = None) -> Dataset:
        """The data set this run was trained on, with the same subsets, on the model's device."""
        device = next(self.model.parameters()).device
        return load_dataset(self.config.dataset, data_dir, self.config.train_size, self.config.test_size,
                            device=device)


def load_run(path: str | os.PathLike, device: str = "auto") -> Run:
    """Load a run directory written by `vaelib.train.fit` (on `device`, default: the best available).

    Raises FileNotFoundError for a directory that holds no run and StaleRunError for one made by another
    version of the code."""
    out = Path(path)
    if not (out / CONFIG_FILE).exists() or not (out / CHECKPOINT_FILE).exists():
        raise FileNotFoundError(f"{out} is not a run directory (config.json and checkpoint.pt expected); "
                                "train one with `python -m vaelib train --out DIR`")
    config = check_current(out)
    torch_device = select_device(device)
    model = build_model(config, image_shape(config.dataset)).to(torch_device)
    state = load_checkpoint(out, torch_device)
    model.load_state_dict(state["model"])
    model.eval()
    history = pd.DataFrame(state["history"], columns=HISTORY_COLUMNS)
    return Run(out, config, model, history)


def is_complete(out: Path, config: RunConfig) -> bool:
    """Whether `out` holds a current run (this code version) of at least `config.epochs` epochs."""
    if not (out / CHECKPOINT_FILE).exists() or not (out / CONFIG_FILE).exists():
        return False
    return read_config(out)[1] == _config.CODE_VERSION and checkpoint_epoch(out) >= config.epochs


def completed_run(out: Path, config: RunConfig) -> Run | None:
    """The run in `out` if it is current and holds at least `config.epochs` epochs, else None."""
    if not (out / CHECKPOINT_FILE).exists() or not (out / CONFIG_FILE).exists():
        return None
    _, version = read_config(out)
    if version != _config.CODE_VERSION:
        return None
    run = load_run(out, config.device)
    return run if run.epochs_done >= config.epochs else None


# --- one trainer per run ---------------------------------------------------------------------------------
_held: dict[Path, int] = {}  # locks this process holds, with their depth: the lock is re-entrant per process
_held_guard = threading.Lock()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def run_lock(out: str | os.PathLike, log: Callable[[str], None] = _say) -> Iterator[None]:
    """Hold the run directory's lock for the block: one process trains a run, others wait, then load it.

    An exclusive `flock` on `out/.lock`. The kernel releases it when its holder exits, however it exits
    (`kill -9` included), so the next process takes it over; a waiting process says who holds it. Re-entrant
    within one process. Where the platform has no `fcntl` (Windows), the block runs unlocked.
    """
    out = Path(out).resolve()
    with _held_guard:
        depth = _held.get(out, 0)
        if depth:
            _held[out] = depth + 1
    if depth:
        try:
            yield
        finally:
            with _held_guard:
                _held[out] -= 1
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_FILE, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            log(f"waiting for run {out.name}: {holder} is training it; it will be loaded when that finishes")
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                 f"{dt.datetime.now().isoformat(timespec='seconds')}\n")
        fh.flush()
        with _held_guard:
            _held[out] = 1
        try:
            yield
        finally:
            with _held_guard:
                del _held[out]
            fh.seek(0)
            fh.truncate()
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)
