"""The chapter notebooks: committed clean, with one parameters cell, and each runs under the quick profile.

The `book` tests execute every notebook as `python -m vaelib.report build --profile quick --only STEM`
does, in book order, into build/quick/. Training runs go to the shared run cache (runs/, or $VAELIB_RUNS).
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import nbformat
import pytest

from vaelib.book import NOTEBOOKS_DIR
from vaelib.book.build import build
from vaelib.book.parameters import check_parameters, declared_parameters, notebook_parameters
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
    declared = declared_parameters(cell.source)  # every line `name: kind = default  # help`, default of its kind
    assert "profile" in declared, (f"{path.name}: the parameters cell must declare `profile: str = \"default\"`; "
                                   "the build injects the profile's name")


@pytest.mark.parametrize("path", PARAMS)
def test_papermill_lists_every_parameter_with_its_kind_and_comment(path: Path) -> None:
    # What `papermill --help-notebook` prints comes from papermill's own reading of the cell: it must see
    # every declared parameter (a line it cannot parse would also make `-p` warn "unknown parameter").
    from papermill.translators import PythonTranslator

    (cell,) = _parameters_cells(nbformat.read(path, as_version=4))
    listed = PythonTranslator.inspect(cell)
    declared = declared_parameters(cell.source)
    assert [p.name for p in listed] == list(declared)
    for p in listed:
        kind = " or ".join(declared[p.name].kinds)
        assert p.inferred_type_name == kind, f"{path.name}: {p.name} shows {p.inferred_type_name}, not {kind}"
        assert p.help, f"{path.name}: {p.name} has no comment on its line, so --help-notebook explains nothing"


@pytest.mark.parametrize("path", PARAMS)
def test_second_cell_checks_the_parameters_before_any_work(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), f"{path.name}: the first code cell must be the parameters"
    assert code[1].source.strip().endswith("start_chapter(globals())"), (
        f"{path.name}: the cell after the parameters must call start_chapter(globals()), which refuses "
        "undeclared or ill-kinded injected parameters before any work")
    calls = {n.func.id for n in ast.walk(ast.parse(code[1].source)) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Name)}
    assert calls == {"start_chapter", "globals"}, f"{path.name}: the second cell does other work: {calls}"


PROFILE_CHAPTERS = [pytest.param(name, stem, id=f"{name}-{stem}") for name in available_profiles()
                    for stem in load_profile(name).notebooks]


@pytest.mark.parametrize(("profile", "stem"), PROFILE_CHAPTERS)
def test_every_profile_key_is_declared_by_its_chapter(profile: str, stem: str) -> None:
    """The rule the build applies before executing anything (vaelib.book.parameters.check_profile), chapter by
    chapter: a key the notebook does not declare, or a value not of its kind, fails here."""
    path = NOTEBOOKS_DIR / f"{stem}.ipynb"
    if not path.is_file():
        pytest.skip(f"{path.name} does not exist yet")
    check_parameters(notebook_parameters(path), load_profile(profile).parameters(stem), where=stem)


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
    # Its progress lines go to the log: live in CI (`.ci/run` turns on pytest's live log), else shown on failure.
    result = build("quick", [path.stem], render=False, log=logging.getLogger("vaelib.book").info)
    assert path.stem in result.seconds
