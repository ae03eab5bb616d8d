"""Every figure of the book, in one style and without pyplot state (`style.subplots`).

The functions take data, histories or trained models and return a matplotlib Figure; nothing here trains,
and the numbers they draw come from `vaelib.evaluate`. Images are (N, D) flat or (N, C, H, W) with values
in [0, 1]; bounds are in nats per example. Call `set_style()` once per notebook.

    images.py     image grids, reconstructions, samples, decoder draws, the learned manifold (Fig. 4)
    latent.py     latent scatter, KL per dimension, unit activity
    curves.py     training curves, a metric against a setting
    tables.py     the chapters' comparison tables
    paper.py      the paper's Figs. 2 and 3
    theory.py     the figures of chapters 1 and 2
    explorer.py   the JupyterLab latent explorer and its static stand-in
    live.py       the book's live figures: a decoder exported at build time, run by the reader's browser
"""

from __future__ import annotations

from .curves import metric_against, training_curves
from .images import (
    compare_reconstructions,
    compare_samples,
    decoder_draws_figure,
    image_grid,
    make_grid,
    manifold_figure,
    manifold_latents,
    reconstruction_figure,
    samples_figure,
)
from .latent import kl_per_dimension, latent_scatter, unit_activity
from .paper import plot_figure2, plot_figure3
from .style import ImageShape, set_style, subplots
from .tables import bound_table, comparison_table, objective_table
from .theory import plot_gradient_variance, plot_iwae_gap, plot_reparameterizations, plot_toy_training

__all__ = ["ImageShape", "bound_table", "compare_reconstructions", "compare_samples", "comparison_table",
           "decoder_draws_figure", "image_grid", "kl_per_dimension", "latent_scatter", "make_grid",
           "manifold_figure", "manifold_latents", "metric_against", "objective_table", "plot_figure2",
           "plot_figure3", "plot_gradient_variance", "plot_iwae_gap", "plot_reparameterizations", "plot_toy_training",
           "reconstruction_figure", "samples_figure", "set_style", "subplots", "training_curves",
           "unit_activity"]
