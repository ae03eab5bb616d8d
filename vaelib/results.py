"""Headline numbers of the book: each chapter records its own, the last chapter reads them all.

`record("03_mnist", "test_elbo", -96.2, unit="nats", estimator="ELBO, L=1, full test set",
anchor="Kingma & Welling 2013, Fig. 2", anchor_value=-100.0)` merges one number into
`<results dir>/03_mnist.json`; `load_all()` returns every recorded number as a DataFrame. The results
directory is $VAELIB_RESULTS (the book build sets it to build/<profile>/results), else
`<runs dir>/results` with the runs directory of `vaelib.train.default_runs_dir`.

`profile_banner(profile)` shows, at the top of a notebook, which profile it was executed with.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

COLUMNS = ["chapter", "key", "value", "unit", "estimator", "anchor", "anchor_value", "note", "recorded_at"]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # chapter names become file names


def resolve_results_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """Where numbers are recorded: the argument, else $VAELIB_RESULTS, else <runs dir>/results."""
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get("VAELIB_RESULTS"):
        return Path(os.environ["VAELIB_RESULTS"]).expanduser()
    from .train import default_runs_dir  # imports torch: only when the fallback is needed

    return default_runs_dir() / "results"


def record(
    chapter: str,
    key: str,
    value: float,
    unit: str,
    estimator: str,
    anchor: str | None = None,
    anchor_value: float | None = None,
    note: str = "",
    *,
    directory: str | os.PathLike[str] | None = None,
) -> None:
    """Record one headline number (returns nothing, so a cell ending with it shows no output).

    chapter: the notebook stem, e.g. "03_mnist" (the build clears that chapter's file before re-running it).
    key: a stable name for the number within the chapter, e.g. "test_log_px_iw5000".
    value, unit: the number and its unit, e.g. "nats" (per example) or "bits/dim".
    estimator: how it was computed, e.g. "importance sampled, k=5000, 10,000 test images".
    anchor, anchor_value: what to compare it with (a reference or bib key) and that reference's value.
    note: anything a reader must know (a reduced budget, a subset).

    Recording the same key again replaces it. The file is replaced atomically, so a crash mid-write leaves
    the previous version intact.
    """
    if not isinstance(chapter, str) or not _NAME.fullmatch(chapter):
        raise ValueError(f"chapter must be a notebook stem like '03_mnist' (letters, digits, _ . -), "
                         f"not {chapter!r}")
    if not isinstance(key, str) or not key.strip():
        raise ValueError("key must be a non-empty string naming the number")
    if not isinstance(unit, str) or not unit.strip():
        raise ValueError(f"unit must be given (e.g. 'nats' or 'bits/dim') for {chapter}/{key}")
    if not isinstance(estimator, str) or not estimator.strip():
        raise ValueError(f"estimator must say how {chapter}/{key} was computed (e.g. 'ELBO, L=1')")
    entry = {
        "value": _number(value, "value"),
        "unit": unit,
        "estimator": estimator,
        "anchor": anchor,
        "anchor_value": None if anchor_value is None else _number(anchor_value, "anchor_value"),
        "note": note,
        "recorded_at": dt.datetime.now().isoformat(timespec="seconds"),
    }
    path = resolve_results_dir(directory) / f"{chapter}.json"
    data = _read(path) if path.is_file() else {"chapter": chapter, "results": {}}
    data["results"][key] = entry
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=True) + "\n")


def _number(value: Any, name: str) -> float:
    try:
        number = float(value)  # accepts numpy and 0-d torch scalars
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number, not {value!r}") from exc
    if math.isinf(number):
        raise ValueError(f"{name} is infinite; record a finite number (NaN is allowed for 'not computed')")
    return number


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); delete it and rerun its chapter") from exc
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise ValueError(f"{path} is not a results file (expected {{'chapter': ..., 'results': {{...}}}})")
    return data


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_all(results_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Every recorded number, one row each, with columns COLUMNS; sorted by chapter, in recording order."""
    directory = resolve_results_dir(results_dir)
    rows = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        data = _read(path)
        chapter = data.get("chapter", path.stem)
        rows += [{"chapter": chapter, "key": key, **entry} for key, entry in data["results"].items()]
    return pd.DataFrame(rows, columns=COLUMNS)


def profile_banner(profile: str) -> None:
    """Display the profile's banner as an admonition; call it in the cell after the parameters cell.

    In the book the box uses the theme's admonition style; in JupyterLab it is a plain box; in a terminal
    (text/plain) it is one line.
    """
    from html import escape

    from IPython.display import display

    from .report import ProfileError, available_profiles, load_profile

    try:
        prof = load_profile(profile)
        title, text, kind = f"Profile: {prof.name}", prof.banner, "warning" if prof.name == "quick" else "note"
    except ProfileError:
        # A notebook run by hand with a made-up profile still runs; it just says so.
        title, kind = f"Profile: {profile}", "warning"
        text = (f"{profile!r} is not one of the book's profiles ({', '.join(available_profiles())}); "
                "this notebook was run with hand-picked parameters.")
    # The theme's own admonition classes, so the box looks like the book's other admonitions.
    html = (f'<div class="admonition {kind}"><p class="admonition-title"><strong>{escape(title)}</strong></p>'
            f"<p>{escape(text)}</p></div>")
    display({"text/html": html, "text/plain": f"{title}. {text}"}, raw=True)
