"""The paper's two quantitative figures: Fig. 2 (the ELBO against training samples, AEVB against wake-sleep)
and Fig. 3 (the marginal likelihood against training samples, with Monte Carlo EM), drawn from the long
tables of `vaelib.experiments.figure2` and `figure3`. One colour per method, the book's split styles."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from ..config import METHODS, check_choice
from .style import DATASET_LABELS, METHOD_COLORS, METHOD_LABELS, SPLIT_STYLES, subplots

FIG2_YLIM: dict[str, tuple[float, float]] = {"binarized-mnist": (-150.0, -100.0), "freyface": (0.0, 1600.0)}

PAPER_XLIM = (1e5, 1e8)  # Fig. 2's x axis: training samples evaluated

def _out_of_range_note(ax: Axes, ylim: tuple[float, float], finals: list[tuple[str, float]]) -> None:
    outside = [(label, v) for label, v in finals if not ylim[0] <= v <= ylim[1]]
    if outside:
        text = "ends outside the axis:\n" + "\n".join(f"{label}: {v:.0f}" for label, v in outside)
        # Top left: the curves climb from the bottom left, so that corner stays emptiest; zorder 1 keeps
        # the lines drawn over the note.
        ax.text(0.03, 0.97, text, transform=ax.transAxes, fontsize="x-small", va="top", ha="left",
                color="0.3", zorder=1)

MEASURED_STYLE = {"linewidth": 2.6, "alpha": 0.35}  # measured runs: wide and pale, under this build's lines


def plot_figure2(df: pd.DataFrame, dataset: str, ylim: tuple[float, float] | str | None = "paper",
                 xlim: tuple[float, float] | str | None = None, ncols: int | None = None,
                 measured: pd.DataFrame | None = None, measured_label: str = "measured") -> Figure:
    """Fig. 2 for one data set: a panel per Nz, ELBO per datapoint against training samples evaluated
    (log axis), AEVB and wake-sleep, training solid and test dashed (the book's one convention).

    ylim: "paper" for the paper's range (MNIST -150..-100, Frey Face 0..1600), None to fit the data, or a
    pair; curves may leave the panel as in the paper, and a note lists the end points outside it.
    xlim: None to fit the data, "paper" for 10^5..10^8, or a pair.
    ncols: panels per row; by default all of them up to three, else two rows (5 panels: 3 + 2, 4: 2 x 2),
    so that each panel stays legible at the width of a book page.
    measured: runs trained longer elsewhere (`vaelib.experiments.measured.load_figure2`), drawn wide and
    pale under this table's curves in the panels of their Nz, labelled "<method> <split>, <measured_label>".
    """
    data = df[df["dataset"] == dataset]
    extra = measured[measured["dataset"] == dataset] if measured is not None else df.iloc[:0]
    if data.empty:
        raise ValueError(f"no rows for dataset={dataset!r}; the table holds: {sorted(df['dataset'].unique())}")
    dims = sorted(set(data["latent_dim"]) | set(extra["latent_dim"]))
    ncols = ncols or (len(dims) if len(dims) <= 3 else math.ceil(len(dims) / 2))
    nrows = math.ceil(len(dims) / ncols)
    fig, axes = subplots(nrows, ncols, figsize=(2.9 * ncols, 2.7 * nrows), sharey=True, squeeze=False)
    limits = FIG2_YLIM.get(dataset) if ylim == "paper" else ylim
    for ax, latent_dim in zip(axes.flat, dims, strict=False):
        finals = []
        for method in [m for m in METHODS if m in set(extra["method"])]:
            for split, style in SPLIT_STYLES.items():
                curve = extra[(extra["method"] == method) & (extra["latent_dim"] == latent_dim)
                              & (extra["split"] == split)].sort_values("samples_seen")
                if not curve.empty:
                    ax.plot(curve["samples_seen"], curve["elbo"], linestyle=style, color=METHOD_COLORS[method],
                            label=f"{METHOD_LABELS[method]} {split}, {measured_label}",
                            gid=f"measured|{method}|{latent_dim}|{split}", **MEASURED_STYLE)
        for method in [m for m in METHODS if m in set(data["method"])]:
            for split, style in SPLIT_STYLES.items():
                curve = data[(data["method"] == method) & (data["latent_dim"] == latent_dim)
                             & (data["split"] == split)].sort_values("samples_seen")
                if curve.empty:
                    continue
                label = f"{METHOD_LABELS[method]} {split}"
                ax.plot(curve["samples_seen"], curve["elbo"], linestyle=style, color=METHOD_COLORS[method],
                        label=label, gid=f"{method}|{latent_dim}|{split}")
                finals.append((label, float(curve["elbo"].iloc[-1])))
        ax.set_xscale("log")
        ax.set_title(f"{DATASET_LABELS.get(dataset, dataset)}, $N_z = {latent_dim}$")
        if limits is not None:
            ax.set_ylim(*limits)
            _out_of_range_note(ax, limits, finals)
        if xlim == "paper":
            both = pd.concat([data["samples_seen"], extra["samples_seen"]])
            ax.set_xlim(min(PAPER_XLIM[0], float(both.min())), max(PAPER_XLIM[1], float(both.max())))
        elif xlim is not None:
            ax.set_xlim(*xlim)
    for ax in axes.flat[len(dims):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("$\\mathcal{L}$ (nats per datapoint)")
    for ax in axes.flat:
        ax.set_xlabel("training samples evaluated", fontsize="small")
        ax.xaxis.set_minor_formatter(NullFormatter())  # decade labels only: minor ones overlap
    fig.tight_layout()
    _legend_below(fig, axes.flat, 4 if ncols >= 3 else 2)
    return fig


def _legend_below(fig: Figure, axes, ncol: int) -> None:
    """One legend for all panels, under the figure: every label any panel drew, once."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="upper center", ncol=min(ncol, len(entries)),
                   frameon=False, bbox_to_anchor=(0.5, 0.0))

X_LABELS = {"samples_seen": "training samples evaluated", "train_seconds": "training time (s, this machine)"}


def plot_figure3(df: pd.DataFrame, estimator: str = "is", train_sizes: Sequence[int] | None = None,
                 ylim: tuple[float, float] | None = None, xlim: tuple[float, float] | str | None = None,
                 x: str = "samples_seen", measured: pd.DataFrame | None = None,
                 measured_label: str = "measured") -> Figure:
    """Fig. 3: one panel per training-set size, log p(x) per datapoint (nats) of the evaluated training
    and test points against training samples evaluated (log axis); one colour per method, training solid,
    test dashed. estimator: which rows of the table to draw ("is", "hmc-is" or "paper"). x: "samples_seen"
    (the paper's axis) or "train_seconds" (wall time of training). measured: a longer run's table
    (`vaelib.experiments.measured.load_figure3`), drawn wide and pale under this one's curves."""
    check_choice("x", x, tuple(X_LABELS))
    data = df[df["estimator"] == estimator]
    if data.empty:
        raise ValueError(f"no rows for estimator={estimator!r}; the table holds: {sorted(df['estimator'].unique())}")
    extra = measured[measured["estimator"] == estimator] if measured is not None else df.iloc[:0]
    sizes = list(train_sizes) if train_sizes is not None else sorted(set(data["train_size"]) | set(extra["train_size"]))
    fig, axes = subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.4), sharey=True, squeeze=False)
    for ax, n in zip(axes[0], sizes, strict=True):
        part, longer = data[data["train_size"] == n], extra[extra["train_size"] == n]
        for method in [m for m in METHODS if m in set(longer["method"])]:
            for split, style in SPLIT_STYLES.items():
                curve = longer[(longer["method"] == method) & (longer["split"] == split)].sort_values(x)
                if not curve.empty:
                    ax.plot(curve[x], curve["log_likelihood"], linestyle=style, color=METHOD_COLORS[method],
                            label=f"{METHOD_LABELS[method]} {split}, {measured_label}",
                            gid=f"measured|{method}|{n}|{split}", **MEASURED_STYLE)
        for method in [m for m in METHODS if m in set(part["method"])]:
            for split, style in SPLIT_STYLES.items():
                curve = part[(part["method"] == method) & (part["split"] == split)].sort_values(x)
                if curve.empty:
                    continue
                ax.plot(curve[x], curve["log_likelihood"], linestyle=style, marker=".",
                        color=METHOD_COLORS[method], label=f"{METHOD_LABELS[method]} {split}",
                        gid=f"{method}|{n}|{split}")
        ax.set_xscale("log")
        ax.set_title(f"$N_{{train}}$ = {n:,}")
        if ylim is not None:
            ax.set_ylim(*ylim)
        if xlim == "paper":
            both = pd.concat([data["samples_seen"], extra["samples_seen"]])
            ax.set_xlim(min(PAPER_XLIM[0], float(both.min())), max(PAPER_XLIM[1], float(both.max())))
        elif xlim is not None:
            ax.set_xlim(*xlim)
    axes[0, 0].set_ylabel("log p(x) (nats per datapoint)")
    for ax in axes.flat:
        ax.set_xlabel(X_LABELS[x])
        ax.xaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    _legend_below(fig, axes.flat, 3)
    return fig
