"""The latent space: posterior means by class, the KL per latent dimension, and the units' activity.

The values come from `vaelib.evaluate` (the one home of unit statistics); these functions only draw them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .. import evaluate
from ..data import Dataset
from .style import subplots


@torch.no_grad()
def latent_scatter(model: torch.nn.Module, dataset: Dataset, n: int = 5000, split: str = "test",
                   dims: tuple[int, int] = (0, 1), ax: Axes | None = None, title: str | None = None) -> Figure:
    """Posterior means E_q[z|x] of `n` examples on two latent dimensions, coloured by class label."""
    model.eval()
    x, labels = evaluate.split_data(dataset, split, n)
    means = evaluate.posterior_means(model, x).numpy()
    if means.shape[1] < 2:
        raise ValueError(f"latent_scatter needs a latent space of >= 2 dimensions; this model has {means.shape[1]}")
    if ax is None:
        fig, ax = subplots(figsize=(5.5, 5.0))
    else:
        fig = ax.figure
    if labels is None:
        ax.scatter(means[:, dims[0]], means[:, dims[1]], s=3, alpha=0.5)
    else:
        points = ax.scatter(means[:, dims[0]], means[:, dims[1]], c=labels.numpy(), cmap="tab10", s=3,
                            alpha=0.6, vmin=-0.5, vmax=9.5)
        bar = fig.colorbar(points, ax=ax, ticks=range(10))
        bar.set_label("label")
    ax.set_xlabel(f"$z_{{{dims[0] + 1}}}$ (posterior mean)")
    ax.set_ylabel(f"$z_{{{dims[1] + 1}}}$ (posterior mean)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title or f"q(z|x) means of {len(x):,} {split} images")
    return fig

def kl_per_dimension(models: torch.nn.Module | Mapping[str, torch.nn.Module], dataset: Dataset, n: int | None = 5000,
                     split: str = "test", threshold: float | None = None, ax: Axes | None = None,
                     title: str | None = None) -> Figure:
    """Mean KL per latent dimension (nats, log axis), sorted from largest to smallest, one line per model.

    The KL of a dimension the decoder ignores collapses to ~0 (an inactive unit). `threshold` draws a
    horizontal line (e.g. 0.01 nats) as a guide; the active-unit count itself uses posterior-mean variance.
    """
    if isinstance(models, torch.nn.Module):
        models = {"": models}
    rows = []
    for label, model in models.items():
        values = np.sort(evaluate.kl_per_dimension(model, dataset, n, split))[::-1]
        rows += [{"model": label, "rank": j + 1, "kl": v} for j, v in enumerate(values)]
    frame = pd.DataFrame(rows)
    if ax is None:
        fig, ax = subplots(figsize=(min(10.0, 4.0 + 0.2 * frame["rank"].max()), 3.8))
    else:
        fig = ax.figure
    floor = 1e-4  # a collapsed unit's KL is ~1e-6 nats; clip so the log axis still shows it, at the bottom
    for label, group in frame.groupby("model", sort=False):
        ax.plot(group["rank"], group["kl"].clip(lower=floor), "o-", markersize=4, label=label or None)
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle=":", linewidth=1, label=f"{threshold} nats")
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor / 2)
    if len(models) > 1 or threshold is not None:
        ax.legend(fontsize="small")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("latent dimension, sorted by KL")
    ax.set_ylabel("mean KL per dimension (nats)")
    ax.set_title(title or f"mean KL per latent dimension ({split} images)")
    fig.tight_layout()
    return fig

def unit_activity(models: torch.nn.Module | Mapping[str, torch.nn.Module], dataset: Dataset, n: int | None = None,
                  split: str = "test", threshold: float = evaluate.ACTIVE_UNIT_THRESHOLD, ax: Axes | None = None,
                  title: str | None = None) -> Figure:
    """Activity A_u = Cov_x(E_q[u|x]) of every latent unit, sorted from most to least active, on a log axis,
    one line per model, with the active-unit threshold (Burda et al.: 0.01) as a dotted line. The legend
    gives each model's count of active units (A_u > threshold)."""
    if isinstance(models, torch.nn.Module):
        models = {"": models}
    if not models:
        raise ValueError("models is empty; pass a model or a dict {label: model}")
    if ax is None:
        fig, ax = subplots(figsize=(6.5, 3.8))
    else:
        fig = ax.figure
    floor = 1e-6  # an inactive unit's activity is ~1e-8: clip so the log axis still shows it
    for label, model in models.items():
        values = np.sort(evaluate.unit_activity(model, dataset, n, split))[::-1]
        active = int((values > threshold).sum())
        name = f"{label}: {active} active" if label else f"{active} active"
        ax.plot(np.arange(1, len(values) + 1), np.clip(values, floor, None), "o-", markersize=3, label=name)
    ax.axhline(threshold, color="grey", linestyle=":", linewidth=1, label=f"threshold {threshold}")
    ax.set_yscale("log")
    ax.set_xlabel("latent unit, sorted by activity")
    ax.set_ylabel("$\\mathrm{Cov}_x(E_q[u])$")
    ax.set_title(title or f"activity of the latent units ({split} images)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
