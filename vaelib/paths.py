"""Where things live: the data files, the run cache, the recorded results, the book's folders.

Every directory resolves the same way whatever the working directory (the repository root, `notebooks/`,
a papermill kernel with or without `--cwd`, JupyterLab started anywhere, the CLI): an explicit argument,
else its environment variable, else a fixed place in this checkout. So one checkout has one run cache.

| what | argument | environment | default |
|---|---|---|---|
| data sets (`*.npz`) | `data_dir=` | `$VAELIB_DATA` | `<repo>/data` if it exists, else `~/.cache/vaelib/data` |
| run cache | `runs_dir=` | `$VAELIB_RUNS` | `<repo>/runs` (a checkout), else `~/.cache/vaelib/runs` |
| headline numbers | `results_dir=` | `$VAELIB_RESULTS` | `<runs dir>/results` |
| live figures' decoders | `live_dir=` | `$VAELIB_LIVE` | none: set by the book build only |

`<repo>` is the checkout this package was imported from: the folder above `vaelib/` when it holds
`pyproject.toml` and `notebooks/`. An installed (non-editable) vaelib has none, and uses the user cache.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _find_repo_root() -> Path | None:
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() else None


REPO_ROOT: Path | None = _find_repo_root()


def _user_cache(name: str) -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "vaelib" / name


def _given(path: str | os.PathLike | None, variable: str) -> Path | None:
    if path:
        return Path(path).expanduser().resolve()
    if os.environ.get(variable):
        return Path(os.environ[variable]).expanduser().resolve()
    return None


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The directory of the `.npz` data files: `path`, else $VAELIB_DATA, else `<repo>/data` when it exists
    (`make data` links the shared copies there), else the user cache (where missing files are downloaded)."""
    given = _given(path, "VAELIB_DATA")
    if given is not None:
        return given
    if REPO_ROOT is not None and (REPO_ROOT / "data").is_dir():
        return REPO_ROOT / "data"
    return _user_cache("data")


def runs_dir(path: str | os.PathLike | None = None) -> Path:
    """The run cache: `path`, else $VAELIB_RUNS, else `<repo>/runs`, else the user cache. Absolute, so a
    kernel that changes its working directory keeps the same cache."""
    given = _given(path, "VAELIB_RUNS")
    if given is not None:
        return given
    return REPO_ROOT / "runs" if REPO_ROOT is not None else _user_cache("runs")


def results_dir(path: str | os.PathLike | None = None) -> Path:
    """Where headline numbers are recorded: `path`, else $VAELIB_RESULTS, else `<runs dir>/results`."""
    given = _given(path, "VAELIB_RESULTS")
    return given if given is not None else runs_dir() / "results"


def live_dir(path: str | os.PathLike | None = None) -> Path | None:
    """Where a book build wants the decoders of its live figures (vaelib.figures.live): `path`, else
    $VAELIB_LIVE (build/<profile>/live, set by vaelib.book.execute), else None: outside a build there is no
    page to put them in."""
    return _given(path, "VAELIB_LIVE")


def checkout(name: str) -> Path:
    """A folder of the checkout (`notebooks`, `book`, `build`, ...); a clear error outside a checkout."""
    if REPO_ROOT is None:
        raise FileNotFoundError(f"vaelib was imported from {PACKAGE_DIR}, not from a checkout of the repository, "
                                f"so there is no {name}/ folder; clone the repository and install it with "
                                "`pip install -e .`")
    return REPO_ROOT / name
