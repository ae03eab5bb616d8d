"""Train many runs at once: in this process, over a local process pool, or as a Slurm job array (submitit).

`train_many(configs)` is what a chapter that trains several runs calls. Runs are independent and keyed by
their config, so they are a job array: every executor trains into the same run cache (vaelib.runs), each run
under its own lock, and a build that finds every run finished just loads them. Which executor is one
setting, never an edit of a notebook:

    VAELIB_EXECUTOR=inprocess            the default: one run after another in this process
    VAELIB_EXECUTOR=local:2              a pool of 2 worker processes, each with its share of the CPU threads
    VAELIB_EXECUTOR=slurm                one Slurm job per run through submitit; options from
                                         VAELIB_SLURM_PARTITION, VAELIB_SLURM_GPUS (per job), VAELIB_SLURM_TIME
                                         (minutes), VAELIB_SLURM_CPUS (per job)
    VAELIB_EXECUTOR=submitit-local       submitit's local executor: real subprocesses, Slurm's code path
                                         without the scheduler (what the tests use)
    VAELIB_EXECUTOR=grid                 in this process, AEVB runs that differ only in latent size or seed
                                         trained together as one batched grid (vaelib.grid), the rest one
                                         after another

`python -m vaelib.report build --jobs N` sets VAELIB_EXECUTOR=local:N for the notebooks it executes.
A run trained with another number of threads can differ from the in-process one in the last bits of float32
rounding (matrix products sum in another order); at equal thread counts the results are identical.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import grid, paths, runs
from .config import ConfigError, RunConfig, check_choice, check_int
from .runs import Run
from .train import fit_or_load

KINDS = ("inprocess", "local", "slurm", "submitit-local", "grid")


@dataclass(frozen=True)
class Executor:
    """How `train_many` trains: `kind` (see KINDS), `jobs` (local: worker processes; others: ignored),
    and the Slurm options (partition, GPUs and CPUs per job, time limit in minutes)."""

    kind: str = "inprocess"
    jobs: int = 1
    partition: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int | None = None
    time_minutes: int = 240

    def __post_init__(self) -> None:
        check_choice("executor", self.kind, KINDS)
        check_int("jobs", self.jobs, 1)
        check_int("gpus_per_job", self.gpus_per_job, 0)
        check_int("time_minutes", self.time_minutes, 1)
        if self.cpus_per_job is not None:
            check_int("cpus_per_job", self.cpus_per_job, 1)

    def describe(self) -> str:
        if self.kind == "local":
            return f"a local pool of {self.jobs} processes, {threads_per_worker(self.jobs)} thread(s) each"
        if self.kind == "slurm":
            return (f"Slurm jobs (partition {self.partition or 'default'}, {self.gpus_per_job} GPU(s) per job, "
                    f"{self.time_minutes} min limit)")
        return {"inprocess": "this process", "grid": "grids trained as one in this process",
                "submitit-local": "submitit's local executor"}[self.kind]


def parse_executor(text: str) -> Executor:
    """'inprocess', 'grid', 'local:N', 'slurm' or 'submitit-local' (Slurm options from the environment)."""
    kind, _, jobs = text.strip().partition(":")
    if kind == "local":
        if not jobs.isdigit() or int(jobs) < 1:
            raise ConfigError(f"executor {text!r} is not allowed; write local:N with N >= 1 worker processes, "
                              "e.g. local:2")
        return Executor("local", int(jobs))
    if jobs:
        raise ConfigError(f"executor {text!r} is not allowed; only local takes a count (local:N)")
    check_choice("executor", kind, KINDS)
    if kind != "slurm":
        return Executor(kind)
    env = os.environ

    def number(name: str, default: int | None) -> int | None:
        value = env.get(name)
        if value in (None, ""):
            return default
        if not value.isdigit():
            raise ConfigError(f"{name}={value!r} is not allowed; it must be a whole number")
        return int(value)

    return Executor("slurm", partition=env.get("VAELIB_SLURM_PARTITION") or None,
                    gpus_per_job=number("VAELIB_SLURM_GPUS", 0), cpus_per_job=number("VAELIB_SLURM_CPUS", None),
                    time_minutes=number("VAELIB_SLURM_TIME", 240))


def executor_from_environment() -> Executor:
    """The executor $VAELIB_EXECUTOR names (default: in this process)."""
    return parse_executor(os.environ.get("VAELIB_EXECUTOR") or "inprocess")


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def threads_per_worker(jobs: int) -> int:
    """Each of `jobs` workers gets an equal share of this machine's CPUs (at least one)."""
    return max(1, available_cpus() // jobs)


def _train_one(config: dict, runs_dir: str, data_dir: str | None) -> str:
    """A worker's job: train (or load) one run into the shared cache; returns its directory. Module-level, so
    process pools and submitit can pickle it."""
    run = fit_or_load(RunConfig.from_dict(config), runs_dir, data_dir, progress=False)
    return str(run.path)


def _with_threads(threads: int | None, function: Callable[..., Any], *args: Any) -> Any:
    """Run `function(*args)` in a worker with `threads` torch threads (None: the worker's default)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return function(*args)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_many(configs: Sequence[RunConfig], runs_dir: str | os.PathLike | None = None,
               data_dir: str | os.PathLike | None = None, executor: Executor | str | None = None,
               progress: bool = True) -> list[Run]:
    """Train (or load) every config, through `executor` (default: $VAELIB_EXECUTOR, else in this process),
    and return the runs in the order of `configs`. Every config is checked before anything trains; runs
    already finished in the cache are loaded, never retrained; the others are trained by the executor into
    the same cache, one trainer per run (vaelib.runs.run_lock)."""
    configs = list(configs)
    for i, config in enumerate(configs):
        if not isinstance(config, RunConfig):
            raise TypeError(f"configs[{i}] is a {type(config).__name__}, not a RunConfig")
    executor = as_executor(executor)
    cache = paths.runs_dir(runs_dir)
    if executor.kind == "inprocess":
        return [fit_or_load(config, cache, data_dir, progress=progress) for config in configs]
    if executor.kind == "grid":
        return _train_grids(configs, cache, data_dir, progress)
    data = None if data_dir is None else str(Path(data_dir).resolve())
    unique = list({c.run_name(): c for c in configs}.values())
    todo = [c for c in unique if not runs.is_complete(runs.run_dir(c, cache), c)]
    if todo:
        if progress:
            _say(f"training {len(todo)} of {len(unique)} runs through {executor.describe()}")
        map_jobs(_train_one, [(c.to_dict(), str(cache), data) for c in todo], [c.run_name() for c in todo],
                 executor, progress, str(cache))
    return [runs.load_run(runs.run_dir(config, cache), config.device) for config in configs]


def _train_grids(configs: list[RunConfig], cache: Path, data_dir: str | os.PathLike | None,
                 progress: bool) -> list[Run]:
    unique = list({c.run_name(): c for c in configs}.values())
    todo = [c for c in unique if not runs.is_complete(runs.run_dir(c, cache), c)]
    # a member with an unfinished checkpoint resumes alone: the grid starts members from scratch only
    fresh = [c for c in todo if not (runs.run_dir(c, cache) / runs.CHECKPOINT_FILE).exists()]
    grids, _ = grid.grid_groups(fresh)
    for members in grids:
        if progress:
            _say(f"training {len(members)} runs as one grid")
        grid.train_grid(members, cache, data_dir)
    return [fit_or_load(config, cache, data_dir, progress=progress) for config in configs]


def as_executor(executor: Executor | str | None) -> Executor:
    """`executor` itself, parsed from its text, or (None) the one $VAELIB_EXECUTOR names."""
    if isinstance(executor, str):
        return parse_executor(executor)
    return executor or executor_from_environment()


def map_jobs(function: Callable[..., Any], jobs: Sequence[tuple], labels: Sequence[str], executor: Executor,
             progress: bool = True, folder: str | os.PathLike | None = None) -> list[Any]:
    """`[function(*job) for job in jobs]` through `executor`, results in the order of `jobs`. `function` must be
    module-level (picklable); `labels` name the jobs in progress lines and errors; `folder` is where submitit
    keeps its logs (default: the run cache). Each local worker gets its share of the CPU threads."""
    jobs, labels = list(jobs), list(labels)
    if executor.kind in ("inprocess", "grid"):  # a generic job is no grid: in this process
        return [function(*job) for job in jobs]
    if executor.kind == "local":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = threads_per_worker(executor.jobs)
        results: list[Any] = [None] * len(jobs)
        # spawn, not fork: a forked child would inherit this process's torch thread pool and locks.
        with ProcessPoolExecutor(max_workers=min(executor.jobs, len(jobs)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_with_threads, threads, function, *job): i for i, job in enumerate(jobs)}
            for done, future in enumerate(as_completed(futures), start=1):
                i = futures[future]
                results[i] = _result(future.result, labels[i])
                if progress:
                    _say(f"  [{done}/{len(jobs)}] {labels[i]} done")
        return results
    import submitit

    folder = Path(folder or paths.runs_dir()) / ".submitit"
    if executor.kind == "submitit-local":
        pool = submitit.AutoExecutor(folder=folder, cluster="local")
        pool.update_parameters(timeout_min=executor.time_minutes)
        threads: int | None = 1
    else:
        pool = submitit.AutoExecutor(folder=folder, cluster="slurm")
        pool.update_parameters(timeout_min=executor.time_minutes, gpus_per_node=executor.gpus_per_job,
                               cpus_per_task=executor.cpus_per_job or 1, nodes=1, tasks_per_node=1,
                               **({"slurm_partition": executor.partition} if executor.partition else {}))
        threads = executor.cpus_per_job
    columns = list(zip(*jobs, strict=True))
    submitted = pool.map_array(_with_threads, [threads] * len(jobs), [function] * len(jobs), *columns)
    if progress:
        _say(f"  submitted {len(submitted)} job(s): {', '.join(job.job_id for job in submitted)}")
    return [_result(job.result, label) for job, label in zip(submitted, labels, strict=True)]


def _result(get: Callable[[], Any], label: str) -> Any:
    try:
        return get()
    except Exception as error:
        raise RuntimeError(f"{label} failed in its worker: {type(error).__name__}: {error}") from error
