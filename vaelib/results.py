"""Headline numbers of the book: each chapter records its own, the last chapter reads them all.

`record("03_mnist", "test_elbo", -96.2, unit="nats", estimator="ELBO, L=1, full test set",
anchor="Kingma & Welling 2013, Fig. 2", anchor_value=-100.0)` merges one number into
`<results dir>/03_mnist.json`; `load_all()` returns every recorded number as a DataFrame. The results
directory is $VAELIB_RESULTS (the book build sets it to build/<profile>/results), else
`<runs dir>/results` (`vaelib.paths.results_dir`).

`results_summary`, `format_results` and `results_tables` turn them into the results page's tables.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from . import paths
from .io import write_text_atomic

COLUMNS = ["chapter", "key", "value", "unit", "estimator", "anchor", "anchor_value", "note", "recorded_at"]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # chapter names become file names


def resolve_results_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """Where numbers are recorded: the argument, else $VAELIB_RESULTS, else <runs dir>/results."""
    return paths.results_dir(path)


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


def load_all(results_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Every recorded number, one row each, with columns COLUMNS; sorted by chapter, in recording order."""
    directory = resolve_results_dir(results_dir)
    rows = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        data = _read(path)
        chapter = data.get("chapter", path.stem)
        rows += [{"chapter": chapter, "key": key, **entry} for key, entry in data["results"].items()]
    return pd.DataFrame(rows, columns=COLUMNS)


# --- the results page ----------------------------------------------------------------------------------
def results_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Every recorded headline number (the output of `vaelib.results.load_all`) as one display table.

    Indexed by (chapter, quantity); columns: ours, anchor value, difference (ours - anchor, in the row's
    unit; NaN where there is no anchor), unit, estimator, anchor, note. An empty input gives an empty table
    with those columns.
    """
    columns = ["ours", "anchor value", "ours - anchor", "unit", "estimator", "anchor", "note"]
    if frame.empty:
        index = pd.MultiIndex.from_arrays([[], []], names=["chapter", "quantity"])
        return pd.DataFrame(columns=columns, index=index)
    missing = [c for c in ("chapter", "key", "value", "unit", "estimator") if c not in frame]
    if missing:
        raise ValueError(f"frame lacks column(s) {', '.join(missing)}; pass vaelib.results.load_all()")
    out = pd.DataFrame({
        "chapter": frame["chapter"],
        "quantity": frame["key"],
        "ours": pd.to_numeric(frame["value"], errors="coerce"),
        "anchor value": pd.to_numeric(frame.get("anchor_value"), errors="coerce"),
        "unit": frame["unit"],
        "estimator": frame["estimator"],
        "anchor": frame.get("anchor", pd.Series([None] * len(frame))).fillna(""),
        "note": frame.get("note", pd.Series([""] * len(frame))).fillna(""),
    })
    out["ours - anchor"] = out["ours"] - out["anchor value"]
    # A stable order: chapters by name (their numbers), quantities in the order each chapter recorded them.
    out = out.sort_values("chapter", kind="stable").set_index(["chapter", "quantity"])
    return out[columns]

def _format_number(value: float, unit: str, decimals: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    # Counts (active units, epochs) print as integers; nats and bits keep their decimals even when round.
    if float(value).is_integer() and not unit.startswith(("nats", "bits")):
        return f"{int(value):,}"
    return f"{value:,.{decimals}f}"

def format_results(table: pd.DataFrame, decimals: int = 2) -> pd.DataFrame:
    """`results_summary`'s table with its numbers as text for display: `decimals` digits (counts as
    integers), a sign on the difference, and empty cells, not "nan", where a number is missing."""
    out = table.copy()
    for column in ("ours", "anchor value", "ours - anchor"):
        out[column] = [_format_number(v, u, decimals) for v, u in zip(table[column], table["unit"], strict=True)]
    out["ours - anchor"] = [f"+{s}" if s and not s.startswith("-") and s.strip("0.,") else s
                            for s in out["ours - anchor"]]
    return out

def results_tables(table: pd.DataFrame, decimals: int = 2) -> dict[str, pd.DataFrame]:
    """`results_summary`'s table cut into one narrow display table per chapter, in chapter order.

    Each is indexed by quantity, with the columns ours (number and unit), anchor (its number and unit, then
    what it is), ours - anchor, estimator and note: five columns of text instead of seven, so a row fits on a
    page without scrolling sideways.
    """
    def with_unit(value: str, unit: str) -> str:
        return f"{value} {unit}" if value else ""

    def anchor(value: str, unit: str, name: str) -> str:
        return " ".join(part for part in (with_unit(value, unit), f"({name})" if name else "") if part)

    shown = format_results(table, decimals)
    tables = {}
    for chapter, rows in shown.groupby(level="chapter", sort=False):
        units = rows["unit"]
        tables[str(chapter)] = pd.DataFrame({
            "ours": [with_unit(v, u) for v, u in zip(rows["ours"], units, strict=True)],
            "anchor": [anchor(v, u, n) for v, u, n in zip(rows["anchor value"], units, rows["anchor"], strict=True)],
            "ours - anchor": rows["ours - anchor"].to_list(),
            "estimator": rows["estimator"].to_list(),
            "note": rows["note"].to_list(),
        }, index=pd.Index(rows.index.get_level_values("quantity"), name="quantity"))
    return tables
