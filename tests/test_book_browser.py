"""The built book as a reader sees it: every page of book/_build/html opened in headless Chromium.

Checks that every image loaded, that math was typeset by MathJax (no raw TeX left in the text), that the
page logged no console error and requested nothing from the network (the book must read offline). Saves
screenshots of the front page and of the MNIST chapter to book/_build/screenshots/.

Skipped when Chromium, Playwright or the built book is missing; `make book` builds it. Set
VAELIB_BOOK_HTML to check a book built elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from vaelib.book import BOOK_DIR, HTML_DIR, BuildError
from vaelib.book.assemble import read_build_info
from vaelib.book.browser import open_page

pytestmark = pytest.mark.browser

HTML_DIR = Path(os.environ.get("VAELIB_BOOK_HTML") or HTML_DIR)
SCREENSHOT_DIR = BOOK_DIR / "_build" / "screenshots"
SCREENSHOTS = {"intro": "front_page.png", "notebooks/03_mnist": "03_mnist.png"}


def _pages() -> list[str]:
    try:
        return read_build_info(HTML_DIR)["pages"]
    except BuildError:
        return []


PAGES = _pages()

# Text nodes outside code, scripts and typeset math: what a reader reads as prose. TeX left there means
# MathJax did not run (or the markdown was not parsed as math).
RAW_TEX_JS = r"""() => {
  const skip = new Set(['PRE', 'CODE', 'SCRIPT', 'STYLE', 'MJX-CONTAINER', 'TEXTAREA']);
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      for (let el = node.parentElement; el; el = el.parentElement) {
        if (skip.has(el.tagName.toUpperCase())) return NodeFilter.FILTER_REJECT;
      }
      return NodeFilter.FILTER_ACCEPT;
    }});
  const hits = [];
  while (walker.nextNode()) {
    const text = walker.currentNode.nodeValue;
    if (/\\(mathcal|mathbf|mathbb|frac|log|mid|theta|phi|begin)\b|\$\$/.test(text)) hits.push(text.trim().slice(0, 80));
  }
  return hits;
}"""

IMAGES_JS = """() => Array.from(document.images).map(img => ({src: img.getAttribute('src'),
    ok: img.complete && img.naturalWidth > 0}))"""


@pytest.mark.skipif(not PAGES, reason=f"no built book in {HTML_DIR}; run `make book` first")
@pytest.mark.parametrize("name", PAGES or ["(none)"])
def test_page_renders_offline(browser: Any, name: str) -> None:
    html = HTML_DIR / f"{name}.html"
    assert html.is_file(), f"{html} is listed in build-info.json but was not built"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    external: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.on("requestfailed", lambda req: errors.append(f"failed to load {req.url}: {req.failure}"))

    def only_local(route: Any) -> None:
        if route.request.url.startswith(("file:", "data:", "blob:", "about:")):
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    try:
        open_page(page, html)
        images = page.evaluate(IMAGES_JS)
        broken = [img["src"] for img in images if not img["ok"]]
        assert not broken, f"{name}: images that did not load: {broken}"
        assert not external, f"{name}: requests to the network (the book must work offline): {external}"
        raw = page.evaluate(RAW_TEX_JS)
        assert not raw, f"{name}: TeX left untypeset: {raw}"
        math_nodes = page.locator(".math").count()
        typeset = page.locator("mjx-container").count()
        assert typeset >= math_nodes, f"{name}: {math_nodes} math elements but only {typeset} typeset"
        if name.endswith("02_elbo"):
            assert typeset > 0, "the ELBO chapter shows no typeset math"
        assert not errors, f"{name}: console errors: {errors}"
        if name in SCREENSHOTS:
            SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT_DIR / SCREENSHOTS[name]), full_page=True)
    finally:
        page.close()


@pytest.mark.skipif(not PAGES, reason=f"no built book in {HTML_DIR}; run `make book` first")
def test_front_page_names_the_profile(browser: Any) -> None:
    info = read_build_info(HTML_DIR)
    page = browser.new_page()
    try:
        open_page(page, HTML_DIR / "intro.html")
        # Sphinx typesets quotes ("paper's" becomes "paper’s"); compare the words.
        text = page.inner_text("body").replace("\u2019", "'")
        announcement = page.locator(".bd-header-announcement").inner_text().replace("\u2019", "'")
    finally:
        page.close()
    assert f"Built with profile {info['profile']}" in text
    assert info["banner"] in text, "the front page's box does not show the profile's banner"
    assert info["banner"] in announcement, "the banner is not the announcement shown on every page"
