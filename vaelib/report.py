"""Build the book: profile -> papermill -> Jupyter Book (-> PDF).

`build("quick")` (or `python -m vaelib.report build --profile quick`) executes, in the profile's order, each
notebook that `book/profiles/quick.yaml` lists and `notebooks/` holds, into `build/quick/notebooks/`, with
the profile's parameters plus `profile`; the kernel runs in `notebooks/` and sees `VAELIB_RUNS` (the run
cache every build shares) and `VAELIB_RESULTS` (this profile's recorded numbers). It then assembles a
Jupyter Book source in `build/quick/book/`, renders it without executing anything again, and copies the HTML
to `book/_build/html/`; with `pdf=True` it also prints the pages to `book/_build/pdf/book.pdf` in headless
Chromium. The source notebooks are never written to.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .results import write_text_atomic

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REPO_ROOT = Path(__file__).resolve().parents[1]
BOOK_DIR = REPO_ROOT / "book"
PROFILES_DIR = BOOK_DIR / "profiles"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
BUILD_ROOT = REPO_ROOT / "build"
RUNS_DIR = REPO_ROOT / "runs"
HTML_DIR = BOOK_DIR / "_build" / "html"
PDF_PATH = BOOK_DIR / "_build" / "pdf" / "book.pdf"

KERNEL = "python3"
FRONT_PAGE = "intro"
BACK_PAGES = ("rerun", "bibliography")  # after the chapters, in this order
BOOK_DIR_SKIP = {"_build", "profiles", "_toc.yml", "__pycache__"}  # not copied into the book source
BUILD_INFO = "build-info.json"  # written into the HTML folder: profile, date and page order

# Chromium must not try the network (there is none here, and a book must not need it) nor a sandbox (root).
CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)

Log = Callable[[str], None]


class BuildError(RuntimeError):
    """A build step failed; the message says which step and why."""


class ProfileError(BuildError, ValueError):
    """An unknown or malformed profile, or a notebook name the profile does not list."""


class NotebookFailed(BuildError):
    """A notebook raised while papermill executed it."""

    def __init__(self, message: str, *, stem: str, cell_index: int | None, ename: str, evalue: str,
                 output: Path) -> None:
        super().__init__(message)
        self.stem = stem
        self.cell_index = cell_index
        self.ename = ename
        self.evalue = evalue
        self.output = output


# --------------------------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class Profile:
    """One `book/profiles/<name>.yaml`: which notebooks a build runs, in order, and with which parameters."""

    name: str
    description: str
    banner: str
    notebooks: dict[str, dict[str, Any]]
    path: Path

    def parameters(self, stem: str) -> dict[str, Any]:
        """What papermill injects into notebook `stem`: `profile`, then the profile's entries for it."""
        return {"profile": self.name, **self.notebooks[stem]}


def available_profiles(profiles_dir: Path | None = None) -> list[str]:
    """Names of the profiles in `profiles_dir` (default `book/profiles`), sorted."""
    return sorted(p.stem for p in Path(profiles_dir or PROFILES_DIR).glob("*.yaml"))


def load_profile(name: str, profiles_dir: Path | None = None) -> Profile:
    """Read and check profile `name`; raises ProfileError naming the available profiles if there is none."""
    profiles_dir = Path(profiles_dir or PROFILES_DIR)
    path = profiles_dir / f"{name}.yaml"
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or not path.is_file():
        names = ", ".join(available_profiles(profiles_dir)) or "none"
        raise ProfileError(f"unknown profile {name!r}; available profiles (in {profiles_dir}): {names}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ProfileError(f"profile {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"profile {path} must be a mapping with name, description, banner and notebooks")
    missing = [key for key in ("name", "description", "banner", "notebooks") if key not in data]
    if missing:
        raise ProfileError(f"profile {path} lacks the key(s) {', '.join(missing)}")
    if data["name"] != name:
        raise ProfileError(f"profile {path} says name: {data['name']!r}; it must match its file name {name!r}")
    raw = data["notebooks"] or {}
    if not isinstance(raw, dict):
        raise ProfileError(f"profile {path}: `notebooks` must map notebook stems to parameter mappings")
    notebooks: dict[str, dict[str, Any]] = {}
    for stem, params in raw.items():
        params = {} if params is None else params
        if not isinstance(params, dict):
            raise ProfileError(f"profile {path}: the parameters of {stem!r} must be a mapping, not {params!r}")
        if "profile" in params:
            # One source per parameter: `profile` always equals the profile being built.
            raise ProfileError(f"profile {path}: {stem!r} sets `profile`, which the build injects itself")
        notebooks[str(stem)] = dict(params)
    return Profile(name=name, description=str(data["description"]).strip(),
                   banner=str(data["banner"]).strip(), notebooks=notebooks, path=path)


def _select(profile: Profile, only: Sequence[str] | None) -> list[str]:
    """The profile's stems, in its order, restricted to `only` (each of which it must list)."""
    if not only:
        return list(profile.notebooks)
    wanted = [s.strip().removesuffix(".ipynb") for item in only for s in item.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in profile.notebooks]
    if unknown:
        raise ProfileError(f"profile {profile.name!r} does not list {', '.join(unknown)}; "
                           f"it lists: {', '.join(profile.notebooks)}")
    return [s for s in profile.notebooks if s in wanted]


# ------------------------------------------------------------------------------------------- execution


@contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration (the kernel papermill starts inherits them)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def kernel_environment(runs_dir: Path, results_dir: Path) -> dict[str, str]:
    """The variables a notebook's kernel gets: where runs are cached and where its numbers go."""
    path = os.environ.get("PYTHONPATH")
    # The repository first on the path, so the notebooks import this checkout's vaelib even where the
    # package is not installed in editable mode.
    pythonpath = os.pathsep.join([str(REPO_ROOT), path] if path else [str(REPO_ROOT)])
    return {"VAELIB_RUNS": str(runs_dir), "VAELIB_RESULTS": str(results_dir), "PYTHONPATH": pythonpath}


def execute_notebook(source: Path, output: Path, parameters: Mapping[str, Any], *, runs_dir: Path,
                     results_dir: Path, progress: bool = False) -> float:
    """Execute `source` into `output` with papermill, in `source`'s folder; return the wall time in seconds.

    Raises NotebookFailed naming the notebook, the failing cell and the error.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source, output = Path(source).resolve(), Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with _environ(kernel_environment(runs_dir, results_dir)):
        try:
            papermill.execute_notebook(
                str(source), str(output), parameters=dict(parameters), kernel_name=KERNEL,
                cwd=str(source.parent), progress_bar=progress, log_output=False,
            )
        except PapermillExecutionError as exc:
            first_line = (exc.source or "").strip().splitlines()[:1]
            where = f", which starts `{first_line[0][:80]}`" if first_line else ""
            raise NotebookFailed(
                f"notebook {source.stem} failed in cell {exc.cell_index}{where} (cell index in the executed "
                f"copy, counting papermill's injected-parameters cell): {exc.ename}: {exc.evalue}\n"
                f"The traceback is in {output}",
                stem=source.stem, cell_index=exc.cell_index, ename=exc.ename, evalue=exc.evalue, output=output,
            ) from exc
        except Exception as exc:  # a kernel that died or would not start: still name the notebook
            raise NotebookFailed(
                f"notebook {source.stem} could not be executed: {type(exc).__name__}: {exc}",
                stem=source.stem, cell_index=None, ename=type(exc).__name__, evalue=str(exc), output=output,
            ) from exc
    return time.perf_counter() - start


# ----------------------------------------------------------------------------------------------- build


@dataclass
class BuildResult:
    """What `build` did: the executed notebooks' wall times, what it skipped, and where the outputs are."""

    profile: str
    build_dir: Path
    seconds: dict[str, float] = field(default_factory=dict)  # per executed notebook, and per step
    skipped: list[str] = field(default_factory=list)
    html_dir: Path | None = None
    pdf_path: Path | None = None


def build(
    profile: str = "default",
    notebooks: Sequence[str] | None = None,
    pdf: bool = False,
    *,
    execute: bool = True,
    render: bool = True,
    notebooks_dir: Path | None = None,
    build_dir: Path | None = None,
    html_dir: Path | None = None,
    pdf_path: Path | None = None,
    runs_dir: Path | None = None,
    profiles_dir: Path | None = None,
    book_dir: Path | None = None,
    progress: bool | None = None,
    log: Log = print,
) -> BuildResult:
    """Execute the profile's notebooks, then render the book (and print it to PDF if `pdf`).

    `notebooks` restricts execution to those stems (each must be in the profile); the book still shows
    every chapter executed by an earlier build of the same profile. `execute=False` only renders;
    `render=False` only executes. The directory arguments default to the repository's layout and exist
    for tests: `build_dir` is `build/<profile>`, `html_dir` is `book/_build/html`.
    """
    prof = load_profile(profile, profiles_dir)  # before any work: a typo costs nothing
    stems = _select(prof, notebooks)
    notebooks_dir = Path(notebooks_dir or NOTEBOOKS_DIR).resolve()
    build_dir = Path(build_dir or BUILD_ROOT / prof.name).resolve()
    runs_dir = Path(runs_dir or os.environ.get("VAELIB_RUNS") or RUNS_DIR).resolve()
    book_dir = Path(book_dir or BOOK_DIR)
    if progress is None:
        progress = sys.stderr.isatty()
    result = BuildResult(profile=prof.name, build_dir=build_dir)

    present = [s for s in stems if (notebooks_dir / f"{s}.ipynb").is_file()]
    result.skipped = [s for s in stems if s not in present]
    for stem in result.skipped:
        log(f"warning: {notebooks_dir / stem}.ipynb does not exist yet; skipping {stem}")

    if execute:
        _execute_all(prof, present, notebooks_dir, build_dir, runs_dir, result, progress, log)
    if render:
        start = time.perf_counter()
        chapters = [s for s in prof.notebooks
                    if (build_dir / "notebooks" / f"{s}.ipynb").is_file() and (notebooks_dir / f"{s}.ipynb").is_file()]
        source = assemble_book(prof, chapters, build_dir, book_dir=book_dir)
        result.html_dir = render_book(source, Path(html_dir or HTML_DIR), log=log)
        result.seconds["(render book)"] = time.perf_counter() - start
        _save_timings(build_dir, {"(render book)": result.seconds["(render book)"]})
    if pdf:
        start = time.perf_counter()
        html = result.html_dir or Path(html_dir or HTML_DIR)
        result.pdf_path = print_pdf(html, Path(pdf_path or PDF_PATH), log=log)
        result.seconds["(print PDF)"] = time.perf_counter() - start
        _save_timings(build_dir, {"(print PDF)": result.seconds["(print PDF)"]})
    log(format_timings(result.seconds, title=f"Build of profile {prof.name!r}"))
    return result


def _execute_all(prof: Profile, stems: list[str], notebooks_dir: Path, build_dir: Path, runs_dir: Path,
                 result: BuildResult, progress: bool, log: Log) -> None:
    results_dir = build_dir / "results"
    for i, stem in enumerate(stems, start=1):
        log(f"[{i}/{len(stems)}] executing {stem} (profile {prof.name}) ...")
        # Numbers recorded by an earlier run of this chapter would otherwise outlive a changed notebook.
        (results_dir / f"{stem}.json").unlink(missing_ok=True)
        try:
            seconds = execute_notebook(notebooks_dir / f"{stem}.ipynb", build_dir / "notebooks" / f"{stem}.ipynb",
                                       prof.parameters(stem), runs_dir=runs_dir, results_dir=results_dir,
                                       progress=progress)
        except NotebookFailed:
            _save_timings(build_dir, {stem: None})
            raise
        result.seconds[stem] = seconds
        _save_timings(build_dir, {stem: seconds})
        log(f"[{i}/{len(stems)}] {stem} done in {_human(seconds)}")


def _save_timings(build_dir: Path, seconds: Mapping[str, float | None]) -> None:
    """Merge wall times into build_dir/timings.json (None: the notebook failed)."""
    path = build_dir / "timings.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    now = dt.datetime.now().isoformat(timespec="seconds")
    for name, secs in seconds.items():
        data[name] = {"seconds": None if secs is None else round(secs, 2),
                      "status": "failed" if secs is None else "ok", "finished": now}
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def _human(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def format_timings(seconds: Mapping[str, float], title: str = "Wall time") -> str:
    """A plain-text table of wall times, with the total."""
    if not seconds:
        return f"{title}: nothing was executed or rendered"
    width = max(len(name) for name in [*seconds, "total"])
    lines = [title, f"  {'step':<{width}}  {'wall time':>10}"]
    lines += [f"  {name:<{width}}  {_human(secs):>10}" for name, secs in seconds.items()]
    lines.append(f"  {'total':<{width}}  {_human(sum(seconds.values())):>10}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ book


def assemble_book(profile: Profile, chapters: Sequence[str], build_dir: Path, *,
                  book_dir: Path | None = None, built_at: dt.datetime | None = None) -> Path:
    """Write the Jupyter Book source `build_dir/book/` and return it.

    It holds a copy of book/ (pages, references.bib, _static/, _ext/; not profiles/ nor _build/), with the
    profile's banner as `html.announcement` in _config.yml, the executed notebooks of `chapters` under
    notebooks/, and a generated _toc.yml: intro, the chapters in profile order, then the back pages. The
    front page gets a box under its title naming the profile and the build date, with the banner.
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
    (source / "notebooks").mkdir()
    for stem in chapters:
        shutil.copy2(build_dir / "notebooks" / f"{stem}.ipynb", source / "notebooks" / f"{stem}.ipynb")

    config = yaml.safe_load((book_dir / "_config.yml").read_text(encoding="utf-8"))
    config.setdefault("html", {})["announcement"] = _escape_html(profile.banner)
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


# ------------------------------------------------------------------------------------------ browser/PDF


def find_chromium() -> str | None:
    """Path of a Chromium to drive: $VAELIB_CHROMIUM, else chromium / chromium-browser / google-chrome."""
    explicit = os.environ.get("VAELIB_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@contextmanager
def open_browser() -> Iterator[Browser]:
    """Headless Chromium driven by Playwright, using the system's Chromium (Playwright downloads none)."""
    executable = find_chromium()
    if executable is None:
        raise BuildError("no Chromium found: install it (Debian: apt-get install chromium) or set VAELIB_CHROMIUM")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise BuildError("playwright is not installed; run `make setup` or pip install -e '.[notebooks]'") from exc
    with sync_playwright() as pw:
        # Playwright gives each launch a fresh, temporary user-data-dir.
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


# Resolves once MathJax has typeset the page (if it has MathJax), the fonts are in and every image is
# decoded, so a screenshot or a print shows the finished page.
PAGE_READY_JS = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  await document.fonts.ready;
  await Promise.all(Array.from(document.images).map(img => img.complete ? null :
      new Promise(done => { img.addEventListener('load', done); img.addEventListener('error', done); })));
  return true;
}"""


def open_page(page: Page, html_file: Path, timeout_s: float = 60) -> None:
    """Load a local HTML file in `page` and wait until it is fully rendered."""
    page.goto(Path(html_file).resolve().as_uri(), wait_until="load", timeout=timeout_s * 1000)
    page.evaluate(PAGE_READY_JS)


def print_pdf(html_dir: Path, pdf_path: Path, *, log: Log = print) -> Path:
    """Print every page of the built book, in toc order, into one PDF with a bookmark per page."""
    from pypdf import PdfReader, PdfWriter

    info = read_build_info(html_dir)
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    writer = PdfWriter()
    log(f"printing {len(info['pages'])} pages to PDF ...")
    with tempfile.TemporaryDirectory() as tmp, open_browser() as browser:
        page = browser.new_page()
        page.emulate_media(media="print")
        for i, name in enumerate(info["pages"]):
            open_page(page, html_dir / f"{name}.html")
            title = page.title().split("—")[0].split(" | ")[0].strip() or name
            part = Path(tmp) / f"{i:03d}.pdf"
            page.pdf(path=str(part), format="A4", print_background=True,
                     margin={"top": "15mm", "bottom": "15mm", "left": "12mm", "right": "12mm"})
            first = len(writer.pages)
            for pdf_page in PdfReader(part).pages:
                writer.add_page(pdf_page)
            writer.add_outline_item(title=title, page_number=first)
    with open(pdf_path, "wb") as fh:
        writer.write(fh)
    log(f"PDF: {pdf_path} ({len(writer.pages)} pages)")
    return pdf_path


# ------------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vaelib.report", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="execute the notebooks of a profile and render the book")
    b.add_argument("--profile", default="default", help="one of: " + ", ".join(available_profiles()))
    b.add_argument("--only", action="append", metavar="STEM",
                   help="execute only this notebook (repeatable, or comma-separated), e.g. 03_mnist")
    b.add_argument("--pdf", action="store_true", help="also print the book to book/_build/pdf/book.pdf")
    b.add_argument("--skip-execute", action="store_true",
                   help="render the book from the notebooks executed by the last build, running none")
    b.add_argument("--no-render", action="store_true", help="execute the notebooks but do not render the book")
    sub.add_parser("profiles", help="list the profiles and what they are for")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m vaelib.report`; returns the exit status (2: bad arguments, 1: failed)."""
    args = _parser().parse_args(argv)
    if args.command == "profiles":
        for name in available_profiles():
            print(f"{name}: {load_profile(name).description}")
        return 0
    try:
        build(args.profile, args.only, pdf=args.pdf, execute=not args.skip_execute, render=not args.no_render)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
