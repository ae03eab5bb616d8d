"""`build(profile)`: execute the profile's notebooks with papermill into build/<profile>/, assemble and render
the book into book/_build/html (and print it to PDF), recording each notebook's wall time.

`build("quick")` (or `python -m vaelib.book build --profile quick`) executes, in the profile's order, each
notebook that `book/profiles/quick.yaml` lists and `notebooks/` holds, into `build/quick/notebooks/`, with
the profile's parameters plus `profile`; the kernel runs in `notebooks/` and sees `VAELIB_RUNS` (the run
cache every build shares) and `VAELIB_RESULTS` (this profile's recorded numbers). The source notebooks are
never written to.

`jobs=N` executes N notebooks side by side, each in its own process with its share of the CPU threads
(`executors.threads_per_worker`); the chapters of GATHERS (the results page) wait for all the others.
`executor="local:2"` (or "slurm", ...) is handed to the kernels as $VAELIB_EXECUTOR: the chapters that train
several runs train them through it (vaelib.executors).
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import paths
from ..io import write_text_atomic
from . import BOOK_DIR, BUILD_ROOT, HTML_DIR, NOTEBOOKS_DIR, PDF_PATH
from .assemble import assemble_book, render_book
from .browser import print_pdf
from .execute import NotebookFailed, execute_notebook
from .parameters import check_profile
from .profiles import Profile, load_profile, select
from .statistics import run_log_path

Log = Callable[[str], None]
GATHERS = ("10_results",)  # chapters that read what the others recorded: executed after all of them


@dataclass
class BuildResult:
    """What `build` did: the executed notebooks' wall times, what it skipped, and where the outputs are."""

    profile: str
    build_dir: Path
    seconds: dict[str, float] = field(default_factory=dict)  # per executed notebook, and per step
    skipped: list[str] = field(default_factory=list)
    html_dir: Path | None = None
    pdf_path: Path | None = None

def build(
    profile: str = "default",
    notebooks: Sequence[str] | None = None,
    pdf: bool = False,
    *,
    execute: bool = True,
    render: bool = True,
    notebooks_dir: Path | None = None,
    build_dir: Path | None = None,
    html_dir: Path | None = None,
    pdf_path: Path | None = None,
    runs_dir: Path | None = None,
    profiles_dir: Path | None = None,
    book_dir: Path | None = None,
    progress: bool | None = None,
    jobs: int = 1,
    executor: str | None = None,
    log: Log = print,
) -> BuildResult:
    """Execute the profile's notebooks, then render the book (and print it to PDF if `pdf`).

    `notebooks` restricts execution to those stems (each must be in the profile); the book still shows
    every chapter executed by an earlier build of the same profile. `execute=False` only renders;
    `render=False` only executes. The directory arguments default to the repository's layout and exist
    for tests: `build_dir` is `build/<profile>`, `html_dir` is `book/_build/html`. `jobs`: notebooks executed
    side by side; `executor`: how the chapters train their runs (see the module docstring).
    """
    from ..config import check_int
    from ..executors import parse_executor, threads_per_worker

    check_int("jobs", jobs, 1)
    if executor is not None:
        parse_executor(executor)  # a bad executor is refused before any work
    prof = load_profile(profile, profiles_dir)  # before any work: a typo costs nothing
    stems = select(prof, notebooks)
    notebooks_dir = Path(notebooks_dir or NOTEBOOKS_DIR).resolve()
    if execute:
        check_profile(prof, notebooks_dir)  # every chapter's keys declared, of the declared kinds
    build_dir = Path(build_dir or BUILD_ROOT / prof.name).resolve()
    runs_dir = paths.runs_dir(runs_dir)
    book_dir = Path(book_dir or BOOK_DIR)
    if progress is None:
        progress = sys.stderr.isatty()
    result = BuildResult(profile=prof.name, build_dir=build_dir)

    present = [s for s in stems if (notebooks_dir / f"{s}.ipynb").is_file()]
    result.skipped = [s for s in stems if s not in present]
    for stem in result.skipped:
        log(f"warning: {notebooks_dir / stem}.ipynb does not exist yet; skipping {stem}")

    if execute:
        env = {} if executor is None else {"VAELIB_EXECUTOR": executor}
        if jobs > 1:
            threads = str(threads_per_worker(jobs))
            env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)  # torch's default thread count
        _execute_all(prof, present, notebooks_dir, build_dir, runs_dir, result, progress and jobs == 1, log,
                     jobs, env)
    if render:
        start = time.perf_counter()
        chapters = [s for s in prof.notebooks
                    if (build_dir / "notebooks" / f"{s}.ipynb").is_file() and (notebooks_dir / f"{s}.ipynb").is_file()]
        source = assemble_book(prof, chapters, build_dir, book_dir=book_dir)
        result.html_dir = render_book(source, Path(html_dir or HTML_DIR), log=log)
        result.seconds["(render book)"] = time.perf_counter() - start
        _save_timings(build_dir, {"(render book)": result.seconds["(render book)"]})
    if pdf:
        start = time.perf_counter()
        html = result.html_dir or Path(html_dir or HTML_DIR)
        result.pdf_path = print_pdf(html, Path(pdf_path or PDF_PATH), log=log)
        result.seconds["(print PDF)"] = time.perf_counter() - start
        _save_timings(build_dir, {"(print PDF)": result.seconds["(print PDF)"]})
    log(format_timings(result.seconds, title=f"Build of profile {prof.name!r}"))
    return result

def _execute_all(prof: Profile, stems: list[str], notebooks_dir: Path, build_dir: Path, runs_dir: Path,
                 result: BuildResult, progress: bool, log: Log, jobs: int = 1,
                 env: Mapping[str, str] | None = None) -> None:
    results_dir = build_dir / "results"
    tasks = []
    for i, stem in enumerate(stems, start=1):
        # Numbers recorded by an earlier run of this chapter would otherwise outlive a changed notebook.
        (results_dir / f"{stem}.json").unlink(missing_ok=True)
        tasks.append((stem, dict(source=notebooks_dir / f"{stem}.ipynb",
                                 output=build_dir / "notebooks" / f"{stem}.ipynb", parameters=prof.parameters(stem),
                                 runs_dir=runs_dir, results_dir=results_dir, run_log=run_log_path(build_dir, stem),
                                 tty=progress, label=f"[{i}/{len(stems)}] {stem}", extra_env=dict(env or {}))))
    if jobs == 1:
        for i, (stem, kwargs) in enumerate(tasks, start=1):
            log(f"[{i}/{len(tasks)}] executing {stem} (profile {prof.name}) ...")
            _record(build_dir, result, stem, lambda kw=kwargs: execute_notebook(**kw, log=log), log, kwargs["label"])
        return
    first = [t for t in tasks if t[0] not in GATHERS]
    last = [t for t in tasks if t[0] in GATHERS]
    threads = (env or {}).get("OMP_NUM_THREADS", "the default number of")
    log(f"executing {len(first)} notebooks (profile {prof.name}), {jobs} side by side with {threads} thread(s) "
        f"each, then {', '.join(s for s, _ in last) or 'nothing'}")
    failure: NotebookFailed | None = None
    # spawn: each notebook's papermill runs in its own process, with its own environment for its kernel.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [(stem, kwargs, pool.submit(_execute_printing, kwargs)) for stem, kwargs in first]
        for stem, kwargs, future in futures:
            try:
                _record(build_dir, result, stem, future.result, log, kwargs["label"])
            except NotebookFailed as error:
                failure = failure or error  # let the others finish, then report the first failure
    if failure is not None:
        raise failure
    for stem, kwargs in last:
        _record(build_dir, result, stem, lambda kw=kwargs: execute_notebook(**kw, log=log), log, kwargs["label"])


def _execute_printing(kwargs: dict[str, Any]) -> float:
    """A worker process's job: one notebook, its progress lines printed (each starts with its label)."""
    return execute_notebook(**kwargs, log=lambda line: print(line, flush=True))


def _record(build_dir: Path, result: BuildResult, stem: str, run: Callable[[], float], log: Log, label: str) -> None:
    try:
        seconds = run()
    except NotebookFailed:
        _save_timings(build_dir, {stem: None})
        raise
    result.seconds[stem] = seconds
    _save_timings(build_dir, {stem: seconds})
    log(f"{label} done in {_human(seconds)}")


def _save_timings(build_dir: Path, seconds: Mapping[str, float | None]) -> None:
    """Merge wall times into build_dir/timings.json (None: the notebook failed)."""
    path = build_dir / "timings.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    now = dt.datetime.now().isoformat(timespec="seconds")
    for name, secs in seconds.items():
        data[name] = {"seconds": None if secs is None else round(secs, 2),
                      "status": "failed" if secs is None else "ok", "finished": now}
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")

def _human(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"

def format_timings(seconds: Mapping[str, float], title: str = "Wall time") -> str:
    """A plain-text table of wall times, with the total."""
    if not seconds:
        return f"{title}: nothing was executed or rendered"
    width = max(len(name) for name in [*seconds, "total"])
    lines = [title, f"  {'step':<{width}}  {'wall time':>10}"]
    lines += [f"  {name:<{width}}  {_human(secs):>10}" for name, secs in seconds.items()]
    lines.append(f"  {'total':<{width}}  {_human(sum(seconds.values())):>10}")
    return "\n".join(lines)
