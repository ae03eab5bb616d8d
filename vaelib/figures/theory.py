"""Figures of the theory chapters: reparameterized samples against their densities (chapter 1), gradient
variance against L, the importance-weighted gap against K and AEVB on the linear-Gaussian model (chapter 2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..experiments.reparameterization import DTYPE, REPARAMETERIZATIONS, TOY_OBJECTIVES, Reparameterization, draw
from .style import subplots


def plot_reparameterizations(n_samples: int = 20_000, seed: int = 0,
                             examples: Sequence[Reparameterization] = REPARAMETERIZATIONS) -> Figure:
    """Histogram of each example's reparameterized samples with the torch.distributions density on top.

    Uses the same seeds as `check_reparameterizations(n_samples, seed)`, so it shows the samples the
    table tested. Heavy tails (Cauchy) are cut at the 1st and 99th percentiles for display.
    """
    cols = 3
    rows = math.ceil(len(examples) / cols)
    fig, axes = subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
    for i, (rep, ax) in enumerate(zip(examples, axes.flat, strict=False)):
        with torch.no_grad():
            _plot_example(ax, rep, n_samples, seed + i)
    for ax in axes.flat[len(examples):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig

def _plot_example(ax: Axes, rep: Reparameterization, n_samples: int, seed: int) -> None:
    """One panel of `plot_reparameterizations` (call under torch.no_grad)."""
    samples, reference = draw(rep, n_samples, seed)
    values = samples.numpy()
    heavy_tailed = rep.name.startswith("Cauchy")
    low, high = np.quantile(values, [0.01, 0.99]) if heavy_tailed else (values.min(), values.max())
    ax.hist(values[(values >= low) & (values <= high)], bins=60, density=True, alpha=0.55,
            label="reparameterized samples")
    grid = torch.linspace(float(low), float(high), 400, dtype=DTYPE)
    support = reference.support
    if hasattr(support, "lower_bound"):  # log_prob is only defined on the support
        lb, ub = float(support.lower_bound), float(getattr(support, "upper_bound", math.inf))
        grid = grid.clamp(lb + 1e-9, ub - 1e-9)
    density = torch.exp(reference.log_prob(grid)).numpy()
    if heavy_tailed:  # the histogram is of the truncated sample: renormalize the curve to match
        mass = reference.cdf(torch.tensor([high, low], dtype=DTYPE))
        density = density / float(mass[0] - mass[1])
    ax.plot(grid.numpy(), density, color="black", lw=1.5, label="torch.distributions density")
    ax.set_title(f"{rep.name}\n{rep.family}", fontsize="small")
    ax.tick_params(labelsize="x-small")

def plot_gradient_variance(frame: pd.DataFrame) -> Figure:
    """Log-log plot of estimator variance against L (a `gradient_variance` frame), one panel per objective,
    with dashed 1/L lines through each estimator's L = smallest point."""
    import seaborn as sns

    objectives = list(dict.fromkeys(frame["objective"]))
    fig, axes = subplots(1, len(objectives), figsize=(4.5 * len(objectives), 3.6), squeeze=False)
    for ax, objective in zip(axes.flat, objectives, strict=True):
        part = frame[frame["objective"] == objective]
        sns.lineplot(data=part, x="L", y="variance", hue="estimator", style="estimator", markers=True,
                     dashes=False, ax=ax)
        for (_, group), color in zip(part.groupby("estimator", sort=False), sns.color_palette(), strict=False):
            first = group.sort_values("L").iloc[0]
            ls = np.array(sorted(group["L"]), dtype=float)
            ax.plot(ls, first["variance"] * first["L"] / ls, ls="--", lw=0.8, color=color)
        tex = next((t.tex for t in TOY_OBJECTIVES.values() if t.formula == objective and t.tex),
                   objective.removeprefix("f(z) = "))
        ax.set(xscale="log", yscale="log", xlabel="samples per estimate $L$",
               ylabel="variance of the gradient estimate",
               title=rf"$\partial_\mu\, E[{tex}]$, $z \sim N(\mu, \sigma^2)$")
        ax.legend(title=None, fontsize="small")
    fig.tight_layout()
    return fig

def plot_iwae_gap(frame: pd.DataFrame, datapoint: int = 0) -> Figure:
    """Left: mean gap log p(x) - IWAE bound (+/- 2 standard errors) against K, per datapoint, from an
    `iwae_gap_curve` frame. Right: every estimate of the bound for one datapoint, with log p(x) dashed."""
    import seaborn as sns

    fig, (left, right) = subplots(1, 2, figsize=(10, 3.8))
    summary = frame.groupby(["datapoint", "k"])["gap"].agg(["mean", "sem"]).reset_index()
    for (point, group), color in zip(summary.groupby("datapoint"), sns.color_palette(n_colors=99), strict=False):
        left.errorbar(group["k"], group["mean"], yerr=2 * group["sem"], marker="o", ms=4, capsize=3,
                      color=color, label=f"datapoint {point}")
    left.axhline(0.0, color="black", lw=0.8)
    left.set(xscale="log", xlabel="importance samples $K$", ylabel=r"$\log p(x) - \hat{\mathcal{L}}_K$ (nats)",
             title="The gap closes as K grows")
    left.legend(fontsize="x-small")
    one = frame[frame["datapoint"] == datapoint]
    if one.empty:
        raise ValueError(f"datapoint={datapoint} is not in the frame; it has {sorted(frame['datapoint'].unique())}")
    sns.stripplot(data=one, x="k", y="iwae_bound", ax=right, size=3, alpha=0.6, color=sns.color_palette()[0])
    right.axhline(float(one["log_px"].iloc[0]), ls="--", color="black", lw=1, label=r"exact $\log p(x)$")
    right.set(xlabel="importance samples $K$", ylabel=r"$\hat{\mathcal{L}}_K$ (nats)",
              title=f"Every estimate, datapoint {datapoint}")
    right.legend(fontsize="small")
    fig.tight_layout()
    return fig

def plot_toy_training(history: pd.DataFrame) -> Figure:
    """Left: the ELBO (closed form) climbing towards log p(x) during `train_toy_encoder`. Right: the exact
    KL(q(z|x) || p(z|x)) on a log scale, which is the remaining gap."""
    fig, (left, right) = subplots(1, 2, figsize=(10, 3.6))
    left.plot(history["step"], history["elbo"], label="ELBO (closed form)")
    left.plot(history["step"], history["log_px"], ls="--", color="black", lw=1, label="exact log p(x)")
    left.set(xlabel="AEVB step", ylabel="nats per datapoint (mean over the data)", title="ELBO during training")
    low = float(history["log_px"].iloc[0]) - 3 * max(float(history["kl_posterior"].iloc[-1]), 0.5)
    left.set_ylim(bottom=max(float(history["elbo"].min()), low))  # the first steps would hide the end
    left.legend(fontsize="small")
    right.plot(history["step"], history["kl_posterior"])
    right.set(yscale="log", xlabel="AEVB step", ylabel="KL(q(z|x) || p(z|x)) (nats)", title="The gap")
    fig.tight_layout()
    return fig
