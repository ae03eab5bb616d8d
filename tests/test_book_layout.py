"""The built book's layout, every page at a desktop (1280 px) and a phone (390 px) width: no table, code
block, equation or figure reaches past the text column (a wide one must scroll inside its own box), the page
never scrolls sideways, no page ships widget state, and no plumbing cell (the banner call, an import-only
cell, a caption written by code) shows its input. Full-page screenshots go to book/_build/screenshots/.

Skipped when Chromium, Playwright or the built book is missing; `make book` builds it. Set VAELIB_BOOK_HTML
to check a book built elsewhere.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_book_browser import HTML_DIR, PAGES, SCREENSHOT_DIR

from vaelib.book.browser import open_page
from vaelib.book.tidy import WIDGET_MIME

pytestmark = pytest.mark.browser

WIDTHS = {"desktop": 1280, "phone": 390}

# Each element's visible box: its own, or that of the nearest ancestor that clips or scrolls it (then the
# element scrolls inside that box, which is allowed). A visible box past the article's edges is cut off or
# widens the page.
OVERFLOW_JS = r"""() => {
  const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const column = article.getBoundingClientRect();
  const hits = [];
  const describe = el => {
    const text = (el.getAttribute('alt') || el.textContent || '').trim().replace(/\s+/g, ' ').slice(0, 60);
    const cell = el.closest('.cell');
    const where = cell ? `cell ${Array.from(document.querySelectorAll('.cell')).indexOf(cell) + 1}` : 'text';
    return `${el.tagName.toLowerCase()} (${where}) "${text}"`;
  };
  const measured = 'h1, h2, h3, table, pre, code, mjx-container, div.math, img, figure, .cell_output';
  for (const el of article.querySelectorAll(measured)) {
    const own = el.getBoundingClientRect();
    if (own.width === 0 || own.height === 0) continue;
    let box = own;
    for (let a = el.parentElement; a && a !== article; a = a.parentElement) {
      const style = getComputedStyle(a);
      if (style.overflowX !== 'visible') { box = a.getBoundingClientRect(); break; }
    }
    if (box.right > column.right + 1 || box.left < column.left - 1) {
      hits.push(`${describe(el)}: ${Math.round(box.left)}..${Math.round(box.right)} px, column `
                + `${Math.round(column.left)}..${Math.round(column.right)} px`);
    }
  }
  const page = document.scrollingElement;
  if (page.scrollWidth > window.innerWidth + 1) {
    hits.push(`the page: ${page.scrollWidth} px wide in a ${window.innerWidth} px window`);
  }
  return hits;
}"""

# Code a reader does not need: the inputs shown (not folded into a closed <details>) that are plumbing.
PLUMBING_JS = r"""() => {
  const shown = [];
  for (const input of document.querySelectorAll('.cell_input')) {
    const folded = input.closest('details');
    if (folded && !folded.open) continue;
    const code = input.innerText.trim();
    const lines = code.split('\n').map(l => l.trim()).filter(l => l && !l.startsWith('#'));
    const importOnly = lines.length > 0 && lines.every(l => /^(import |from \S+ import )/.test(l));
    const plumbing = /start_chapter\(|profile_banner\(|^# Parameters/m.test(code);
    // A cell that writes only text (a caption, a finding); one that also shows a table or a figure keeps its code.
    const output = input.closest('.cell').querySelector('.cell_output');
    const textOnly = !output || !output.querySelector('table, img, canvas');
    const caption = textOnly && (/^Markdown\(f?["(]/.test(code) || /^display\(Markdown\(/.test(code));
    if (importOnly || plumbing || caption) shown.push(code.slice(0, 70));
  }
  return shown;
}"""

# vaelib.book.notebook.profile_banner's box, titled "Profile: <name>": the announcement already says it.
BANNERS_JS = """() => Array.from(document.querySelectorAll('article .admonition-title'))
    .filter(t => t.textContent.trim().startsWith('Profile:')).length"""


@pytest.mark.skipif(not PAGES, reason=f"no built book in {HTML_DIR}; run `make book` first")
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", PAGES or ["(none)"])
def test_nothing_is_clipped(browser: Any, name: str, width: str) -> None:
    page = browser.new_page(viewport={"width": WIDTHS[width], "height": 900})
    try:
        open_page(page, HTML_DIR / f"{name}.html")
        hits = page.evaluate(OVERFLOW_JS)
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_DIR / f"{name.replace('/', '_')}-{width}.png"), full_page=True)
    finally:
        page.close()
    assert not hits, f"{name} at {WIDTHS[width]} px: wider than the text column:\n  " + "\n  ".join(hits)


@pytest.mark.skipif(not PAGES, reason=f"no built book in {HTML_DIR}; run `make book` first")
@pytest.mark.parametrize("name", PAGES or ["(none)"])
def test_no_machinery_on_the_page(browser: Any, name: str) -> None:
    html = (HTML_DIR / f"{name}.html").read_text(encoding="utf-8")
    assert WIDGET_MIME not in html and "widget-state+json" not in html, f"{name} ships widget state"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        open_page(page, HTML_DIR / f"{name}.html")
        shown = page.evaluate(PLUMBING_JS)
        banners = page.evaluate(BANNERS_JS)
    finally:
        page.close()
    assert not shown, f"{name} shows the input of plumbing cells: {shown}"
    assert banners == 0, f"{name} repeats the profile's banner below the announcement {banners} time(s)"
