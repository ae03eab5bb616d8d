"""The book: profiles -> papermill -> Jupyter Book (-> PDF). The top of the house; nothing in vaelib imports it.

    profiles.py   book/profiles/<name>.yaml: which notebooks a build runs, with which parameters
    parameters.py what a notebook's parameters cell declares, and the check of what a run gives it
    progress.py   where an executing notebook is: its cell, the kernel's progress bars (lines or a status line)
    engine.py     the papermill engine of the build: an IPC kernel that reports to progress.py
    execute.py    one notebook through papermill, in notebooks/, with the run cache and results dirs set
    build.py      `build(profile)`: execute the profile's notebooks, assemble the book, render it (and the PDF)
    statistics.py the book's page of execution statistics: wall time, runs loaded and trained, per chapter
    assemble.py   the Jupyter Book source and its rendering to HTML
    browser.py    headless Chromium (the system's, driven by Playwright): the PDF and the browser tests
    notebook.py   what a chapter calls at its top: `start_chapter(globals())`, the check and the banner
    __main__.py   `python -m vaelib.book build --profile quick` (also `python -m vaelib.report`)

Where the book's folders are: `vaelib.paths` (the checkout), with the names below.
"""

from __future__ import annotations

from .. import paths

_ROOT = paths.REPO_ROOT or paths.PACKAGE_DIR.parent  # outside a checkout these folders do not exist
BOOK_DIR = _ROOT / "book"
PROFILES_DIR = BOOK_DIR / "profiles"
NOTEBOOKS_DIR = _ROOT / "notebooks"
BUILD_ROOT = _ROOT / "build"
HTML_DIR = BOOK_DIR / "_build" / "html"
PDF_PATH = BOOK_DIR / "_build" / "pdf" / "book.pdf"


class BuildError(RuntimeError):
    """A build step failed; the message says which step and why."""
