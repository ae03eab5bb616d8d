"""What a chapter calls at its top and bottom: the check of its parameters with the profile's banner, and
which chapters recorded nothing."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import NOTEBOOKS_DIR
from .parameters import check_injected
from .profiles import ProfileError, available_profiles, load_profile

if TYPE_CHECKING:
    import pandas as pd


def start_chapter(namespace: Mapping[str, Any]) -> None:
    """The second cell of every chapter, `start_chapter(globals())`: refuse what papermill injected that the
    parameters cell does not declare, or of the wrong kind (ParameterError, one line, before any work;
    `vaelib.book.parameters.check_injected`), then show the banner of the profile in `profile`."""
    check_injected(namespace)
    profile_banner(namespace["profile"])


def profile_banner(profile: str) -> None:
    """Display the profile's banner as an admonition; call it in the cell after the parameters cell.

    In the book the box uses the theme's admonition style; in JupyterLab it is a plain box; in a terminal
    (text/plain) it is one line.
    """
    from html import escape

    from IPython.display import display

    try:
        prof = load_profile(profile)
        title, text, kind = f"Profile: {prof.name}", prof.banner, "warning" if prof.name == "quick" else "note"
    except ProfileError:
        # A notebook run by hand with a made-up profile still runs; it just says so.
        title, kind = f"Profile: {profile}", "warning"
        text = (f"{profile!r} is not one of the book's profiles ({', '.join(available_profiles())}); "
                "this notebook was run with hand-picked parameters.")
    # The theme's own admonition classes, so the box looks like the book's other admonitions.
    html = (f'<div class="admonition {kind}"><p class="admonition-title"><strong>{escape(title)}</strong></p>'
            f"<p>{escape(text)}</p></div>")
    display({"text/html": html, "text/plain": f"{title}. {text}"}, raw=True)


def missing_chapters(frame: pd.DataFrame, profile: str, exclude: Sequence[str] = ("10_results",)) -> list[str]:
    """Chapters that `profile` lists and notebooks/ holds but that recorded no number in `frame` (the output
    of `load_all`), leaving out `exclude` (the results page itself). An unknown profile gives an empty list."""
    try:
        listed = list(load_profile(profile).notebooks)
    except ProfileError:
        return []
    present = set(frame["chapter"]) if "chapter" in frame else set()
    return [stem for stem in listed if stem not in present and stem not in exclude
            and (NOTEBOOKS_DIR / f"{stem}.ipynb").exists()]


def chapter_title(stem: str, notebooks_dir: Path | None = None) -> str:
    """The title of chapter `stem`: the first `# ` heading of notebooks/<stem>.ipynb, with its number
    ("Chapter 3: MNIST, done properly"), or the stem itself when the notebook or its heading is missing."""
    path = Path(notebooks_dir or NOTEBOOKS_DIR) / f"{stem}.ipynb"
    if path.is_file():
        for cell in json.loads(path.read_text(encoding="utf-8")).get("cells", []):
            if cell.get("cell_type") != "markdown":
                continue
            for line in "".join(cell.get("source", "")).splitlines():
                if line.startswith("# "):
                    number = stem.split("_")[0]
                    prefix = f"Chapter {int(number)}: " if number.isdigit() else ""
                    return prefix + line[2:].strip()
    return stem
