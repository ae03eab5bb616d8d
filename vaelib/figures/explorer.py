"""An interactive latent-space explorer for JupyterLab, and its static stand-in for the rendered book.

`explore(model, image_shape)` shows one slider per latent dimension (up to `max_sliders`; the others stay
at 0) and the image E[x|z] decoded live as they move. For a 2-D model it adds the learned manifold (the
paper's Fig. 4 grid, z = Phi^-1(u)) with a marker at the current z, and a click on that manifold jumps
there when `ipyevents` is installed (otherwise the two sliders move the marker). Only ipywidgets is
required; it is the JupyterLab counterpart of the student project's Streamlit app.

A notebook run by papermill cannot show live widgets (the book would print their text repr), so
`explore(..., interactive=False)` -- or auto-detection, see `is_interactive` -- returns a static Figure
instead: one row of decoded images per latent dimension, walking that dimension from -2.5 to 2.5 with
the others at 0 (a latent traversal). The static path imports neither IPython nor ipywidgets.
"""

from __future__ import annotations

import io
import math
import numbers
import os
import sys
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from .images import make_grid, manifold_latents
from .style import ImageShape, subplots

TRAVERSAL_RANGE = 2.5  # +-2.5 prior standard deviations: 99% of p(z_j) lies inside


def is_interactive() -> bool:
    """True in a live Jupyter kernel with ipywidgets installed, outside papermill and the book build.

    Papermill runs a real Jupyter kernel, so the kernel alone does not tell; the book build marks itself
    with $VAELIB_RESULTS, and `VAELIB_STATIC=1` forces static figures anywhere.
    """
    if os.environ.get("VAELIB_STATIC", "").lower() in ("1", "true", "yes"):
        return False
    if os.environ.get("VAELIB_RESULTS") or _under_papermill():
        return False
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None else None
    if ip is None or type(ip).__name__ != "ZMQInteractiveShell":
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def _under_papermill() -> bool:
    """Whether an ancestor process (up to 5 levels) is papermill; Linux /proc only, else False."""
    pid = os.getppid()
    for _ in range(5):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ")
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if b"papermill" in cmdline:
            return True
        if parent <= 1:
            return False
        pid = parent
    return False


def _check_dims(latent_dim: int, dims: Sequence[int] | None, max_sliders: int) -> list[int]:
    if dims is None:
        return list(range(min(latent_dim, max_sliders)))
    dims = list(dims)
    bad = [d for d in dims if not isinstance(d, numbers.Integral) or not 0 <= d < latent_dim]
    dims = [int(d) for d in dims]
    if bad or len(set(dims)) != len(dims) or not dims:
        raise ValueError(f"dims={dims} is not allowed; give distinct latent dimensions in 0..{latent_dim - 1}")
    return dims


def traversal_latents(latent_dim: int, dims: Sequence[int], steps: int = 9,
                      limit: float = TRAVERSAL_RANGE) -> torch.Tensor:
    """Latent points of a traversal: for each dim in `dims`, `steps` values from -limit to limit on that dim
    and 0 on all others. Shape (len(dims) * steps, latent_dim), dimension-major."""
    values = torch.linspace(-limit, limit, steps)
    z = torch.zeros(len(dims), steps, latent_dim)
    for row, d in enumerate(dims):
        z[row, :, d] = values
    return z.reshape(-1, latent_dim)


@torch.no_grad()
def _decode(model: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    return model.decode_mean(z.to(device)).cpu()


@torch.no_grad()
def traversal_figure(model: torch.nn.Module, image_shape: ImageShape, dims: Sequence[int] | None = None,
                     steps: int = 9, limit: float = TRAVERSAL_RANGE, max_dims: int = 10) -> Figure:
    """Static explorer: row j shows E[x|z] with z_j from -limit to +limit (prior std units), others at 0."""
    model.eval()
    dims = _check_dims(model.latent_dim, dims, max_dims)
    images = _decode(model, traversal_latents(model.latent_dim, dims, steps, limit))
    grid = make_grid(images, image_shape, nrow=steps, padding=1)
    c, h, w = image_shape
    fig, ax = subplots(figsize=(0.55 * steps * w / h + 0.9, 0.55 * len(dims) + 0.6))
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([(w + 1) * i + 1 + w / 2 for i in range(steps)],
                  labels=[f"{v:.1f}" for v in np.linspace(-limit, limit, steps)], fontsize="small")
    ax.set_yticks([(h + 1) * i + 1 + h / 2 for i in range(len(dims))],
                  labels=[f"$z_{{{d + 1}}}$" for d in dims])
    ax.tick_params(length=0)
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlabel("value of the walked dimension (others at 0)")
    fig.tight_layout()
    return fig


def _png(image: np.ndarray, scale: int) -> bytes:
    """A [0, 1] image (H, W) or (H, W, C) as PNG bytes, enlarged `scale` times without smoothing."""
    from PIL import Image  # Pillow comes with matplotlib

    array = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
    array = np.repeat(np.repeat(array, scale, axis=0), scale, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="png")
    return buffer.getvalue()


def _single(image: torch.Tensor, image_shape: ImageShape) -> np.ndarray:
    return make_grid(image[None], image_shape, nrow=1, padding=0)


def _marker(image: np.ndarray, row: float, col: float) -> np.ndarray:
    """A copy of `image` with a red cross at (row, col) in pixels."""
    rgb = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image.copy()
    r, c = int(round(row)), int(round(col))
    height, width = rgb.shape[:2]
    for dr in range(-6, 7):
        if 0 <= r + dr < height and 0 <= c < width:
            rgb[r + dr, max(c - 1, 0):c + 2] = (1.0, 0.1, 0.1)
    for dc in range(-6, 7):
        if 0 <= c + dc < width and 0 <= r < height:
            rgb[max(r - 1, 0):r + 2, c + dc] = (1.0, 0.1, 0.1)
    return rgb


def explorer_widget(model: torch.nn.Module, image_shape: ImageShape, dims: Sequence[int] | None = None,
                    max_sliders: int = 10, scale: int = 8, manifold_n: int = 15):
    """The live explorer as an ipywidgets box: sliders over z (prior std units), the decoded E[x|z], and for
    a 2-D model the manifold with a marker. Returns the box; `box.sliders` and `box.image` for scripting."""
    import ipywidgets as widgets

    model.eval()
    z_dim = model.latent_dim
    dims = _check_dims(z_dim, dims, max_sliders)
    sliders = [widgets.FloatSlider(value=0.0, min=-3.0, max=3.0, step=0.05, description=f"z{d + 1}",
                                   continuous_update=True, readout_format=".2f") for d in dims]
    image = widgets.Image(format="png")
    children: list = []
    manifold_widget = None
    manifold_pixels = None
    if z_dim == 2:
        _, grid_z = manifold_latents(manifold_n, 2)
        manifold_pixels = make_grid(_decode(model, grid_z), image_shape, nrow=manifold_n, padding=0)
        manifold_widget = widgets.Image(format="png")

    def update(_change=None) -> None:
        z = torch.zeros(1, z_dim)
        for d, slider in zip(dims, sliders, strict=True):
            z[0, d] = slider.value
        image.value = _png(_single(_decode(model, z)[0], image_shape), scale)
        if manifold_widget is not None:
            # Manifold pixels are in u = Phi(z) space, with u_2 growing upwards.
            u = 0.5 * (1.0 + torch.erf(z[0] / math.sqrt(2.0))).numpy()
            n, (_, h, w) = manifold_n, image_shape
            margin = 0.5 / n
            col = (u[0] - margin) / (1 - 2 * margin) * (n - 1) * w + w / 2
            row = (1.0 - (u[1] - margin) / (1 - 2 * margin)) * (n - 1) * h + h / 2
            manifold_widget.value = _png(_marker(manifold_pixels, row, col), 2)

    for slider in sliders:
        slider.observe(update, names="value")
    update()
    controls = widgets.VBox(sliders)
    children = [controls, image]
    if manifold_widget is not None:
        children.append(manifold_widget)
        _attach_click(manifold_widget, sliders, manifold_n, image_shape)
    box = widgets.HBox(children)
    box.sliders, box.image, box.manifold = sliders, image, manifold_widget
    return box


def _attach_click(target, sliders, n: int, image_shape: ImageShape) -> None:
    """Click-to-decode on the manifold image when `ipyevents` is installed; a silent no-op otherwise."""
    try:
        from ipyevents import Event
    except ImportError:
        return
    from scipy.stats import norm

    _, h, w = image_shape
    margin = 0.5 / n

    def on_click(event: dict) -> None:
        x, y = event["relativeX"] / 2, event["relativeY"] / 2  # the manifold is shown at scale 2
        ux = margin + (x - w / 2) / ((n - 1) * w) * (1 - 2 * margin)
        uy = margin + (1.0 - (y - h / 2) / ((n - 1) * h)) * (1 - 2 * margin)
        for slider, u in zip(sliders, (ux, uy), strict=True):
            slider.value = float(np.clip(norm.ppf(np.clip(u, 1e-3, 1 - 1e-3)), slider.min, slider.max))

    Event(source=target, watched_events=["click"]).on_dom_event(on_click)


def explore(model: torch.nn.Module, image_shape: ImageShape, dims: Sequence[int] | None = None,
            interactive: bool | None = None, max_sliders: int = 10, steps: int = 9):
    """Explore the latent space of a trained VAE: live widgets in JupyterLab, a static Figure elsewhere.

    interactive: True forces the widgets, False the static traversal figure (what the book shows), None
    decides with `is_interactive()`. Sliders and traversals are in units of the prior's standard deviation.
    Returns the ipywidgets box or the matplotlib Figure; as a cell's last expression either one displays.
    """
    if image_shape is None or len(image_shape) != 3:
        raise ValueError(f"image_shape={image_shape!r} is not allowed; pass (C, H, W), e.g. dataset.image_shape")
    if interactive is None:
        interactive = is_interactive()
    if not interactive:
        return traversal_figure(model, image_shape, dims, steps=steps, max_dims=max_sliders)
    return explorer_widget(model, image_shape, dims, max_sliders)
