"""Curves: training histories (ELBO and its two terms against epochs or samples) and a metric against a
setting (e.g. the bound against the latent dimension). Bounds in nats per example, as everywhere."""

from __future__ import annotations

import math
from collections.abc import Mapping

import matplotlib as mpl
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .style import SPLIT_STYLES, subplots

_CURVE_PANELS = {
    "elbo": ("ELBO", "nats per example"),
    "log_px_z": ("reconstruction term $E_q[\\log p(x|z)]$", "nats per example"),
    "kl": ("$KL(q(z|x)\\,\\|\\,p(z))$", "nats per example"),
}

def training_curves(histories: Mapping[str, pd.DataFrame], x: str = "epoch", logx: bool = False,
                    ylim: tuple[float, float] | None = None, components: bool = False, bits_per_dim: int | None = None,
                    title: str | None = None) -> Figure:
    """Train (solid) and test (dashed) ELBO in nats per example against `x` ("epoch" or "samples_seen").

    One colour per run and one line per run per split. components=True adds panels for the reconstruction
    term and the KL. bits_per_dim=D plots -ELBO / (D ln 2) instead (bits per dimension; exact only for a
    discrete likelihood). Missing test points (eval_schedule="log") are skipped, not interpolated as zeros.
    """
    if x not in ("epoch", "samples_seen"):
        raise ValueError(f"x={x!r} is not allowed; choose 'epoch' or 'samples_seen'")
    if not histories:
        raise ValueError("histories is empty; pass a dict {label: run.history}")
    panels = list(_CURVE_PANELS) if components else ["elbo"]
    fig, axes = subplots(1, len(panels), figsize=(5.0 * len(panels), 3.8), squeeze=False)
    colours = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, history) in enumerate(histories.items()):
        colour = colours[i % len(colours)]
        for ax, stem in zip(axes[0], panels, strict=True):
            for split, style in SPLIT_STYLES.items():
                column = f"{split}_{stem}"
                if column not in history:
                    continue
                frame = history[[x, column]].dropna()
                y = frame[column]
                if bits_per_dim and stem != "kl":
                    y = -y / (bits_per_dim * math.log(2.0))
                elif bits_per_dim:
                    y = y / (bits_per_dim * math.log(2.0))
                name = f"{label} ({split})" if label else split
                ax.plot(frame[x], y, style, color=colour, label=name,
                        marker="o" if len(frame) < 30 else None, markersize=3)
    for ax, stem in zip(axes[0], panels, strict=True):
        panel_title, ylabel = _CURVE_PANELS[stem]
        if bits_per_dim:
            panel_title = {"elbo": "-ELBO", "log_px_z": "$-E_q[\\log p(x|z)]$", "kl": panel_title}[stem]
            ylabel = "bits per dimension"
        ax.set_ylabel(ylabel)
        if len(panels) > 1:
            ax.set_title(panel_title)
        ax.set_xlabel("training examples seen" if x == "samples_seen" else "epoch")
        if logx:
            ax.set_xscale("log")
        elif x == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if ylim is not None and stem == "elbo":
            ax.set_ylim(*ylim)
    axes[0, 0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig

def metric_against(frame: pd.DataFrame, x: str, ys: Mapping[str, str], xlabel: str | None = None,
                   ylabel: str = "nats per example", logx: bool = False, title: str | None = None,
                   ax: Axes | None = None) -> Figure:
    """Lines of columns `ys` ({column: legend label}) of `frame` against column `x`, e.g. the test ELBO and
    log p(x) against the latent dimension."""
    missing = [c for c in [x, *ys] if c not in frame]
    if missing:
        raise ValueError(f"frame lacks column(s) {', '.join(missing)}; it has {', '.join(map(str, frame.columns))}")
    if ax is None:
        fig, ax = subplots(figsize=(5.5, 3.8))
    else:
        fig = ax.figure
    for column, label in ys.items():
        data = frame[[x, column]].dropna()
        ax.plot(data[x], data[column], "o-", label=label)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(frame[x].unique()), labels=[str(v) for v in sorted(frame[x].unique())])
    # Under the axes: curves against Nz rise steeply, so no corner inside the panel is reliably empty.
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
