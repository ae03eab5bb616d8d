"""The house: every import in vaelib (top-level and inside functions) points down the path of
`vaelib/__init__.py`, so there is no import cycle and the training loop imports nothing of figures or the
book; and every RunConfig field is reachable from the command line."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import vaelib
from vaelib.__main__ import _parser
from vaelib.config import FIELD_HELP, RunConfig

PACKAGE = Path(vaelib.__file__).parent

# The downward path: a module may import modules of its own rank or of a lower one, never of a higher one.
RANKS = {
    "paths": 0, "io": 0,
    "config": 1, "literature": 1,
    "data": 2,
    "objectives": 3,
    "likelihoods": 4,
    "models": 5,
    "toy": 6, "hmc": 6,
    "methods": 7,
    "estimators": 8,
    "runs": 9,
    "evaluate": 10,
    "train": 11, "grid": 11, "executors": 11,
    "experiments": 12,
    "figures": 13,
    "results": 14,
    "book": 15,
    "report": 16, "__main__": 16, "__init__": 16,
}


def _module_name(path: Path) -> str:
    """'runs', 'book.build', 'book' (for book/__init__.py), '' for the package's own __init__."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """vaelib modules imported anywhere in `path` (functions included), as dotted names below the package."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = [p for p in package if p]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                found.add(".".join([*base, node.module]))
            else:  # from . import a, b: each name may be a module
                found |= {".".join([*base, alias.name]) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vaelib"):
            found.add(node.module.removeprefix("vaelib").lstrip("."))
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("vaelib").lstrip(".") for a in node.names if a.name.startswith("vaelib")}
    return {m for m in found if m}


def _top(module: str) -> str:
    return module.split(".")[0] or "__init__"


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_rank() -> None:
    unranked = sorted({_top(_module_name(p)) for p in MODULES} - set(RANKS))
    assert not unranked, f"add {unranked} to RANKS (and to the path in vaelib/__init__.py)"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_imports_point_down(path: Path) -> None:
    me = _top(_module_name(path))
    upward = sorted(m for m in _imports(path) if _top(m) in RANKS and RANKS[_top(m)] > RANKS[me])
    assert not upward, f"{_module_name(path)} (rank {RANKS[me]}) imports {upward}, which sit above it"


def test_no_import_cycles() -> None:
    graph = {_module_name(p): _imports(p) for p in MODULES}
    known = set(graph)
    graph = {k: {m for m in v if m in known and m != k} for k, v in graph.items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_the_training_loop_imports_nothing_of_figures_or_the_book() -> None:
    below = [p for p in MODULES if RANKS[_top(_module_name(p))] <= RANKS["train"]]
    for path in below:
        assert not {_top(m) for m in _imports(path)} & {"figures", "book", "results", "report", "experiments"}, path


def test_train_help_lists_every_runconfig_field(capsys) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    for f in dataclasses.fields(RunConfig):
        assert f"--{f.name.replace('_', '-')}" in text, f.name
        assert f.name in FIELD_HELP
