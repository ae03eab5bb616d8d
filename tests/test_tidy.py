"""vaelib.book.tidy on small notebooks: which cells get which tag, widget state gone, other outputs kept."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from vaelib.book import tidy
from vaelib.book.assemble import _copy_tidied


def _cell(source: str, outputs: list[dict[str, Any]] | None = None, tags: list[str] | None = None) -> dict:
    return {"cell_type": "code", "source": source, "metadata": {"tags": list(tags or [])},
            "outputs": list(outputs or []), "execution_count": 1}


def _display(**data: Any) -> dict[str, Any]:
    return {"output_type": "display_data", "metadata": {}, "data": {"text/plain": "<object>", **data}}


WIDGET = _display(**{tidy.WIDGET_MIME: {"model_id": "abc", "version_major": 2, "version_minor": 0}})
TABLE = _display(**{"text/html": "<table><tr><td>1</td></tr></table>"})
CAPTION = _display(**{"text/markdown": "**Figure 1.** A caption."})
STDERR = {"output_type": "stream", "name": "stderr", "text": "mnist-z20: 2 epochs, 0 s of training\n"}


def _tags(cell: dict[str, Any]) -> list[str]:
    nb = tidy.tidy_notebook({"metadata": {}, "cells": [copy.deepcopy(cell)]})
    return nb["cells"][0]["metadata"]["tags"]


@pytest.mark.parametrize(("cell", "tag"), [
    (_cell('profile: str = "default"  # the profile', tags=["parameters"]), tidy.HIDE_INPUT),
    (_cell('# Parameters\nprofile = "quick"\n', tags=["injected-parameters"]), tidy.HIDE_INPUT),
    (_cell("from vaelib.book.notebook import start_chapter\n\nstart_chapter(globals())",
           [_display(**{"text/html": "<div>banner</div>"})]), tidy.REMOVE_CELL),
    (_cell("import torch\n\nfrom vaelib import figures"), tidy.REMOVE_CELL),
    (_cell("from vaelib import figures\n\nfigures.set_style()"), tidy.REMOVE_CELL),
    (_cell('for entry in rows:\n    record("07", entry["key"], entry["value"])'), tidy.REMOVE_CELL),
    (_cell('Markdown(f"**Figure 1.** {n} samples")', [CAPTION]), tidy.REMOVE_INPUT),
    (_cell('display(Markdown("- a"))\ndisplay(Latex("$x$"))',
           [CAPTION, _display(**{"text/latex": "$x$"})]), tidy.REMOVE_INPUT),
])
def test_plumbing_cells_are_tagged(cell: dict[str, Any], tag: str) -> None:
    assert _tags(cell) == [*cell["metadata"]["tags"], tag]


@pytest.mark.parametrize("cell", [
    _cell("table = compare(x)\ntable.round(2)", [TABLE]),  # an analysis a reader may want to see
    _cell("figures.samples_figure(model, shape)", [_display(**{"image/png": "iVBOR"})]),
    _cell('display(Markdown("Table 1."))\ntable', [CAPTION, TABLE]),  # a caption beside a table: code shown
    _cell("import torch\ntorch.manual_seed(0)"),  # does more than import
    _cell("from vaelib import figures\nfigures.set_style()\nx = load()"),
    _cell("x = 1"),
    _cell("%timeit f()"),  # not Python: left alone
])
def test_analysis_cells_keep_their_input(cell: dict[str, Any]) -> None:
    assert _tags(cell) == []


def test_a_progress_bar_is_dropped_and_the_rest_kept() -> None:
    cell = _cell("run = train(config)", [WIDGET, STDERR, TABLE])
    nb = tidy.tidy_notebook({"metadata": {"widgets": {"application/vnd.jupyter.widget-state+json": {}}},
                             "cells": [cell]})
    assert "widgets" not in nb["metadata"]
    assert nb["cells"][0]["outputs"] == [STDERR, TABLE]
    assert nb["cells"][0]["metadata"]["tags"] == []


def test_a_cell_left_with_only_its_caption_loses_its_input() -> None:
    # The progress bar goes first, so a training cell that then writes its caption reads as a caption.
    cell = _cell('run = train(config)\nMarkdown(f"Trained {run.epochs} epochs")', [WIDGET, CAPTION])
    assert _tags(cell) == [tidy.REMOVE_INPUT]


def test_tags_are_added_once_and_outputs_of_tagged_cells_kept() -> None:
    cell = _cell('Markdown(f"**Figure 2.** caption")', [CAPTION], tags=["remove-input"])
    nb = tidy.tidy_notebook({"metadata": {}, "cells": [cell, {"cell_type": "markdown", "source": "# Title",
                                                             "metadata": {}}]})
    assert nb["cells"][0]["metadata"]["tags"] == ["remove-input"]
    assert nb["cells"][0]["outputs"] == [CAPTION]
    assert nb["cells"][1] == {"cell_type": "markdown", "source": "# Title", "metadata": {}}


def test_the_book_source_gets_the_tidied_copy_and_the_executed_notebook_is_untouched(tmp_path) -> None:
    executed = tmp_path / "executed.ipynb"
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"widgets": {"state": {}}},
          "cells": [_cell("run = train(config)", [WIDGET, TABLE])]}
    executed.write_text(json.dumps(nb))
    target = tmp_path / "book.ipynb"
    _copy_tidied(executed, target)
    assert json.loads(executed.read_text()) == nb
    copied = json.loads(target.read_text())
    assert "widgets" not in copied["metadata"] and copied["cells"][0]["outputs"] == [TABLE]
    assert target.stat().st_mtime_ns >= executed.stat().st_mtime_ns
