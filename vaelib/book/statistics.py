"""The book's execution-statistics page: per chapter, the wall time of its execution and the training runs it
asked for, loaded from the run cache or trained, under the profile of the build.

Sources: `build/<profile>/timings.json` (the build's wall times) and `build/<profile>/run-log/<stem>.jsonl`,
where the chapter's kernel appended a line per run it was handed (`vaelib.train.RUN_LOG_ENV`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .profiles import Profile

PAGE = "statistics"  # the page's name in the book (statistics.md among the back pages)
RUN_LOG_DIR = "run-log"


def run_log_path(build_dir: Path, stem: str) -> Path:
    """Where chapter `stem`'s kernel logs the runs it loads or trains."""
    return Path(build_dir) / RUN_LOG_DIR / f"{stem}.jsonl"


def run_counts(path: Path) -> dict[str, int] | None:
    """{"loaded", "trained", "epochs_trained"} summed over a run log; None if there is no log."""
    if not path.is_file():
        return None
    counts = {"loaded": 0, "trained": 0, "epochs_trained": 0}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed kernel
        counts["loaded" if entry.get("status") == "loaded" else "trained"] += 1
        counts["epochs_trained"] += int(entry.get("epochs_trained") or 0)
    return counts


def _wall(seconds: float | None) -> str:
    if seconds is None:
        return "failed"
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def statistics_page(profile: Profile, chapters: Sequence[str], build_dir: Path) -> str:
    """The page's markdown: one row per chapter of `chapters`, then the totals."""
    path = Path(build_dir) / "timings.json"
    timings: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    rows = ["| chapter | wall time | runs loaded | runs trained | epochs trained | executed |",
            "|---|---:|---:|---:|---:|---|"]
    total = {"seconds": 0.0, "loaded": 0, "trained": 0, "epochs_trained": 0}
    for stem in chapters:
        timing = timings.get(stem, {})
        counts = run_counts(run_log_path(build_dir, stem))
        seconds = timing.get("seconds")
        total["seconds"] += seconds or 0.0
        cells = ["-", "-", "-"] if counts is None else [str(counts[k]) for k in ("loaded", "trained", "epochs_trained")]
        for key in ("loaded", "trained", "epochs_trained"):
            total[key] += counts[key] if counts else 0
        finished = str(timing.get("finished", "-")).replace("T", " ")[:16]
        rows.append(f"| [{stem}](notebooks/{stem}.ipynb) | {_wall(seconds) if timing else '-'} | "
                    + " | ".join(cells) + f" | {finished} |")
    rows.append(f"| **total** | {_wall(total['seconds'])} | {total['loaded']} | {total['trained']} | "
                f"{total['epochs_trained']} | |")
    return "\n".join([
        "# Execution statistics",
        "",
        f"How this book was executed: profile `{profile.name}`, one papermill run per chapter "
        f"(`python -m vaelib.report build --profile {profile.name}`). The wall time is the chapter's whole "
        "execution, kernel start included. The runs are the training runs the chapter asked for by their "
        "configuration (`vaelib.train.fit_or_load`, and `fit` for the stages of Figure 3): loaded from the "
        "run cache, or trained (resumed included), with the epochs trained in all. A stage of Figure 3 whose "
        "model snapshot is cached is loaded without being counted. A dash: the chapter's last execution "
        "left no record.",
        "",
        *rows,
        "",
    ])


def write_statistics_page(source: Path, profile: Profile, chapters: Sequence[str], build_dir: Path) -> Path:
    """Write the page into the book's source folder; returns its path."""
    path = Path(source) / f"{PAGE}.md"
    path.write_text(statistics_page(profile, chapters, build_dir), encoding="utf-8")
    return path
