"""Keep the machinery out of the reader's sight: `tidy_notebook` is applied to every executed notebook as the
book is assembled (the executed notebook under build/<profile>/notebooks/ and the source keep everything).

- The parameters cell and papermill's injected-parameters cell get `hide-input`: a reader can open them.
- The `start_chapter(globals())` cell goes (`remove-cell`): the profile's banner it shows is already the
  announcement at the top of every page, so the box appears once per page.
- Cells that only import (and set the figures' style), or only record numbers for the results page and show
  nothing, go (`remove-cell`).
- Cells whose outputs are all text a cell wrote (Markdown(f"..."), Latex, display(Markdown(...))), i.e.
  captions and findings built from the build's numbers, keep the text and lose the code (`remove-input`).
- Widget state goes: ipywidgets/tqdm progress bars are `application/vnd.jupyter.widget-view+json` outputs
  that a static page cannot show (myst-nb would ship their state, 637 KB on chapter 8), and the notebook's
  `metadata.widgets` that holds that state.
"""

from __future__ import annotations

import ast
from typing import Any

HIDE_INPUT = "hide-input"
REMOVE_INPUT = "remove-input"
REMOVE_CELL = "remove-cell"
PARAMETER_TAGS = ("parameters", "injected-parameters")  # papermill's two tags
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# The mime types of text a cell writes for the reader: such a cell is a caption or a finding, not an analysis.
TEXT_MIMES = {"text/markdown", "text/latex"}
PLUMBING_CALLS = {"start_chapter", "profile_banner"}  # vaelib.book.notebook: the banner, once per page
SETUP_CALLS = {"set_style"}  # vaelib.figures.set_style: an import cell's one line of setup, nothing shown
RECORDING_CALLS = {"record"}  # vaelib.results.record: numbers kept for chapter 10, nothing shown


def tidy_notebook(nb: dict[str, Any]) -> dict[str, Any]:
    """Tag and strip `nb` (an nbformat-4 notebook as a dict, changed in place and returned) for the book.

    Tags are added, never removed, so a tag a chapter sets itself wins; outputs are kept except widget views.
    """
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        cell["outputs"] = [o for o in cell.get("outputs", []) if not _is_widget(o)]
        tag = cell_tag(cell)
        if tag is not None:
            tags = cell.setdefault("metadata", {}).setdefault("tags", [])
            if tag not in tags:
                tags.append(tag)
    return nb


def cell_tag(cell: dict[str, Any]) -> str | None:
    """The tag `tidy_notebook` gives a code cell (after its widget outputs are gone), or None to show it."""
    tags = cell.get("metadata", {}).get("tags", [])
    if any(t in tags for t in PARAMETER_TAGS):
        return HIDE_INPUT
    source = "".join(cell.get("source", ""))
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics: not ours to judge
        return None
    calls = _called_names(tree)
    outputs = cell.get("outputs", [])
    if calls & PLUMBING_CALLS:
        return REMOVE_CELL
    if tree.body and all(_is_import_or_setup(node) for node in tree.body) and not outputs:
        return REMOVE_CELL
    if calls & RECORDING_CALLS and not outputs:
        return REMOVE_CELL
    shown = [o for o in outputs if o.get("output_type") in ("display_data", "execute_result")]
    if shown and all(_is_text(o) for o in shown):
        return REMOVE_INPUT
    return None


def _called_names(tree: ast.AST) -> set[str]:
    """Names of the functions called anywhere in `tree` (`f(...)` and `obj.f(...)` both give 'f')."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                names.add(func.id)
            elif isinstance(func, ast.Attribute):
                names.add(func.attr)
    return names


def _is_import_or_setup(node: ast.stmt) -> bool:
    """An import, or a bare call of one of SETUP_CALLS (`figures.set_style()`)."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return True
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and bool(_called_names(node.value) & SETUP_CALLS))


def _is_widget(output: dict[str, Any]) -> bool:
    return WIDGET_MIME in output.get("data", {})


def _is_text(output: dict[str, Any]) -> bool:
    """A displayed output whose richest form is Markdown or LaTeX (beside its text/plain repr)."""
    kinds = set(output.get("data", {})) - {"text/plain"}
    return bool(kinds) and kinds <= TEXT_MIMES
