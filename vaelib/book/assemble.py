"""Assemble the Jupyter Book source from the executed notebooks and render it to HTML (nothing is executed
again). The front page names the profile and the build date; build-info.json records the page order."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from . import BOOK_DIR, HTML_DIR, BuildError
from . import tidy as tidy_module
from .execute import LIVE_DIR
from .profiles import Profile
from .statistics import PAGE as STATISTICS_PAGE
from .statistics import write_statistics_page
from .tidy import tidy_notebook

Log = Callable[[str], None]
FRONT_PAGE = "intro"
BACK_PAGES = ("rerun", STATISTICS_PAGE, "bibliography")  # after the chapters, in this order
BOOK_DIR_SKIP = {"_build", "profiles", "_toc.yml", "__pycache__"}  # not copied into the book source
BUILD_INFO = "build-info.json"  # written into the HTML folder: profile, date and page order
# Sphinx's html_extra_path: copied beside index.html. The live figures' decoders go there, as MODELS_DIR/,
# not under _static/, whose every *.js Jupyter Book would load on every page.
EXTRA_DIR = "_extra"
PAPER_COST = "PAPER_COST_SENTENCE"  # book/rerun.md's placeholder for the paper profile's estimated cost
MODELS_DIR = "live-models"  # where _static/vaelib-live.js looks for them


def assemble_book(profile: Profile, chapters: Sequence[str], build_dir: Path, *,
                  book_dir: Path | None = None, built_at: dt.datetime | None = None) -> Path:
    """Write the Jupyter Book source `build_dir/book/` and return it.

    It holds a copy of book/ (pages, references.bib, _static/, _ext/; not profiles/ nor _build/), with the
    profile's banner as `html.announcement` in _config.yml, the executed notebooks of `chapters` under
    notebooks/, the decoders they exported for the live figures (build_dir/live/*.js) under _extra/live-models/,
    the execution-statistics page (`statistics.py`), and a generated _toc.yml: intro, the chapters in profile
    order, then the back pages. The front page gets a box under its title naming the profile and the build date,
    with the banner.
    """
    book_dir = Path(book_dir or BOOK_DIR)
    source = build_dir / "book"
    # Keep source/_build: Sphinx reuses its doctrees for pages whose files kept their mtimes (copy2).
    if source.exists():
        for entry in source.iterdir():
            if entry.name != "_build":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    source.mkdir(parents=True, exist_ok=True)

    # Everything in book/ (pages, config, bibliography, _static, _ext) but the profiles and build outputs.
    for entry in book_dir.iterdir():
        if entry.name in BOOK_DIR_SKIP or entry.name.startswith("."):
            continue
        if entry.is_dir():
            shutil.copytree(entry, source / entry.name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(entry, source / entry.name)
    _fill_rerun_page(source)
    (source / "notebooks").mkdir()
    for stem in chapters:
        _copy_tidied(build_dir / "notebooks" / f"{stem}.ipynb", source / "notebooks" / f"{stem}.ipynb")
    write_statistics_page(source, profile, chapters, build_dir)

    models = source / EXTRA_DIR / MODELS_DIR
    models.mkdir(parents=True)
    for path in sorted((build_dir / LIVE_DIR).glob("[!.]*.js")):  # not the atomic writes' temporary files
        shutil.copyfile(path, models / path.name)
        (models / path.name).chmod(0o644)  # the atomic write made it 0600; a web server must read it

    config = yaml.safe_load((book_dir / "_config.yml").read_text(encoding="utf-8"))
    config.setdefault("html", {})["announcement"] = _escape_html(profile.banner)
    config.setdefault("sphinx", {}).setdefault("config", {})["html_extra_path"] = [EXTRA_DIR]
    (source / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))

    back = [p for p in BACK_PAGES if (source / f"{p}.md").is_file()]
    toc: dict[str, Any] = {"format": "jb-book", "root": FRONT_PAGE, "parts": []}
    if chapters:
        toc["parts"].append({"caption": "Chapters", "numbered": True,
                             "chapters": [{"file": f"notebooks/{s}"} for s in chapters]})
    if back:
        toc["parts"].append({"caption": "Reference", "chapters": [{"file": p} for p in back]})
    (source / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))

    when = (built_at or dt.datetime.now()).strftime("%Y-%m-%d %H:%M")
    intro = source / f"{FRONT_PAGE}.md"
    intro.write_text(_stamp_front_page(intro.read_text(encoding="utf-8"), profile, when), encoding="utf-8")

    pages = [FRONT_PAGE, *(f"notebooks/{s}" for s in chapters), *back]
    info = {"profile": profile.name, "banner": profile.banner, "built_at": when, "pages": pages}
    # Not a Sphinx source (only .md and .ipynb are), so render_book copies it into the HTML itself.
    (source / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return source

def _fill_rerun_page(source: Path) -> None:
    """Write the paper profile's training cost, estimated from the measured runs, into the rerun page's
    PAPER_COST placeholder: a number computed by this build, not typed."""
    page = source / "rerun.md"
    if not page.is_file() or PAPER_COST not in page.read_text(encoding="utf-8"):
        return
    from ..experiments.measured import paper_cost, paper_cost_sentence

    page.write_text(page.read_text(encoding="utf-8").replace(PAPER_COST, paper_cost_sentence(paper_cost())),
                    encoding="utf-8")

def _copy_tidied(executed: Path, target: Path) -> None:
    """Copy an executed notebook into the book source with its machinery tidied away (`tidy.tidy_notebook`),
    dated by the later of the executed file and the tidying rules, so Sphinx reuses the page's doctree only
    when neither changed."""
    nb = tidy_notebook(json.loads(executed.read_text(encoding="utf-8")))
    target.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    mtime = max(executed.stat().st_mtime_ns, Path(tidy_module.__file__).stat().st_mtime_ns)
    os.utime(target, ns=(mtime, mtime))

def _escape_html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

def _stamp_front_page(text: str, profile: Profile, when: str) -> str:
    """Insert, under the front page's title, which profile built the book, when, and its banner."""
    # A colon fence: a backtick fence's info string may not contain backticks (CommonMark).
    box = (f"\n:::{{admonition}} Built with profile {profile.name} on {when}\n"
           f":class: {'warning' if profile.name == 'quick' else 'note'}\n\n"
           f"{profile.banner}\n:::\n")  # the banner already says what the profile's description says
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("# "):
            return "".join(lines[: i + 1]) + box + "".join(lines[i + 1:])
    return box + text

def _jupyter_book_command() -> list[str]:
    script = Path(sys.executable).with_name("jupyter-book")
    if script.is_file():
        return [str(script)]
    found = shutil.which("jupyter-book")
    if found:
        return [found]
    raise BuildError("jupyter-book is not installed; run `make setup` or pip install -e '.[notebooks]'")

def render_book(source: Path, html_dir: Path, *, log: Log = print) -> Path:
    """Run `jupyter-book build` on `source` (notebooks are not executed) and copy the HTML to `html_dir`."""
    log(f"rendering the book from {source} ...")
    logfile = source.parent / "jupyter-book.log"
    with open(logfile, "w", encoding="utf-8") as fh:
        proc = subprocess.run([*_jupyter_book_command(), "build", str(source), "--builder", "html"],
                              stdout=fh, stderr=subprocess.STDOUT, check=False)
    text = logfile.read_text(encoding="utf-8", errors="replace")
    built = source / "_build" / "html"
    if proc.returncode != 0 or not (built / "index.html").is_file():
        tail = "\n".join(text.splitlines()[-30:])
        raise BuildError(f"jupyter-book build failed (exit {proc.returncode}); log in {logfile}:\n{tail}")
    warnings = [line for line in text.splitlines() if "WARNING" in line]
    if warnings:
        log(f"jupyter-book: {len(warnings)} warning(s), e.g.\n  " + "\n  ".join(warnings[:5])
            + f"\n  (all in {logfile})")
    shutil.copy2(source / BUILD_INFO, built / BUILD_INFO)
    html_dir = Path(html_dir)
    if html_dir.exists():
        shutil.rmtree(html_dir)
    shutil.copytree(built, html_dir)
    log(f"HTML: {html_dir / 'index.html'}")
    return html_dir

def read_build_info(html_dir: Path | None = None) -> dict[str, Any]:
    """The profile, date and page order of the book built into `html_dir` (default book/_build/html)."""
    path = Path(html_dir or HTML_DIR) / BUILD_INFO
    if not path.is_file():
        raise BuildError(f"no built book in {path.parent}; run `make book` first")
    return json.loads(path.read_text())
