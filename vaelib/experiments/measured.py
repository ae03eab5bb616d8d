"""Measured runs: Figs. 2 and 3 trained far beyond a book build's budget, kept in `book/measured/` as each
run's `config.json` and `history.csv` (no checkpoints), so that chapters 7 and 8 can draw them on the
paper's axes beside the curves the build has just trained.

    python -m vaelib.experiments.measured figure2 --samples 1e7 --stages 1e6,3e6 \
        --out book/measured/cpu-2core/figure2
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
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from .. import paths, runs
from ..config import RunConfig, check_choice
from ..data import train_set_size
from ..executors import as_executor, map_jobs
from ..io import write_text_atomic
from ..train import fit
from . import figure2, figure3, step_size
from .settings import FIG2_LATENT_DIMS, FIG3_EVAL_POINTS, PAPER_SAMPLES, epochs_for_samples

CONFIG_FILE, HISTORY_FILE = "config.json", runs.HISTORY_FILE
FIG3_TABLE, TRIALS_FILE = "marginal_likelihood.csv", "step_size_trials.csv"
# The measurements chapters 7 and 8 draw (folders of book/measured/, each with its README.md).
FIGURE2, FIGURE3 = "cpu-2core/figure2", "cpu-2core/figure3"


def measured_dir(name: str) -> Path:
    """The folder `book/measured/<name>` of this checkout (a clear error outside a checkout)."""
    return paths.checkout("book") / "measured" / name


def export_run(run_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Copy one finished run's config.json and history.csv into `out/<run name>/`; returns that folder."""
    run_path = Path(run_path)
    target = Path(out) / run_path.name
    target.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, HISTORY_FILE):
        write_text_atomic(target / name, (run_path / name).read_text())
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
    calls that made it (machine, commit, command, wall seconds: README.json, written by `main`)."""
    folder = Path(folder)
    found = load_measured(folder)
    meta_file = folder / "README.json"
    calls = json.loads(meta_file.read_text()).get("calls", []) if meta_file.is_file() else []
    return {"runs": len(found), "max_samples": max((int(h["samples_seen"].max()) for _, h in found), default=0),
            "train_seconds": float(sum(h["seconds"].sum() for _, h in found)),
            "wall_seconds": float(sum(c.get("wall_seconds") or 0 for c in calls)), "calls": calls}


def label(name: str) -> str:
    """How a figure names the measured runs of `book/measured/<name>`: their budget (a range where the runs
    reached different budgets, e.g. one data set further than another) and machine."""
    summary = describe(measured_dir(name))
    machine = summary["calls"][-1]["machine"] if summary["calls"] else "unknown machine"
    reach = sorted({int(history["samples_seen"].max()) for _, history in load_measured(measured_dir(name))})
    budget = f"{reach[0]:.0e}" if len(reach) < 2 or f"{reach[0]:.0e}" == f"{reach[-1]:.0e}" \
        else f"{reach[0]:.0e}–{reach[-1]:.0e}"
    return f"measured to {budget} samples ({machine})".replace("e+0", "e") if reach else \
        f"no measured runs ({machine})"


def write_readme(folder: str | os.PathLike) -> Path:
    """README.md of a measured folder, from what it holds: the calls (machine, commit, command, wall time),
    the runs and their reach, and the end points (nats per datapoint; Fig. 3: log p(x) estimates)."""
    folder = Path(folder)
    summary = describe(folder)
    lines = [f"# Measured runs: {folder.parent.name}/{folder.name}", "",
             "Made by `python -m vaelib.experiments.measured` (see its docstring); each run folder holds the run's "
             "`config.json` and `history.csv` (one row per epoch, nats per datapoint, `seconds` = wall time of the "
             "epoch's training on one thread), without checkpoints. Chapters 7 and 8 draw them.", "",
             "| finished | reached | machine | torch | commit | wall time | command |",
             "|---|---|---|---|---|---|---|"]
    for call in summary["calls"]:
        wall = f"{call['wall_seconds'] / 60:.1f} min" if call.get("wall_seconds") is not None else "not recorded"
        lines.append(f"| {call['finished']} | {call.get('reached', 'all')} | {call['machine']} | {call['torch']} | "
                     f"{call['commit']} | {wall} | `{call['command']}` |")
    lines += ["", f"{summary['runs']} runs, up to {summary['max_samples']:,} training samples each, "
              f"{summary['train_seconds'] / 3600:.2f} h of training in all (the sum of `seconds`; two runs trained "
              "at a time, one per core, so the wall time is about half). The machine was shared with other work "
              "while these ran, so the seconds are upper bounds for an idle machine.", "",
              "| data set | method | Nz | N train | samples | final train | final test |",
              "|---|---|---|---|---|---|---|"]
    def last(column: pd.Series) -> str:  # MCEM trains no encoder, so it has no ELBO to report
        column = column.dropna()
        return f"{column.iloc[-1]:.2f}" if len(column) else "n/a"

    for config, history in sorted(load_measured(folder),
                                  key=lambda found: (found[0].dataset, found[0].train_size or 0,
                                                     found[0].latent_dim, found[0].method)):
        n_train = train_set_size(config.dataset, config.train_size)
        lines.append(f"| {config.dataset} | {config.method} | {config.latent_dim} | {n_train:,} | "
                     f"{int(history['samples_seen'].max()):,} | {last(history['train_elbo'])} | "
                     f"{last(history['test_elbo'])} |")
    lines.append("")
    lines.append("Final train and test: the ELBO (estimator B, L = 1, nats per datapoint) of the last epoch; train is "
                 "the running mean over that epoch's minibatches; n/a for Monte Carlo EM, which has no encoder.")
    table = load_figure3(folder)
    if not table.empty:
        last = (table.sort_values("samples_seen").groupby(["train_size", "method", "split", "estimator"]).last()
                .reset_index())
        lines += ["", "log p(x) at the last stage (`marginal_likelihood.csv`; mean over the points, ± one standard "
                  "error):", "", "| N train | method | split | estimator | samples | log p(x) |",
                  "|---|---|---|---|---|---|"]
        for r in last.itertuples():
            lines.append(f"| {r.train_size:,} | {r.method} | {r.split} | {r.estimator} (k={r.k}) | "
                         f"{r.samples_seen:,} | {r.log_likelihood:.2f} ± {r.sem:.2f} |")
    path = folder / "README.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def paper_cost(folders: Sequence[str] = (FIGURE2, FIGURE3), paper_samples: float = PAPER_SAMPLES,
               mcem_samples: float = 1e7) -> pd.DataFrame:
    """What the `paper` profile's runs of chapters 7 and 8 cost on the machine that measured `folders`: per
    measured run, its training seconds per sample (from history.csv, one thread per run) times the paper
    profile's budget (10^8 samples; MCEM: `mcem_samples`), in core-hours. Estimation time is not included."""
    rows = []
    for name in folders:
        for config, history in load_measured(measured_dir(name)):
            per_sample = float(history["seconds"].sum()) / float(history["samples_seen"].max())
            budget = mcem_samples if config.method == "mcem" else paper_samples
            n_train = train_set_size(config.dataset, config.train_size)
            rows.append({"measurement": name, "dataset": config.dataset, "method": config.method,
                         "latent_dim": config.latent_dim, "train_size": n_train,
                         "us_per_sample": 1e6 * per_sample, "paper_samples": budget,
                         "core_hours": per_sample * budget / 3600})
    return pd.DataFrame(rows)


def paper_cost_sentence(table: pd.DataFrame, cores_per_node: int = 32) -> str:
    """`paper_cost`'s table in words: the total core-hours, the number of runs, the share of each
    measurement, node-hours of `cores_per_node`-core nodes and the longest run; the rerun page and
    `python -m vaelib.experiments.measured cost` both print it."""
    if table.empty:
        return "no measured runs are in this checkout's `book/measured/`, so there is no estimate."
    parts = "; ".join(f"{name.split('/')[-1]}: {len(group)} runs, {group['core_hours'].sum():,.1f} h"
                      for name, group in table.groupby("measurement"))
    total = table["core_hours"].sum()
    return (f"{total:,.1f} core-hours for {len(table)} runs ({parts}), or {total / cores_per_node:,.1f} node-hours "
            f"of {cores_per_node}-core nodes; the longest run {table['core_hours'].max():,.1f} h.")


def _figure2_configs(samples: float, datasets: Sequence[str], seed: int) -> list[RunConfig]:
    return [c for dataset in datasets for c in figure2.figure2_configs(dataset, None, samples, seed=seed, device="cpu")]


def _grow(config: dict, runs_dir: str, data_dir: str | None) -> str:
    """A worker's job: train one run up to `config["epochs"]` in its staged directory (which keeps one run
    whatever its final epoch count), resuming what an earlier, shorter stage left; returns the directory."""
    config = RunConfig.from_dict(config)
    out = runs.staged_run_dir(config, runs_dir)
    if runs.checkpoint_epoch(out) < config.epochs:
        fit(config, out, resume=True, data_dir=data_dir, progress=False)
    return str(out)


def grow_figure2(configs: Sequence[RunConfig], stages: Sequence[float], out: Path, runs_dir: Path | None,
                 data_dir: Path | None, executor: str | None,
                 on_stage: Callable[[float], None] | None = None) -> None:
    """Train every Fig. 2 run up to each budget of `stages` in turn (training samples, ascending), all runs
    to one budget before any goes further, and copy their records to `out` after every stage: a measurement
    stopped early leaves every panel at the same reach."""
    cache = str(paths.runs_dir(runs_dir))
    data = None if data_dir is None else str(data_dir.resolve())
    spread = as_executor(executor)
    for samples in stages:
        staged = [c.replace(epochs=epochs_for_samples(samples, train_set_size(c.dataset, c.train_size)))
                  for c in configs]
        print(f"stage: {samples:,.0f} training samples per run, {len(staged)} runs through {spread.describe()}",
              file=sys.stderr, flush=True)
        folders = map_jobs(_grow, [(c.to_dict(), cache, data) for c in staged], [c.run_name() for c in staged],
                           spread)
        for folder in folders:
            export_run(folder, out)
        if on_stage is not None:
            on_stage(samples)


def _machine() -> dict:
    import platform
    import subprocess

    import torch

    from ..executors import available_cpus

    commit = ""
    if paths.REPO_ROOT is not None:  # `.git` is a folder in a clone and a file in a worktree: ask git
        found = subprocess.run(["git", "-C", str(paths.REPO_ROOT), "rev-parse", "--short=12", "HEAD"],
                               capture_output=True, text=True)
        commit = found.stdout.strip() if found.returncode == 0 else ""
    return {"machine": f"{platform.machine()} CPU, {available_cpus()} cores", "torch": torch.__version__,
            "commit": commit}


def _keep_trials(out: Path, trials: pd.DataFrame) -> None:
    """Write the step-size trials into out/step_size_trials.csv, keeping the rows of data sets that an earlier
    call (one per data set, say) chose for and this one did not."""
    path = out / TRIALS_FILE
    if path.is_file():
        earlier = pd.read_csv(path)
        trials = pd.concat([earlier[~earlier["dataset"].isin(trials["dataset"])], trials], ignore_index=True)
    write_text_atomic(path, trials.to_csv(index=False))


def _record_call(out: Path, call: dict) -> None:
    """Add or update (same "id") this call in out/README.json and rewrite README.md: every call that
    added to the folder, in order, so a measurement stopped between stages still says what it reached."""
    meta_file = out / "README.json"
    calls = json.loads(meta_file.read_text()).get("calls", []) if meta_file.is_file() else []
    calls = [c for c in calls if "id" not in c or c["id"] != call["id"]] + [call]
    write_text_atomic(meta_file, json.dumps({"calls": calls}, indent=2) + "\n")
    write_readme(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaelib.experiments.measured", description=__doc__.split("\n\n")[0])
    parser.add_argument("figure", choices=["figure2", "figure3", "cost"],
                        help="which figure's runs to train and keep; cost: the paper profile's training cost "
                        "estimated from the measured runs")
    parser.add_argument("--samples", type=float, default=1e7, help="training samples per run (the paper: 1e8)")
    parser.add_argument("--stages", default="", help="figure2: comma-separated smaller budgets to bring every run "
                        "to first, e.g. 1e6,3e6 (then --samples)")
    parser.add_argument("--datasets", default="binarized-mnist,freyface", help="figure2: data sets, comma-separated")
    parser.add_argument("--mcem-samples", type=float, default=2e5, help="figure3: training samples of the MCEM runs")
    parser.add_argument("--out", type=Path, help="folder to copy config.json and history.csv into")
    parser.add_argument("--runs-dir", type=Path, default=None, help="the run cache (default: vaelib.paths.runs_dir)")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--executor", default=None, help="inprocess | local:N | slurm | submitit-local")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.figure == "cost":
        table = paper_cost()
        print(table.round(2).to_string(index=False))
        print(f"total: {paper_cost_sentence(table)}")
        return 0
    if args.out is None:
        parser.error(f"{args.figure} needs --out: the folder to keep the runs' records in")
    started = time.time()
    command = " ".join(sys.argv[1:] if argv is None else argv)
    call = {"id": uuid.uuid4().hex[:12], **_machine(), "command": f"python -m vaelib.experiments.measured {command}",
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started))}

    def reached(samples: float | None) -> None:
        call.update(finished=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    wall_seconds=round(time.time() - started, 1),
                    reached="all" if samples is None else f"{samples:.3g} samples per run")
        _record_call(args.out, call)

    if args.figure == "figure2":
        datasets = [d for d in args.datasets.split(",") if d]
        for dataset in datasets:
            check_choice("dataset", dataset, tuple(FIG2_LATENT_DIMS))
        stages = sorted({float(x) for x in args.stages.split(",") if x} | {args.samples})
        configs = _figure2_configs(args.samples, datasets, args.seed)
        configs, trials = step_size.resolve_step_sizes(configs, "auto", runs_dir=args.runs_dir, data_dir=args.data_dir)
        args.out.mkdir(parents=True, exist_ok=True)
        if trials is not None:
            _keep_trials(args.out, trials)
        grow_figure2(configs, stages, args.out, args.runs_dir, args.data_dir, args.executor,
                     on_stage=lambda samples: reached(samples if samples < args.samples else None))
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
            _keep_trials(args.out, trials)
        reached(None)
    print(json.dumps({**describe(args.out), "out": str(args.out)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
