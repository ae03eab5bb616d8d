"""The chapter notebooks: committed clean, with one parameters cell, and each runs under the quick profile.

The `book` tests execute every notebook as `python -m vaelib.report build --profile quick --only STEM`
does, in book order, into build/quick/. Training runs go to the shared run cache (runs/, or $VAELIB_RUNS).
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from vaelib.book import NOTEBOOKS_DIR
from vaelib.book.build import build
from vaelib.book.profiles import available_profiles, load_profile

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
PARAMS = [pytest.param(p, id=p.stem) for p in NOTEBOOKS] or [
    pytest.param(None, marks=pytest.mark.skip(reason="no notebooks in notebooks/ yet"), id="none")]


def _parameters_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]


@pytest.mark.parametrize("path", PARAMS)
def test_notebook_is_committed_clean(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} hold outputs or execution counts; clear them "
                       "(executed copies are build products)")


@pytest.mark.parametrize("path", PARAMS)
def test_notebook_has_one_parameters_cell_declaring_profile(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    cells = _parameters_cells(nb)
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells tagged 'parameters'; papermill needs exactly one"
    (cell,) = cells
    assert cell.cell_type == "code", f"{path.name}: the 'parameters' cell must be a code cell"
    names = {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name)}
    names |= {node.target.id for node in ast.parse(cell.source).body
              if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
    assert "profile" in names, (f"{path.name}: the parameters cell must declare `profile = \"default\"`; "
                                "the build injects the profile's name")


@pytest.mark.parametrize("path", PARAMS)
def test_notebook_is_listed_in_every_profile(path: Path) -> None:
    for name in available_profiles():
        assert path.stem in load_profile(name).notebooks, f"{path.stem} is not in profile {name}"


@pytest.mark.book
@pytest.mark.parametrize("path", PARAMS)
def test_notebook_runs_under_the_quick_profile(path: Path) -> None:
    # Exactly the build's execution step, into the build's own folder (build/quick/notebooks): the book
    # can then be rendered from the very notebooks this test ran (`make book PROFILE=quick
    # REPORT_FLAGS=--skip-execute`, as CI does) instead of executing them a second time.
    result = build("quick", [path.stem], render=False, log=lambda line: None)
    assert path.stem in result.seconds
