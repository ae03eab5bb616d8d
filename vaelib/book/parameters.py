"""A notebook's parameters: what its `parameters` cell declares, and the check of what a run gives it.

Each line of a parameters cell declares one parameter with its kind, its default and what it means:

    epochs: int = 25  # passes over the training set
    iw_examples: "int or None" = 1000  # first N test images it is computed on (None: all of them)

papermill reads the same lines (`papermill --help-notebook NB` prints name, kind, default and comment), so
the kind is written in a form its parser accepts: a builtin name, `list[...]`, or alternatives joined by
`or` inside quotes. The kinds are those of `KINDS`.

A value given to a notebook (papermill `-p/-r/-y/-f`, a profile of the book) is refused before any work
when the notebook does not declare its name, or when it is not of the declared kind. A parameter named like
a `RunConfig` field (`latent_dim`, `epochs`, `optimizer`) also obeys that field's rule, and a list named
like the plural of one (`latent_dims`, `methods`) obeys it for each item, wherever the declared default
does: one rule per value, the config's. The book build checks a profile before it executes anything
(`check_profile`); in the kernel, the chapter's second cell (`vaelib.book.notebook.start_chapter`) checks
what papermill injected (`check_injected`).
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError, RunConfig, check_int, check_ints, check_number
from .profiles import Profile, ProfileError

# The first line of the cell papermill injects after the parameters cell (papermill's
# `Translator.codify(parameters, comment="Parameters")`); a test checks it against papermill.
INJECTED_MARKER = "# Parameters"


class ParameterError(ConfigError):
    """A value given to a notebook that it does not declare, or of a kind it does not allow. One line."""

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback: the message is the whole story.
        return [f"{type(self).__name__}: {self}"]


def _require(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is not allowed; it must be {allowed}")


def _check_list(name: str, value: Any, item: Callable[[str, Any], Any], allowed: str) -> None:
    _require(isinstance(value, list) and len(value) > 0, name, value, allowed)
    try:
        for v in value:
            item(name, v)
    except ConfigError:
        raise ConfigError(f"{name}={value!r} is not allowed; it must be {allowed}") from None


# kind -> (check raising ConfigError, what it allows). Integers are counts and seeds in every chapter.
KINDS: dict[str, tuple[Callable[[str, Any], Any], str]] = {
    "int": (lambda n, v: check_int(n, v, 0), "an integer >= 0"),
    "float": (lambda n, v: check_number(n, v, -math.inf), "a number"),
    "bool": (lambda n, v: _require(isinstance(v, bool), n, v, "True or False"), "True or False"),
    "str": (lambda n, v: _require(isinstance(v, str), n, v, "a string"), "a string"),
    "None": (lambda n, v: _require(v is None, n, v, "None"), "None"),
    "dict": (lambda n, v: _require(isinstance(v, dict), n, v, "a mapping"), "a mapping"),
    "list[int]": (lambda n, v: check_ints(n, v, 0), "a non-empty list of integers >= 0"),
    "list[float]": (lambda n, v: _check_list(n, v, KINDS["float"][0], "a non-empty list of numbers"),
                    "a non-empty list of numbers"),
    "list[str]": (lambda n, v: _check_list(n, v, KINDS["str"][0], "a non-empty list of strings"),
                  "a non-empty list of strings"),
}

_FIELDS = frozenset(f.name for f in dataclasses.fields(RunConfig)) - {"extra"}


@dataclass(frozen=True)
class Parameter:
    """One line of a parameters cell: `name: kind = default  # help`."""

    name: str
    kinds: tuple[str, ...]  # the alternatives of the annotation, each a key of KINDS
    default: Any
    declaration: str  # `name: kind = default` as written, for messages

    @property
    def allowed(self) -> str:
        return " or ".join(KINDS[k][1] for k in self.kinds)

    def check(self, value: Any) -> None:
        """ConfigError unless `value` is of this parameter's kind (and obeys its RunConfig field's rule)."""
        field, plural = self._field()
        if field is not None and not plural:
            _check_field(field, self.name, value)
        if not any(_accepts(k, self.name, value) for k in self.kinds):
            hint = ""
            if any(k.startswith("list") for k in self.kinds) and not isinstance(value, list):
                hint = f" (papermill's -p passes one value; give a list with -y \"{self.name}: [...]\")"
            raise ConfigError(f"{self.name}={value!r} is not allowed; it must be {self.allowed}{hint}")
        if field is not None and plural and isinstance(value, list):
            for item in value:
                _check_field(field, self.name, item)

    def _field(self) -> tuple[str | None, bool]:
        """The RunConfig field whose rule this parameter obeys (and whether it is a list of such values):
        its name or its singular, where the declared default obeys that rule too."""
        if self.name in _FIELDS:
            field, plural = self.name, False
        elif self.name.endswith("s") and self.name[:-1] in _FIELDS and isinstance(self.default, list):
            field, plural = self.name[:-1], True
        else:
            return None, False
        try:
            for v in (self.default if plural else [self.default]):
                _check_field(field, self.name, v)
        except ConfigError:
            return None, False  # the notebook means something else by the name (e.g. lr = "auto")
        return field, plural


def _accepts(kind: str, name: str, value: Any) -> bool:
    try:
        KINDS[kind][0](name, value)
    except ConfigError:
        return False
    return True


_DEFAULT_CONFIG = RunConfig()


def _check_field(field: str, name: str, value: Any) -> None:
    """RunConfig's own rule for one field (`RunConfig.validate`, which checks each field by itself)."""
    config = copy.copy(_DEFAULT_CONFIG)
    setattr(config, field, value)
    try:
        config.validate()
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if field == name else f"{name}: {message}") from None


def _kinds(annotation: ast.expr, where: str) -> tuple[str, ...]:
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:
            annotation = ast.parse(annotation.value, mode="eval").body
        except SyntaxError:
            raise ParameterError(f"{where}: the kind {annotation.value!r} is not an expression") from None
    parts = annotation.values if isinstance(annotation, ast.BoolOp) and isinstance(annotation.op, ast.Or) else [
        annotation]
    kinds = tuple(ast.unparse(p) for p in parts)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ParameterError(f"{where}: the kind {unknown[0]!r} is not one of: {', '.join(KINDS)} "
                             "(alternatives as \"int or None\")")
    return kinds


def declared_parameters(source: str) -> dict[str, Parameter]:
    """The parameters a parameters cell's `source` declares, in order. ParameterError for a line that is not
    `name: kind = literal` or a default that is not of its kind."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ParameterError(f"the parameters cell is not valid Python: {exc}") from None
    lines = source.splitlines()
    declared: dict[str, Parameter] = {}
    for node in tree.body:
        text = lines[node.lineno - 1].strip()
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            names = ", ".join(t.id for t in node.targets)  # type: ignore[attr-defined]
            raise ParameterError(f"the parameters cell assigns {names} without a kind (`{text}`); declare it as "
                                 f"`{names}: int = ...` (kinds: {', '.join(KINDS)})")
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None):
            raise ParameterError(f"the parameters cell may only declare parameters (`name: kind = value`), "
                                 f"not `{text}`")
        name = node.target.id
        try:
            default = ast.literal_eval(node.value)
        except ValueError:
            raise ParameterError(f"the default of {name} must be a literal, not `{ast.unparse(node.value)}`"
                                 ) from None
        declaration = (f"{name}: {ast.get_source_segment(source, node.annotation)} = "
                       f"{ast.get_source_segment(source, node.value)}")
        param = Parameter(name, _kinds(node.annotation, f"parameter {name}"), default, declaration)
        try:
            param.check(default)
        except ConfigError as exc:
            raise ParameterError(f"the parameters cell's own default is refused: {exc}") from None
        declared[name] = param
    return declared


def parameters_cell(path: str | Path) -> str:
    """The source of the notebook's one cell tagged `parameters`."""
    import nbformat

    nb = nbformat.read(Path(path), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ParameterError(f"{path} has {len(cells)} cells tagged 'parameters'; it needs exactly one")
    return cells[0].source


def notebook_parameters(path: str | Path) -> dict[str, Parameter]:
    """What the notebook at `path` declares in its parameters cell."""
    return declared_parameters(parameters_cell(path))


def check_parameters(declared: Mapping[str, Parameter], given: Mapping[str, Any], where: str = "the notebook"
                     ) -> None:
    """ParameterError (one line) for the first name in `given` that `declared` lacks, naming the declared
    parameters closest first, or for the first value that is not of its declared kind."""
    unknown = [name for name in given if name not in declared]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(declared), n=3, cutoff=0.6)
        hints = [f"{name} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(name, declared, n=1))
                 else name for name in unknown]
        order = close + [name for name in declared if name not in close]
        raise ParameterError(f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(hints)}: "
                             f"{where} declares {', '.join(order)}")
    for name, value in given.items():
        try:
            declared[name].check(value)
        except ConfigError as exc:
            raise ParameterError(f"{exc}; {where} declares `{declared[name].declaration}`") from None


def injected_names(source: str) -> list[str]:
    """The names papermill's injected cell assigns, in order."""
    return [t.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)]


def check_injected(namespace: Mapping[str, Any]) -> None:
    """In a kernel: check what papermill injected against what the parameters cell declared.

    Both cells' sources are in IPython's input history (`In`): the latest input that starts with papermill's
    marker is the injected cell, and the latest input before it that declares `profile` is the parameters
    cell. Without an injected cell (JupyterLab, a notebook run as saved) there is nothing to check.
    """
    history = [str(s) for s in namespace.get("In", [])]
    injected = [i for i, s in enumerate(history) if s.lstrip().startswith(INJECTED_MARKER)]
    if not injected:
        return
    i = injected[-1]
    declared: dict[str, Parameter] | None = None
    for source in reversed(history[:i]):
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        if any(isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and n.target.id == "profile"
               for n in tree.body):
            declared = declared_parameters(source)
            break
    if declared is None:
        raise ParameterError("papermill injected parameters, but no parameters cell ran before them")
    names = injected_names(history[i])
    check_parameters(declared, {name: namespace.get(name) for name in names}, where="this notebook")


def check_profile(profile: Profile, notebooks_dir: Path) -> None:
    """ProfileError for the first entry of `profile` that its chapter's notebook does not declare, or whose
    value is not of the declared kind; the message names the profile, the chapter and the parameter.
    Chapters whose notebook does not exist are left out (the build skips them)."""
    for stem in profile.notebooks:
        path = Path(notebooks_dir) / f"{stem}.ipynb"
        if not path.is_file():
            continue
        try:
            check_parameters(notebook_parameters(path), profile.parameters(stem), where=stem)
        except ParameterError as exc:
            raise ProfileError(f"profile {profile.name} ({profile.path}): {exc}") from None
