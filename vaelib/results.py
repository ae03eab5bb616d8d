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

# Words for the tokens of a recorded key ("freyface_aevb_test_elbo_best_nz"): the results page names each
# row in words. Tokens not listed keep their spelling.
_WORDS = {
    "test": "test", "elbo": "ELBO", "log_px": "log p(x)", "nll": "NLL", "bits_per_dim": "bits/dim",
    "active_units": "active units", "aevb": "AEVB", "wake-sleep": "wake-sleep", "mcem": "MCEM",
    "binarized-mnist": "MNIST", "mnist": "MNIST", "freyface": "Frey Face", "best_nz": "best Nz",
    "vae": "VAE", "iwae": "IWAE", "iwae50": "IWAE (k = 50)", "conv": "conv", "mlp": "MLP",
    "paper_profile": "paper-budget run:",
}
_NUMBERED = re.compile(r"^(z|n|k|iw)(\d+)$")
_NUMBERED_WORDS = {"z": "Nz = {}", "n": "N = {:,}", "k": "k = {}", "iw": "k = {}"}


def quantity_name(key: str) -> str:
    """A recorded key in words: "test_elbo_z2" -> "test ELBO, Nz = 2", "aevb_n1000_test_log_px" ->
    "AEVB, N = 1,000, test log p(x)"; numbered tokens (z2, n1000, k20) become a trailing qualifier."""
    tokens = key.split("_")
    words, numbers, i = [], [], 0
    while i < len(tokens):
        joined = next((n for n in (3, 2) if i + n <= len(tokens) and "_".join(tokens[i:i + n]) in _WORDS), 0)
        if joined:
            words.append(_WORDS["_".join(tokens[i:i + joined])])
            i += joined
            continue
        match = _NUMBERED.match(tokens[i])
        if match:
            numbers.append(_NUMBERED_WORDS[match[1]].format(int(match[2])))
        else:
            words.append(_WORDS.get(tokens[i], tokens[i]))
        i += 1
    return ", ".join([" ".join(words), *numbers]) if numbers else " ".join(words)


def lower_is_better(key: str, unit: str) -> bool:
    """Whether a smaller number is the better one: an NLL or bits per dimension (a negated log-likelihood);
    for an ELBO or a log-likelihood (nats, higher is better) it is not."""
    return unit.startswith("bits") or "nll" in key.split("_")


def comparison(value: float, anchor_value: float, key: str, unit: str, decimals: int = 2) -> str:
    """"better by 1.24 nats" / "worse by ..." / "equal" / "" (no anchor): ours against the anchor, in words
    that do not depend on whether the quantity is one to raise or to lower."""
    if anchor_value is None or value is None or math.isnan(anchor_value) or math.isnan(value):
        return ""
    gap = round(value - anchor_value, decimals)
    if gap == 0:
        return "equal"
    better = (gap < 0) == lower_is_better(key, unit)
    return f"{'better' if better else 'worse'} by {abs(gap):,.{decimals}f} {unit}"


def results_tables(table: pd.DataFrame, decimals: int = 2) -> dict[str, pd.DataFrame]:
    """`results_summary`'s table cut into one narrow display table per chapter, in chapter order.

    Each is indexed by the quantity in words (`quantity_name`), with the columns ours (number and unit),
    anchor (its number and unit, then what it is), "vs anchor" (`comparison`: better or worse, by how much),
    estimator and note: five columns of text instead of seven, so a row fits on a page.
    """
    def with_unit(value: str, unit: str) -> str:
        return f"{value} {unit}" if value else ""

    def anchor(value: str, unit: str, name: str) -> str:
        return " ".join(part for part in (with_unit(value, unit), f"({name})" if name else "") if part)

    shown = format_results(table, decimals)
    tables = {}
    for chapter, rows in shown.groupby(level="chapter", sort=False):
        units = rows["unit"]
        keys = rows.index.get_level_values("quantity")
        numbers = table.loc[rows.index]
        tables[str(chapter)] = pd.DataFrame({
            "ours": [with_unit(v, u) for v, u in zip(rows["ours"], units, strict=True)],
            "anchor": [anchor(v, u, n) for v, u, n in zip(rows["anchor value"], units, rows["anchor"], strict=True)],
            "vs anchor": [comparison(v, a, k, u, decimals) for v, a, k, u in
                          zip(numbers["ours"], numbers["anchor value"], keys, units, strict=True)],
            "estimator": rows["estimator"].to_list(),
            "note": rows["note"].to_list(),
        }, index=pd.Index([quantity_name(k) for k in keys], name="quantity"))
    return tables


# --- the paper's claims, decided from the recorded numbers -----------------------------------------------
REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_RUN = "reproduced", "partly", "not reproduced", "not run"


def _value(frame: pd.DataFrame, chapter: str, key: str) -> float | None:
    rows = frame[(frame["chapter"] == chapter) & (frame["key"] == key)]
    return None if rows.empty else float(rows["value"].iloc[-1])


def _share(wins: list[bool]) -> str:
    """All comparisons won: reproduced; some: partly; none: not reproduced; no comparison: not run."""
    if not wins:
        return NOT_RUN
    return REPRODUCED if all(wins) else PARTLY if any(wins) else NOT_REPRODUCED


def _aevb_ahead_of_wake_sleep(frame: pd.DataFrame) -> tuple[list[bool], list[str]]:
    wins, said = [], []
    for dataset, name in (("binarized-mnist", "MNIST"), ("freyface", "Frey Face")):
        aevb = _value(frame, "07_wake_sleep", f"{dataset}_aevb_test_elbo_best_nz")
        sleep = _value(frame, "07_wake_sleep", f"{dataset}_wake-sleep_test_elbo_best_nz")
        if aevb is not None and sleep is not None and not (math.isnan(aevb) or math.isnan(sleep)):
            wins.append(aevb > sleep)
            said.append(f"{name}: AEVB {aevb:,.1f} vs wake-sleep {sleep:,.1f} nats")
    return wins, said


def claims_checklist(frame: pd.DataFrame) -> pd.DataFrame:
    """The paper's claims, each with its verdict at this build's budget, decided from the recorded numbers
    (`load_all`'s frame): columns claim, verdict (reproduced / partly / not reproduced / not run), evidence
    (the numbers that decided it), chapter. Bounds are test ELBOs in nats per example (higher is better).
    """
    rows = []
    wins, said = _aevb_ahead_of_wake_sleep(frame)
    # Chapter 7 runs both methods for the same number of training samples: the one ahead at the end of that
    # budget is the one that converged faster over it.
    rows.append(("AEVB converges faster than wake-sleep (Fig. 2)", _share(wins),
                 "; ".join(["test ELBO after the same number of training samples", *said]) if said else "", "7"))
    margin = [w for w, s in zip(wins, said, strict=True) if w]
    rows.append(("AEVB reaches better lower bounds than wake-sleep (Fig. 2)", _share(wins),
                 f"AEVB ahead on {len(margin)} of {len(wins)} data sets at the best Nz" if wins else "", "7"))

    sizes = sorted({int(k.split("_")[1][1:]) for k in frame.loc[frame["chapter"] == "08_marginal_likelihood", "key"]
                    if re.fullmatch(r"(aevb|mcem)_n\d+_test_log_px", k)})
    ml_wins, ml_said = [], []
    for n in sizes:
        aevb = _value(frame, "08_marginal_likelihood", f"aevb_n{n}_test_log_px")
        mcem = _value(frame, "08_marginal_likelihood", f"mcem_n{n}_test_log_px")
        if aevb is not None and mcem is not None and not (math.isnan(aevb) or math.isnan(mcem)):
            ml_wins.append(aevb > mcem)
            ml_said.append(f"N = {n:,}: AEVB {aevb:,.1f} vs MCEM {mcem:,.1f} nats")
    # The claim is about large N: the largest training set decides; a win only at smaller N is partly.
    verdict = NOT_RUN if not ml_wins else REPRODUCED if ml_wins[-1] else PARTLY if any(ml_wins) else NOT_REPRODUCED
    rows.append(("AEVB beats MCEM on the marginal likelihood for large N (Fig. 3)", verdict,
                 "; ".join(["test log p(x)", *ml_said]) if ml_said else "", "8"))

    mnist = _value(frame, "05_latent_dimension", "active_units_z2")
    frey = _value(frame, "06_freyface", "test_elbo_z2")
    shown = [mnist is not None and mnist >= 2, frey is not None and not math.isnan(frey)]
    manifold = NOT_RUN if mnist is None and frey is None else _share(shown)
    rows.append(("Learned 2-D manifolds of MNIST and Frey Face (Fig. 4)", manifold,
                 "" if manifold == NOT_RUN else
                 f"MNIST Nz = 2 model: {'not run' if mnist is None else f'{int(mnist)} of 2'} latent dimensions "
                 f"active; Frey Face Nz = 2 model {'trained' if shown[1] else 'not run'}", "5, 6"))

    elbos = {int(k.rsplit("z", 1)[1]): float(v) for k, v in
             frame.loc[frame["chapter"] == "05_latent_dimension", ["key", "value"]].itertuples(index=False)
             if re.fullmatch(r"test_elbo_z\d+", k)}
    # Fig. 5's samples of larger latent spaces are sharper; the bound says so: more Nz, a better test ELBO.
    if len(elbos) < 2:
        samples = NOT_RUN
    else:
        small, large = min(elbos), max(elbos)
        samples = REPRODUCED if elbos[large] > elbos[small] else NOT_REPRODUCED
    rows.append(("Samples from models of several latent dimensions, sharper for larger Nz (Fig. 5)", samples,
                 "; ".join(f"Nz = {z}: test ELBO {e:,.1f} nats" for z, e in sorted(elbos.items())), "5"))
    return pd.DataFrame(rows, columns=["claim", "verdict", "evidence", "chapter"])
