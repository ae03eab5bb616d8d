"""Execute one notebook with papermill: in its own folder, with the run cache and the results folder set in
the kernel's environment, and a failure reported as the notebook, the cell and the error."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import paths
from . import BuildError
from .progress import Log, Progress

KERNEL = "python3"
LIVE_DIR = "live"  # beside the results folder: the decoders the chapters export for the book's live figures


class NotebookFailed(BuildError):
    """A notebook raised while papermill executed it."""

    def __init__(self, message: str, *, stem: str, cell_index: int | None, ename: str, evalue: str,
                 output: Path) -> None:
        super().__init__(message)
        self.stem = stem
        self.cell_index = cell_index
        self.ename = ename
        self.evalue = evalue
        self.output = output

@contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration (the kernel papermill starts inherits them)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old

def kernel_environment(runs_dir: Path, results_dir: Path) -> dict[str, str]:
    """The variables a notebook's kernel gets: where runs are cached, where its numbers go, and where its live
    figures' decoders go (`results_dir`'s sibling LIVE_DIR, build/<profile>/live in a build)."""
    path = os.environ.get("PYTHONPATH")
    # The repository first on the path, so the notebooks import this checkout's vaelib even where the
    # package is not installed in editable mode.
    root = str(paths.PACKAGE_DIR.parent)
    pythonpath = os.pathsep.join([root, path] if path else [root])
    return {"VAELIB_RUNS": str(runs_dir), "VAELIB_RESULTS": str(results_dir), "PYTHONPATH": pythonpath,
            "VAELIB_LIVE": str(Path(results_dir).parent / LIVE_DIR)}

def execute_notebook(source: Path, output: Path, parameters: Mapping[str, Any], *, runs_dir: Path,
                     results_dir: Path, run_log: Path | None = None, log: Log | None = None,
                     tty: bool = False, label: str | None = None, extra_env: Mapping[str, str] | None = None) -> float:
    """Execute `source` into `output` with papermill, in `source`'s folder; return the wall time in seconds.

    `log` gets the progress lines, each starting with `label` (default: the notebook's name): the cell it is
    in, the kernel's progress bars, what it prints (nothing if None); with `tty`, one status line redrawn.
    The runs the notebook loads or trains are appended to `run_log` (JSON lines, `vaelib.train.RUN_LOG_ENV`);
    the kernel process's own log goes to `output` with the suffix .kernel.log. `extra_env`: more variables for
    the kernel (the build's executor and thread share). Raises NotebookFailed naming the notebook, the failing
    cell and the error.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from ..train import RUN_LOG_ENV  # imports torch: only a build that executes notebooks pays for it
    from .engine import ENGINE_NAME

    source, output = Path(source).resolve(), Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    environment = {**kernel_environment(runs_dir, results_dir), **(extra_env or {})}
    if run_log is not None:
        run_log.parent.mkdir(parents=True, exist_ok=True)
        run_log.write_text("")  # empty: a chapter that asks for no run still says so
        environment[RUN_LOG_ENV] = str(run_log)
    kernel_log = output.with_suffix(".kernel.log")
    progress = Progress(label or source.stem, 0, log, tty=tty) if log is not None else None
    start = time.perf_counter()
    with _environ(environment):
        try:
            papermill.execute_notebook(
                str(source), str(output), parameters=dict(parameters), kernel_name=KERNEL,
                cwd=str(source.parent), progress_bar=False, log_output=False, engine_name=ENGINE_NAME,
                progress=progress, kernel_log=kernel_log,
            )
        except PapermillExecutionError as exc:
            first_line = (exc.source or "").strip().splitlines()[:1]
            where = f", which starts `{first_line[0][:80]}`" if first_line else ""
            raise NotebookFailed(
                f"notebook {source.stem} failed in cell {exc.cell_index}{where} (cell index in the executed "
                f"copy, counting papermill's injected-parameters cell): {exc.ename}: {exc.evalue}\n"
                f"The traceback is in {output}",
                stem=source.stem, cell_index=exc.cell_index, ename=exc.ename, evalue=exc.evalue, output=output,
            ) from exc
        except Exception as exc:  # a kernel that died or would not start: still name the notebook
            raise NotebookFailed(
                f"notebook {source.stem} could not be executed: {type(exc).__name__}: {exc}\n"
                f"The kernel's own log is in {kernel_log}",
                stem=source.stem, cell_index=None, ename=type(exc).__name__, evalue=str(exc), output=output,
            ) from exc
        finally:
            if progress is not None:
                progress.close()
    return time.perf_counter() - start
