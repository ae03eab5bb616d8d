"""Sphinx fixes that keep the rendered book self-contained and free of console errors.

Loaded by `book/_config.yml` (`sphinx: local_extensions`). Two workarounds, each for a behaviour of the
Jupyter Book 1.x stack:

- Jupyter Book adds every `*.js` under `_static/` to `html_js_files`. The vendored MathJax bundle is loaded by
  `sphinx.ext.mathjax` (`mathjax_path`, after its configuration); a second copy from `html_js_files` would load
  before that configuration and throw "Cannot set property Package". Drop the copy.
- Scripts that extensions register after the builder starts (sphinx-thebe's `const THEBE_JS_URL = ...`,
  sphinx-togglebutton's selector) are emitted twice by Sphinx 7.4, and the repeated `const` throws
  "Identifier 'THEBE_JS_URL' has already been declared" on every page. Emit each script once.
"""

from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx
from sphinx.config import Config

VENDORED = "mathjax/"


def _drop_vendored_js(app: Sphinx, config: Config) -> None:
    config.html_js_files = [
        entry for entry in config.html_js_files
        if not (entry[0] if isinstance(entry, tuple) else entry).startswith(VENDORED)
    ]


def _script_key(script: Any) -> tuple[str, tuple[tuple[str, str], ...]]:
    attributes = getattr(script, "attributes", {}) or {}
    return (getattr(script, "filename", None) or "", tuple(sorted((k, str(v)) for k, v in attributes.items())))


def _unique_scripts(app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    unique = []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique  # in place: Sphinx restores this list from its own copy before the next page


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("config-inited", _drop_vendored_js, priority=900)
    app.connect("html-page-context", _unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
