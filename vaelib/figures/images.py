"""Images: grids, reconstructions, samples, decoder draws and the learned manifold (the paper's Fig. 4).

Images are (N, D) flat or (N, C, H, W) tensors/arrays with values in [0, 1]; every function returns a
matplotlib Figure and trains nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy.stats import norm

from .style import ImageShape, subplots


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
    fig, ax = subplots(figsize=(max(w * shrink, 1.0), max(h * shrink, 1.0)))
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
    fig, axes = subplots(len(rows), 1, figsize=size, squeeze=False, gridspec_kw={"hspace": 0.08})
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
    fig, axes = subplots(1, len(models), figsize=(3.3 * len(models), 3.6), squeeze=False)
    for ax, (label, model) in zip(axes[0], models.items(), strict=True):
        samples_figure(model, image_shape, n=n, seed=seed, nrow=nrow, title=label, ax=ax)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig

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
