"""Figures of the book: image grids, reconstructions, samples, latent manifolds, training curves.

Every function takes data, histories or trained models and returns a matplotlib Figure; nothing here
trains. Images are (N, D) flat or (N, C, H, W) tensors/arrays with values in [0, 1]; bounds are in nats
per example (sums over pixels), as everywhere in vaelib. Call `set_style()` once per notebook.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.stats import norm

from .objectives import bits_per_dim as _bits_per_dim
from .objectives import continuous_bits_per_dim, kl_divergence

ImageShape = tuple[int, int, int]

# Column stems of a training history (vaelib.train.HISTORY_COLUMNS) and their labels.
_CURVE_PANELS = {
    "elbo": ("ELBO", "nats per example"),
    "log_px_z": ("reconstruction term $E_q[\\log p(x|z)]$", "nats per example"),
    "kl": ("$KL(q(z|x)\\,\\|\\,p(z))$", "nats per example"),
}


def _subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] | None = None, **kw):
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


# --- images --------------------------------------------------------------------------------------------
def _as_images(images: torch.Tensor | np.ndarray, image_shape: ImageShape) -> np.ndarray:
    """(N, D) or (N, C, H, W) in [0, 1] -> float numpy (N, C, H, W), checked against `image_shape`."""
    array = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    expected = math.prod(image_shape)
    if array.ndim == 1 and array.size == expected:
        array = array[None]
    if array.ndim == 2 and array.shape[1] != expected:
        raise ValueError(f"images of shape {tuple(array.shape)} do not match image_shape={image_shape} "
                         f"({expected} values per image); pass (N, {expected}) or (N, *{image_shape})")
    if array.ndim == 4 and tuple(array.shape[1:]) != tuple(image_shape):
        raise ValueError(f"images of shape {tuple(array.shape)} do not match image_shape={image_shape}")
    if array.ndim not in (2, 4):
        raise ValueError(f"images must be (N, D) or (N, C, H, W); got shape {tuple(array.shape)}")
    return np.clip(array.reshape(-1, *image_shape), 0.0, 1.0)


def make_grid(images: torch.Tensor | np.ndarray, image_shape: ImageShape, nrow: int = 10,
              padding: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Tile images into one array, `nrow` images per row (as torchvision's make_grid): (H', W') for grey
    images, (H', W', C) for colour, with H' = rows*(H+padding)+padding and W' = nrow*(W+padding)+padding."""
    if not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow={nrow!r} is not allowed; it must be an integer >= 1 (images per row)")
    x = _as_images(images, image_shape)
    n, (c, h, w) = len(x), image_shape
    ncol = min(nrow, max(n, 1))
    rows = max(1, math.ceil(n / ncol))
    grid = np.full((c, rows * (h + padding) + padding, ncol * (w + padding) + padding), pad_value,
                   dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top:top + h, left:left + w] = x[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def _new_axes(ax: Axes | None, width_px: int, height_px: int, scale: float = 0.025) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    # About 2.5 inches per 100 pixels, capped so a 20x20 grid of digits still fits a page.
    w, h = width_px * scale, height_px * scale
    shrink = min(1.0, 11.0 / w, 11.0 / h)
    fig, ax = _subplots(figsize=(max(w * shrink, 1.0), max(h * shrink, 1.0)))
    return fig, ax


def _show(ax: Axes, grid: np.ndarray, title: str | None) -> None:
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    ax.grid(False)
    if title:
        ax.set_title(title)


def image_grid(images: torch.Tensor | np.ndarray, image_shape: ImageShape, nrow: int = 10,
               title: str | None = None, ax: Axes | None = None, padding: int = 1) -> Figure:
    """Images in [0, 1] tiled `nrow` per row (grey levels or RGB, no rescaling); returns the Figure."""
    grid = make_grid(images, image_shape, nrow, padding)
    fig, ax = _new_axes(ax, grid.shape[1], grid.shape[0])
    _show(ax, grid, title)
    return fig


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def reconstruction_figure(model: torch.nn.Module, x: torch.Tensor, image_shape: ImageShape, n: int = 10,
                          title: str | None = None) -> Figure:
    """Top row: the first `n` inputs x; bottom row: E[x|z] decoded at the posterior mean of q(z|x)."""
    return compare_reconstructions({"reconstruction": model}, x, image_shape, n=n, title=title)


@torch.no_grad()
def compare_reconstructions(models: Mapping[str, torch.nn.Module], x: torch.Tensor, image_shape: ImageShape,
                            n: int = 10, title: str | None = None) -> Figure:
    """One row of `n` originals, then one row per model of E[x|z] at the posterior mean (values in [0, 1])."""
    if not models:
        raise ValueError("models is empty; pass a dict {label: model}")
    x = x[:n]
    rows = [("original", x.detach().float().cpu())]
    for label, model in models.items():
        was_training = model.training
        model.eval()
        rows.append((label, model.reconstruct(x.to(_device(model))).cpu()))
        model.train(was_training)
    return _rows_figure(rows, image_shape, title)


@torch.no_grad()
def samples_figure(model: torch.nn.Module, image_shape: ImageShape, n: int = 100, seed: int = 0,
                   nrow: int | None = None, title: str | None = None, ax: Axes | None = None) -> Figure:
    """`n` images E[x|z] for z ~ N(0, I) drawn with `seed` (decoder means, not draws from p(x|z))."""
    model.eval()
    generator = torch.Generator(device=_device(model)).manual_seed(seed)
    images = model.sample(n, generator=generator)
    return image_grid(images, image_shape, nrow or int(math.ceil(math.sqrt(n))), title=title, ax=ax)


@torch.no_grad()
def decoder_draws_figure(model: torch.nn.Module, image_shape: ImageShape, n: int = 10, seed: int = 0,
                         title: str | None = None) -> Figure:
    """For the same n latent points z ~ N(0, I): top row the mean E[x|z] (what sample figures show), bottom
    row one draw x ~ p(x|z) (what the model actually generates, pixel noise included)."""
    model.eval()
    device = _device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    z = torch.randn(n, model.latent_dim, generator=generator, device=device)
    params = model.decode(z)
    torch.manual_seed(seed)  # the draw's own noise: fixed, so the figure is the same every build
    rows = [("mean E[x|z]", model.likelihood.mean(params).cpu()),
            ("draw x ~ p(x|z)", model.likelihood.sample(params).cpu())]
    return _rows_figure(rows, image_shape, title)


def _rows_figure(rows: list[tuple[str, torch.Tensor]], image_shape: ImageShape, title: str | None) -> Figure:
    """One labelled row of images per (label, images) pair, images side by side."""
    _, h, w = image_shape
    n = max(len(images) for _, images in rows)
    cell = 0.7  # inches per image
    size = (cell * n * w / h + 1.4, cell * len(rows) + 0.3 + 0.3 * bool(title))
    fig, axes = _subplots(len(rows), 1, figsize=size, squeeze=False, gridspec_kw={"hspace": 0.08})
    for ax, (label, images) in zip(axes[:, 0], rows, strict=True):
        _show(ax, make_grid(images, image_shape, nrow=n), None)
        ax.text(-0.01, 0.5, label, transform=ax.transAxes, ha="right", va="center", fontsize="small")
    fig.subplots_adjust(left=1.3 / fig.get_figwidth(), right=0.99, bottom=0.02,
                        top=1.0 - (0.35 if title else 0.05) / fig.get_figheight())
    if title:
        fig.suptitle(title)
    return fig


@torch.no_grad()
def compare_samples(models: Mapping[str, torch.nn.Module], image_shape: ImageShape, n: int = 100,
                    seed: int = 0, nrow: int | None = None, title: str | None = None) -> Figure:
    """One panel of `n` samples (decoder means at z ~ N(0, I), same seed) per model, side by side."""
    if not models:
        raise ValueError("models is empty; pass a dict {label: model}")
    fig, axes = _subplots(1, len(models), figsize=(3.3 * len(models), 3.6), squeeze=False)
    for ax, (label, model) in zip(axes[0], models.items(), strict=True):
        samples_figure(model, image_shape, n=n, seed=seed, nrow=nrow, title=label, ax=ax)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- latent space --------------------------------------------------------------------------------------
def manifold_latents(n: int = 20, latent_dim: int = 2, dims: tuple[int, int] = (0, 1),
                     margin: float | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """The paper's Fig. 4 grid: u on an n x n regular grid in (0, 1)^2, z = Phi^-1(u) on `dims`, 0 elsewhere.

    Returns (u, z): u (n, n, 2) with u[i, j] = (u_x[j], u_y[i]), z (n*n, latent_dim) in row-major order.
    Row 0 is the *top* of the picture, so it holds the largest u_y (z_y grows upwards as on a plot). The grid
    is u_k = margin + k (1 - 2 margin)/(n - 1), default margin 1/(2n): the cell centres of the unit square.
    """
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n={n!r} is not allowed; the manifold needs an integer n >= 2 points per axis")
    if latent_dim < 2 or len(set(dims)) != 2 or not all(0 <= d < latent_dim for d in dims):
        raise ValueError(f"dims={dims} is not allowed for latent_dim={latent_dim}; pick two different "
                         f"dimensions in 0..{latent_dim - 1} (the manifold needs a latent space of >= 2 dims)")
    margin = 0.5 / n if margin is None else margin
    if not 0.0 < margin < 0.5:
        raise ValueError(f"margin={margin} is not allowed; it must lie in (0, 0.5) so that Phi^-1(u) is finite")
    axis = np.linspace(margin, 1.0 - margin, n)
    ux, uy = np.meshgrid(axis, axis[::-1])
    u = np.stack([ux, uy], axis=-1)
    z = torch.zeros(n * n, latent_dim)
    z[:, dims[0]] = torch.from_numpy(norm.ppf(ux).reshape(-1)).float()
    z[:, dims[1]] = torch.from_numpy(norm.ppf(uy).reshape(-1)).float()
    return u, z


@torch.no_grad()
def manifold_figure(model: torch.nn.Module, image_shape: ImageShape, n: int = 20,
                    dims: tuple[int, int] = (0, 1), margin: float | None = None, title: str | None = None,
                    ax: Axes | None = None) -> Figure:
    """The learned data manifold (paper Fig. 4): E[x|z] on a grid z = Phi^-1(u), u regular in (0, 1)^2;
    other latent dimensions held at 0. Left to right z_1 grows, bottom to top z_2 grows."""
    model.eval()
    _, z = manifold_latents(n, model.latent_dim, dims, margin)
    images = model.decode_mean(z.to(_device(model)))
    fig = image_grid(images, image_shape, nrow=n, title=title, ax=ax, padding=0)
    return fig


@torch.no_grad()
def _posterior_means(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    device = _device(model)
    return torch.cat([model.posterior(x[i:i + batch_size].to(device))[0].cpu()
                      for i in range(0, len(x), batch_size)])


def _split_data(dataset, split: str, n: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first `n` examples of `split` (None: all) and their labels; Dataset.split_batches rejects any
    split but "train" and "test" before the first batch."""
    xs = []
    count = 0
    for x in dataset.split_batches(split, 1000):
        xs.append(x)
        count += len(x)
        if n is not None and count >= n:
            break
    x = torch.cat(xs)[:n]
    y = dataset.y_test if split == "test" else dataset.y_train
    labels = None if y is None else y[:len(x)].cpu()
    return x, labels


@torch.no_grad()
def latent_scatter(model: torch.nn.Module, dataset, n: int = 5000, split: str = "test",
                   dims: tuple[int, int] = (0, 1), ax: Axes | None = None, title: str | None = None) -> Figure:
    """Posterior means E_q[z|x] of `n` examples on two latent dimensions, coloured by class label."""
    model.eval()
    x, labels = _split_data(dataset, split, n)
    means = _posterior_means(model, x).numpy()
    if means.shape[1] < 2:
        raise ValueError(f"latent_scatter needs a latent space of >= 2 dimensions; this model has {means.shape[1]}")
    if ax is None:
        fig, ax = _subplots(figsize=(5.5, 5.0))
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


@torch.no_grad()
def kl_per_dimension_values(model: torch.nn.Module, dataset, n: int | None = None,
                            split: str = "test") -> np.ndarray:
    """Mean over examples of KL(q(z_j|x) || N(0, 1)) for each latent dimension j: (Z,) nats, unsorted."""
    model.eval()
    x, _ = _split_data(dataset, split, n)
    device = _device(model)
    total = torch.zeros(model.latent_dim)
    for i in range(0, len(x), 1000):
        loc, log_var = model.posterior(x[i:i + 1000].to(device))
        total += kl_divergence(loc, log_var).sum(0).cpu()
    return (total / len(x)).numpy()


def kl_per_dimension(models: torch.nn.Module | Mapping[str, torch.nn.Module], dataset, n: int | None = 5000,
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
        values = np.sort(kl_per_dimension_values(model, dataset, n, split))[::-1]
        rows += [{"model": label, "rank": j + 1, "kl": v} for j, v in enumerate(values)]
    frame = pd.DataFrame(rows)
    if ax is None:
        fig, ax = _subplots(figsize=(min(10.0, 4.0 + 0.2 * frame["rank"].max()), 3.8))
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


# --- curves and tables ---------------------------------------------------------------------------------
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
    fig, axes = _subplots(1, len(panels), figsize=(5.0 * len(panels), 3.8), squeeze=False)
    colours = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, history) in enumerate(histories.items()):
        colour = colours[i % len(colours)]
        for ax, stem in zip(axes[0], panels, strict=True):
            for split, style in (("train", "-"), ("test", "--")):
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
        fig, ax = _subplots(figsize=(5.5, 3.8))
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


def comparison_table(results: Mapping[str, Mapping], columns: Mapping[str, str] | Sequence[str] | None = None,
                     decimals: int = 2) -> pd.DataFrame:
    """A DataFrame with one row per run ({label: evaluate() dict}) and the chosen columns ({key: header}),
    rounded to `decimals`; keys a run lacks show as NaN, not as zero."""
    if columns is None:
        columns = {"elbo": "test ELBO (nats)", "log_likelihood": "log p(x) (nats)", "bits_per_dim": "bits/dim",
                   "active_units": "active units"}
    if not isinstance(columns, Mapping):
        columns = {c: c for c in columns}
    rows = {label: {header: result.get(key, math.nan) for key, header in columns.items()}
            for label, result in results.items()}
    return pd.DataFrame.from_dict(rows, orient="index").round(decimals)


def loss_constant(likelihood: str, num_dims: int) -> float:
    """Nats to add to a loss-as-log-likelihood to make it a normalized log-density: for "mse", -||x - m||^2 is
    log N(x; m, sigma^2 = 1/2) + (D/2) log(pi), so the constant is -(D/2) log(pi); for "l1", -|x - m|_1 is
    log Laplace(x; m, b = 1) + D log 2. Zero for the proper likelihoods."""
    if likelihood == "mse":
        return -0.5 * num_dims * math.log(math.pi)
    if likelihood == "l1":
        return -num_dims * math.log(2.0)
    return 0.0


_NAT_KINDS = {
    "discretized-logistic": "exact: a mass over the 256 levels",
    "discretized-logistic-mixture": "exact: a mass over the 256 levels",
    "gaussian": "a density on [0,1]^D, read on the 0-255 scale (not a mass)",
    "gaussian-fixed": "a density on [0,1]^D, read on the 0-255 scale (not a mass)",
    "sigma-vae": "a density on [0,1]^D, read on the 0-255 scale (not a mass)",
    "mse": "the squared error read as a Gaussian with sigma^2 = 1/2 (constant added)",
    "l1": "the absolute error read as a Laplace with b = 1 (constant added)",
}


def objective_table(runs: Mapping, results: Mapping[str, Mapping], decimals: int = 2) -> pd.DataFrame:
    """One row per run ({label: Run}, {label: evaluate() dict}): what it was trained with, its test ELBO at
    beta = 1 in nats (for a loss, the ELBO of the density it implies), the two ELBO terms, bits/dim and
    what kind of number that is. beta != 1 and the losses are not ELBOs during training; this evaluates
    every trained model by the same beta = 1 bound afterwards."""
    rows = {}
    for label, run in runs.items():
        result, config = results[label], run.config
        d = math.prod(run.model.image_shape)
        constant = loss_constant(config.likelihood, d)
        elbo = result["elbo"] + constant
        if config.likelihood == "bernoulli":
            kind = ("a mass over binary pixels" if config.dataset == "binarized-mnist" else
                    "expected log-mass of a random binarization of the grey image")
            bpd = _bits_per_dim(elbo, d)
        elif config.likelihood.startswith("discretized"):
            kind, bpd = _NAT_KINDS[config.likelihood], _bits_per_dim(elbo, d)
        else:
            kind, bpd = _NAT_KINDS[config.likelihood], continuous_bits_per_dim(elbo, d)
        trained = config.likelihood if config.beta == 1 else f"{config.likelihood}, beta = {config.beta:g}"
        row = {"trained with": trained, "test ELBO at beta=1 (nats)": elbo,
               "E_q log p(x|z) (nats)": result["log_px_z"] + constant, "KL (nats)": result["kl"],
               "bits/dim (from the ELBO)": bpd, "what the nats are": kind}
        if not math.isnan(result.get("log_likelihood", math.nan)):
            row[f"log p(x), IS k={result['iw_samples']} (nats)"] = result["log_likelihood"] + constant
        rows[label] = row
    return pd.DataFrame.from_dict(rows, orient="index").round(decimals)


def bound_table(results: Mapping, sampled: Mapping | None = None, index_name: str | None = None,
                decimals: int = 2) -> pd.DataFrame:
    """One row per key of `results` ({key: evaluate() dict with iw_samples=0}): test ELBO and its two terms
    (nats per image) and active units; with `sampled` ({key: evaluate() dict with iw_samples=k} on a subset)
    also the ELBO and the importance-sampled log p(x) on that subset, its k and its size."""
    rows = {}
    for key, result in results.items():
        row = {"test ELBO (nats)": result["elbo"], "E_q log p(x|z) (nats)": result["log_px_z"],
               "KL (nats)": result["kl"], "active units": result["active_units"],
               "test images": result["n_examples"]}
        if sampled:
            s = sampled[key]
            row.update({"ELBO on IS images (nats)": s["elbo"], "log p(x) IS (nats)": s["log_likelihood"],
                        "IS k": s["iw_samples"], "IS images": s["n_examples"]})
        rows[key] = row
    table = pd.DataFrame.from_dict(rows, orient="index").round(decimals)
    table.index.name = index_name
    return table


# --- unit activity ---------------------------------------------------------------------------------------
@torch.no_grad()
def unit_activity_values(model: torch.nn.Module, dataset, n: int | None = None, split: str = "test") -> np.ndarray:
    """A_u = Cov_x(E_q[u|x]) for each latent unit u: the variance over the first `n` examples of `split`
    (None: all) of the posterior mean, shape (Z,), unsorted, in squared latent units (Burda et al. 2015)."""
    model.eval()
    x, _ = _split_data(dataset, split, n)
    return _posterior_means(model, x).var(0).numpy()


def unit_activity(models: torch.nn.Module | Mapping[str, torch.nn.Module], dataset, n: int | None = None,
                  split: str = "test", threshold: float = 0.01, ax: Axes | None = None,
                  title: str | None = None) -> Figure:
    """Activity A_u = Cov_x(E_q[u|x]) of every latent unit, sorted from most to least active, on a log axis,
    one line per model, with the active-unit threshold (Burda et al.: 0.01) as a dotted line. The legend
    gives each model's count of active units (A_u > threshold)."""
    if isinstance(models, torch.nn.Module):
        models = {"": models}
    if not models:
        raise ValueError("models is empty; pass a model or a dict {label: model}")
    if ax is None:
        fig = Figure(figsize=(6.5, 3.8))
        ax = fig.subplots()
    else:
        fig = ax.figure
    floor = 1e-6  # an inactive unit's activity is ~1e-8: clip so the log axis still shows it
    for label, model in models.items():
        values = np.sort(unit_activity_values(model, dataset, n, split))[::-1]
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
