"""One style for every figure of the book, and the figure factory that keeps pyplot out of it.

`subplots` makes a matplotlib Figure without pyplot: nothing is registered with pyplot's global state, so
a notebook shows a figure once (as the cell's value) and the figures of a long chapter do not pile up in
memory. The colours, labels and line styles that mean the same thing on every page live here once.
"""

from __future__ import annotations

import sys

import matplotlib as mpl
from matplotlib.figure import Figure

from ..config import DATASET_LABELS, METHOD_LABELS  # noqa: F401  (re-exported: the figures' labels)

ImageShape = tuple[int, int, int]

METHOD_COLORS = {"aevb": "#0072B2", "wake-sleep": "#D55E00", "mcem": "#009E73"}  # colour-blind safe
# The book's one convention for the two splits, on every page: training solid, test dashed.
SPLIT_STYLES = {"train": "-", "test": "--"}


def subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] | None = None, **kw):
    """Figure.subplots without pyplot: the figure is not registered with pyplot, so a notebook shows it once
    (as the cell's value) and the figures of a long chapter do not pile up in memory."""
    _enable_notebook_display()
    fig = Figure(figsize=figsize, layout=None)
    return fig, fig.subplots(nrows, ncols, **kw)


def _enable_notebook_display() -> None:
    """In a Jupyter kernel on the inline backend, load that backend's module: loading it registers the PNG
    formatter that displays a returned Figure (a Figure made without pyplot never loads it). Outside IPython,
    or on another backend (ipympl, Agg), this does nothing."""
    shell = sys.modules.get("IPython")
    if shell is None or shell.get_ipython() is None:
        return
    if "matplotlib_inline" in str(mpl.rcParams["backend"]) or mpl.rcParams["backend"] == "inline":
        import matplotlib_inline.backend_inline  # noqa: F401

def set_style(context: str = "notebook") -> None:
    """Seaborn's whitegrid theme with a colour-blind palette; call once at the top of a notebook."""
    import seaborn as sns

    sns.set_theme(context=context, style="whitegrid", palette="colorblind")
    mpl.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "image.interpolation": "nearest",
                         "axes.titlesize": "medium"})
