"""Headless Chromium, the system's, driven by Playwright (which downloads no browser here): the PDF of the
book, and the pages the browser tests open."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from . import BuildError
from .assemble import read_build_info

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

Log = Callable[[str], None]

CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)

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
