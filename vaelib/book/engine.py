"""The papermill engine of the book build: papermill's own nbclient engine, with two changes.

- The kernel talks to the build over IPC (Unix sockets in a private temporary folder) instead of TCP on
  localhost. ipykernel warns "Kernel is running over TCP without encryption" for every TCP kernel that has
  no CurveZMQ keys (ipykernel.kernelapp.IPKernelApp.init_sockets); over IPC there is nothing to encrypt,
  and only this user can open the sockets.
- It reports to a `vaelib.book.progress.Progress`: each code cell as it starts, each change of a progress
  bar the kernel draws (tqdm's widgets, seen as widget messages), and what the notebook prints.

Imported only when a notebook is executed (it imports papermill); `execute.execute_notebook` uses it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.log import logger
from traitlets.config import Config

from .progress import Progress, bar_text

ENGINE_NAME = "vaelib"


class ReportingClient(PapermillNotebookClient):
    """papermill's notebook client, telling `progress` where it is."""

    def __init__(self, nb_man: Any, progress: Progress | None = None, **kwargs: Any) -> None:
        super().__init__(nb_man, **kwargs)
        self.progress = progress
        code = [i for i, c in enumerate(self.nb.cells) if c.cell_type == "code"]
        self._code_number = {index: n for n, index in enumerate(code, start=1)}
        if progress is not None:
            progress.n_cells = len(code)
            self.on_cell_start = self._cell_started  # nbclient's hook, called as each code cell starts

    def _cell_started(self, cell: Any, cell_index: int) -> None:
        if cell.cell_type == "code":
            self.progress.cell(self._code_number[cell_index], cell.source)

    def handle_comm_msg(self, outs: list, msg: dict[str, Any], cell_index: int) -> None:
        super().handle_comm_msg(outs, msg, cell_index)
        if self.progress is None:
            return
        model_id = msg["content"].get("comm_id")
        found = bar_text(model_id, self.widget_state) if model_id else None
        if found is not None:
            self.progress.bar(*found)

    def process_message(self, *args: Any, **kwargs: Any) -> Any:
        output = super().process_message(*args, **kwargs)
        if self.progress is not None and output is not None and output.get("output_type") == "stream":
            self.progress.output("".join(output.get("text", "")))
        return output


class ReportingEngine(NBClientEngine):
    """NBClientEngine with an IPC kernel, a `progress` keyword (a Progress, or None) and a `kernel_log`
    keyword: a file for the kernel process's own output (its log lines, not the cells' outputs), such as
    the "KeyboardInterrupt caught in kernel" that ipykernel logs when jupyter_client's shutdown, which
    always interrupts first, lands while the kernel still handles a message."""

    @classmethod
    def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, log_output: bool = False,
                                 stdout_file: Any = None, stderr_file: Any = None, start_timeout: int = 60,
                                 execution_timeout: int | None = None, progress: Progress | None = None,
                                 kernel_log: Path | None = None, **kwargs: Any) -> Any:
        kwargs.pop("input_path", None)
        sockets = Path(tempfile.mkdtemp(prefix="vaelib-kernel-"))
        config = Config()
        config.KernelManager.transport = "ipc"
        config.KernelManager.ip = str(sockets / "kernel")  # an absolute path: the kernel runs elsewhere
        with ExitStack() as stack:
            stack.callback(shutil.rmtree, sockets, ignore_errors=True)
            start: dict[str, Any] = {}
            if kernel_log is not None:
                start = {"stdout": stack.enter_context(open(kernel_log, "wb")), "stderr": subprocess.STDOUT}
            return ReportingClient(
                nb_man, progress=progress, config=config, log=logger, timeout=execution_timeout,
                startup_timeout=start_timeout, kernel_name=kernel_name, log_output=log_output,
                stdout_file=stdout_file, stderr_file=stderr_file, **kwargs,
            ).execute(**start)  # start: keywords of the kernel's Popen


papermill_engines.register(ENGINE_NAME, ReportingEngine)
