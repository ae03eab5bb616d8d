"""What the build shows while a notebook executes: the cell it is in, of how many, and the progress bars the
kernel draws (training epochs, samples per second, time left; the log p(x) estimates).

The kernel draws its tqdm bars as Jupyter widgets, whose updates reach the build as widget messages
(`vaelib.book.engine` passes them here). In a terminal one status line is rewritten in place; anywhere else
(a CI log, a file) every report is a plain line, a bar at most every `interval_s` seconds and when it ends,
and a line every `heartbeat_s` seconds while a cell runs without saying anything.
"""

from __future__ import annotations

import html
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

Log = Callable[[str], None]

_TEXT_MODELS = ("HTMLModel", "LabelModel", "HTMLMathModel")
_PROGRESS_MODELS = ("FloatProgressModel", "IntProgressModel")
MAX_STREAM_LINES = 20  # printed lines of a cell's own output; the rest is in the executed notebook


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def bar_text(model_id: str, states: Mapping[str, Mapping[str, Any]]) -> tuple[str, str, bool] | None:
    """The text of the progress bar that widget `model_id` belongs to, as (bar id, text, finished), or None.

    A tqdm bar in a kernel is an HBox of a text, a progress bar and a text (tqdm.notebook); the text is
    what tqdm prints in a terminal, less the bar itself. `states` maps model ids to their widget state.
    """
    for box_id, box in states.items():
        children = [str(c).removeprefix("IPY_MODEL_") for c in box.get("children") or []]
        if box.get("_model_name") != "HBoxModel" or model_id not in children and model_id != box_id:
            continue
        parts, finished, has_bar = [], False, False
        for child in children:
            state = states.get(child, {})
            name = state.get("_model_name")
            if name in _TEXT_MODELS:
                text = html.unescape(re.sub(r"<[^>]*>", "", str(state.get("value") or "")))
                text = text.replace("\u2007", " ").replace("\xa0", " ").strip()  # tqdm.notebook's padding
                if text:
                    parts.append(text)
            elif name in _PROGRESS_MODELS:
                has_bar = True
                # tqdm.notebook's close() styles the bar after its last update: success, or danger if cut short
                finished = state.get("bar_style") in ("success", "danger")
        if has_bar and parts:
            return box_id, " ".join(parts), finished
    return None


class Progress:
    """Reports on one notebook's execution: `cell()` when a code cell starts, `bar()` when a progress bar
    changes, `output()` for text the notebook prints. Thread-safe; `close()` stops the heartbeat."""

    def __init__(self, label: str, n_cells: int, log: Log, *, tty: bool = False, stream: TextIO | None = None,
                 interval_s: float = 10.0, heartbeat_s: float = 30.0) -> None:
        self.label, self.n_cells, self.log, self.tty = label, n_cells, log, tty
        self.stream = stream or sys.stderr
        self.interval_s, self.heartbeat_s = interval_s, heartbeat_s
        self._lock = threading.RLock()
        self._cell = 0
        self._cell_started = self._last_said = time.monotonic()
        self._bar = ""
        self._bar_said: dict[str, float] = {}
        self._bars_done: set[str] = set()
        self._lines_this_cell = 0
        self._status_shown = False
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()

    # --- what the engine reports ---------------------------------------------------------------------
    def cell(self, number: int, source: str) -> None:
        """Code cell `number` (1-based, of `n_cells`) starts; `source` is its code."""
        with self._lock:
            self._cell, self._cell_started, self._bar, self._lines_this_cell = number, time.monotonic(), "", 0
            first = next((line.strip() for line in source.splitlines() if line.strip()), "")
            self._say(f"{self.label}: cell {number}/{self.n_cells}" + (f": {first[:80]}" if first else ""),
                      status=True)

    def bar(self, bar_id: str, text: str, finished: bool) -> None:
        """Progress bar `bar_id` of the kernel now reads `text`; `finished`: it was closed."""
        with self._lock:
            if bar_id in self._bars_done:
                return
            now = time.monotonic()
            line = f"{self.label}: cell {self._cell}/{self.n_cells}: {text}"
            if finished:
                self._bars_done.add(bar_id)
                self._bar = ""
                self._say(line)
            elif self.tty:
                self._bar = text
                self._draw()
            # A bar's first state says nothing yet; then a line every interval_s, and its last state.
            elif now - self._bar_said.setdefault(bar_id, now) >= self.interval_s:
                self._bar_said[bar_id] = now
                self._say(line)

    def output(self, text: str) -> None:
        """Text the notebook printed (stdout or stderr): each line, up to MAX_STREAM_LINES per cell."""
        with self._lock:
            for line in text.split("\n"):  # not splitlines(), which also splits at "\r"
                line = line.rsplit("\r", 1)[-1].rstrip()  # a carriage-return bar: its last state
                if not line:
                    continue
                self._lines_this_cell += 1
                if self._lines_this_cell <= MAX_STREAM_LINES:
                    self._say(f"{self.label}: | {line[:200]}")
                elif self._lines_this_cell == MAX_STREAM_LINES + 1:
                    self._say(f"{self.label}: | ... (the rest of this cell's output is in the executed notebook)")

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self.tty and self._status_shown:
                self.stream.write("\r\033[K")
                self.stream.flush()
                self._status_shown = False

    # --- how it is shown -----------------------------------------------------------------------------
    def _say(self, line: str, status: bool = False) -> None:
        """A line to keep: in a terminal above the status line (a status report only redraws the line)."""
        self._last_said = time.monotonic()
        if self.tty:
            if not status:
                self.stream.write("\r\033[K")
                self.stream.flush()
                self._status_shown = False
                self.log(line)
            self._draw()
        else:
            self.log(line)

    def _draw(self) -> None:
        elapsed = _clock(time.monotonic() - self._cell_started)
        text = f"{self.label}: cell {self._cell}/{self.n_cells} ({elapsed})" + (f" {self._bar}" if self._bar else "")
        width = shutil.get_terminal_size((120, 20)).columns - 1
        self.stream.write("\r\033[K" + text[:width])
        self.stream.flush()
        self._status_shown = True

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                if self._stop.is_set() or not self._cell:
                    continue
                if self.tty:
                    self._draw()
                elif time.monotonic() - self._last_said >= self.heartbeat_s:
                    self._say(f"{self.label}: cell {self._cell}/{self.n_cells} still running "
                              f"({_clock(time.monotonic() - self._cell_started)})")
