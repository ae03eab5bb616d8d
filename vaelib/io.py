"""Atomic writes: a reader, or a process killed mid-write, never sees half a file.

Every file vaelib writes that something later trusts (config.json, history.csv, checkpoints, evaluation
caches, recorded numbers) goes through these: write to a temporary file in the same folder, flush it to
disk, then rename it over the target, which POSIX makes atomic.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` through a temporary file and a rename."""
    _atomic(path, lambda fh: fh.write(text.encode("utf-8")))


def write_json_atomic(path: Path, data: Any) -> None:
    """`data` as indented JSON (NaN allowed), atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=True, default=float) + "\n")


def save_torch_atomic(obj: Any, path: Path) -> None:
    """`torch.save(obj)` to `path` atomically: a crash mid-write leaves the previous file intact, and a
    half-written checkpoint never carries the real name."""
    import torch

    _atomic(path, lambda fh: torch.save(obj, fh))
