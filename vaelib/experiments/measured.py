"""Measured runs: Figs. 2 and 3 trained far beyond a book build's budget, kept in `book/measured/` as each
run's `config.json` and `history.csv` (no checkpoints), so that chapters 7 and 8 can draw them on the
paper's axes beside the curves the build has just trained.

    python -m vaelib.experiments.measured figure2 --samples 1e7 --out book/measured/cpu-2core/figure2
    python -m vaelib.experiments.measured figure3 --samples 1e7 --mcem-samples 2e5 \
        --out book/measured/cpu-2core/figure3

train the runs into the run cache (resuming whatever an interrupted call left there; `--executor`, or
$VAELIB_EXECUTOR, spreads Fig. 2's independent runs over processes or a cluster) and copy the finished
runs' records to `--out`. Fig. 3's folder also holds `marginal_likelihood.csv`, the estimates of log p(x)
at every stage (`vaelib.experiments.figure3.FIG3_COLUMNS`). The configs are the chapters' own
(`figure2_configs`, `figure3_configs`, step sizes chosen the paper's way), only the budget is larger, so
the `paper` profile regenerates the same runs at 10^8 samples.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .. import paths, runs
from ..config import RunConfig
from ..executors import train_many
from . import figure2, figure3, step_size
from .settings import FIG3_EVAL_POINTS

CONFIG_FILE, HISTORY_FILE = "config.json", runs.HISTORY_FILE
FIG3_TABLE = "marginal_likelihood.csv"


def measured_dir(name: str) -> Path:
    """The folder `book/measured/<name>` of this checkout (a clear error outside a checkout)."""
    return paths.checkout("book") / "measured" / name


def export_run(run_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Copy one finished run's config.json and history.csv into `out/<run name>/`; returns that folder."""
    run_path = Path(run_path)
    target = Path(out) / run_path.name
    target.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, HISTORY_FILE):
        shutil.copyfile(run_path / name, target / name)
    return target


def load_measured(folder: str | os.PathLike) -> list[tuple[RunConfig, pd.DataFrame]]:
    """Every run kept in `folder` as (config, history), sorted by run name; [] if the folder has none."""
    folder = Path(folder)
    found = []
    for config_file in sorted(folder.glob(f"*/{CONFIG_FILE}")):
        config, _ = runs.read_config(config_file.parent)
        found.append((config, pd.read_csv(config_file.parent / HISTORY_FILE)))
    return found


def load_figure2(folder: str | os.PathLike) -> pd.DataFrame:
    """The measured Fig. 2 runs of `folder` as `figure2.run_figure2`'s long table (empty if none)."""
    frames = [figure2.history_to_long(config, history) for config, history in load_measured(folder)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=figure2.FIG2_COLUMNS)


def load_figure3(folder: str | os.PathLike) -> pd.DataFrame:
    """The measured Fig. 3 estimates of `folder` (`figure3.FIG3_COLUMNS`; empty if none)."""
    table = Path(folder) / FIG3_TABLE
    return pd.read_csv(table) if table.is_file() else pd.DataFrame(columns=figure3.FIG3_COLUMNS)


def describe(folder: str | os.PathLike) -> dict:
    """What a measured folder holds: runs, the largest budget in samples, total training seconds, and the
    machine and commit its README.json records (written by `main`)."""
    folder = Path(folder)
    found = load_measured(folder)
    meta_file = folder / "README.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    return {"runs": len(found), "max_samples": max((int(h["samples_seen"].max()) for _, h in found), default=0),
            "train_seconds": float(sum(h["seconds"].sum() for _, h in found)), **meta}


def _figure2_configs(samples: float, seed: int) -> list[RunConfig]:
    return (figure2.figure2_configs("binarized-mnist", None, samples, seed=seed, device="cpu")
            + figure2.figure2_configs("freyface", None, samples, seed=seed, device="cpu"))


def _machine() -> dict:
    import platform

    import torch

    from ..executors import available_cpus

    commit = ""
    head = paths.checkout(".git") / "HEAD" if paths.REPO_ROOT is not None else None
    if head is not None and head.is_file():
        import subprocess

        commit = subprocess.run(["git", "-C", str(paths.REPO_ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
    return {"machine": f"{platform.machine()} CPU, {available_cpus()} cores", "torch": torch.__version__,
            "commit": commit}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaelib.experiments.measured", description=__doc__.split("\n\n")[0])
    parser.add_argument("figure", choices=["figure2", "figure3"], help="which figure's runs to train and keep")
    parser.add_argument("--samples", type=float, default=1e7, help="training samples per run (the paper: 1e8)")
    parser.add_argument("--mcem-samples", type=float, default=2e5, help="figure3: training samples of the MCEM runs")
    parser.add_argument("--out", type=Path, required=True, help="folder to copy config.json and history.csv into")
    parser.add_argument("--runs-dir", type=Path, default=None, help="the run cache (default: vaelib.paths.runs_dir)")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--executor", default=None, help="inprocess | local:N | slurm | submitit-local")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.time()
    if args.figure == "figure2":
        configs = _figure2_configs(args.samples, args.seed)
        configs, trials = step_size.resolve_step_sizes(configs, "auto", runs_dir=args.runs_dir, data_dir=args.data_dir)
        done = train_many(configs, args.runs_dir, args.data_dir, executor=args.executor)
        for run in done:
            export_run(run.path, args.out)
    else:
        budget = {"aevb": args.samples, "wake-sleep": args.samples, "mcem": args.mcem_samples}
        configs = figure3.figure3_configs(samples_budget=budget, device="cpu", seed=args.seed)
        lr = {"aevb": "auto", "wake-sleep": "auto", "mcem": 0.1}  # MCEM's: what chapter 8's "auto" picked
        configs, trials = step_size.resolve_step_sizes(configs, lr, runs_dir=args.runs_dir, data_dir=args.data_dir)
        hmc = {"n_posterior_samples": 100, "n_chains": 2, "n_burnin": 50}  # chapter 8's fitted proposal
        table = figure3.run_figure3(configs, args.runs_dir, args.data_dir, k=1000, n_points=FIG3_EVAL_POINTS,
                                    points_per_decade=2, min_samples=1e4, estimator_kwargs={"is": hmc},
                                    executor=args.executor)
        args.out.mkdir(parents=True, exist_ok=True)
        for config in configs:
            export_run(runs.staged_run_dir(config, args.runs_dir), args.out)
        table.to_csv(args.out / FIG3_TABLE, index=False)
    if trials is not None:
        trials.to_csv(args.out / "step_size_trials.csv", index=False)
    command = " ".join(sys.argv[1:] if argv is None else argv)
    meta = {**_machine(), "command": f"python -m vaelib.experiments.measured {command}",
            "wall_seconds": round(time.time() - started, 1)}
    (args.out / "README.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps({**describe(args.out), "out": str(args.out)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
