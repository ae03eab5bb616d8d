"""The book's live figures: a trained decoder exported into the built book, run by the reader's browser.

`manifold(run, n)` (a 2-D model: the paper's Fig. 4 with the point under the pointer decoded live beside it)
and `sliders(run, dataset)` (sliders over the dimensions with the largest KL, and a draw from the prior)
return an HTML output that `book/_static/vaelib-live.js` turns into the live figure. The page needs no
kernel and no network: during a book build (`vaelib.paths.live_dir()`, $VAELIB_LIVE, set by
`vaelib.book.execute`) the decoder's weights are written to `$VAELIB_LIVE/<run name>.js`, a script that
assigns them to a global, because Chromium refuses fetch() of local files and the book must work from
file://. `vaelib.book.assemble` copies these files into the HTML as `live-models/`. Outside a build
there is no page to put them in, and both functions return `explore(...)`, the JupyterLab explorer.

The file (format FORMAT) is one JSON object: `header` and `data`, the base64 of the layers' bytes, little
endian. Each weight matrix (out, in) is stored as int16 with one float32 scale per output row (w = q *
scale, |error| <= scale / 2: at the same size as float16, about ten times closer to the float32 weights,
measured on the MNIST and Frey Face models), followed by its float32 scales and float32 bias. The header
names the layer shapes and offsets, the activation between layers, the output link (the sigmoid of the
first D outputs is E[x|z] for a Bernoulli decoder and the mean of the Frey Face Gaussian), the image
shape, the run's name, config hash and code version, and reference pairs (z, torch's E[x|z]) computed
here from the float32 model, which the browser test compares the page's decoder against.

Without JavaScript, and in print, the page shows the static fallback instead (`vaelib.css`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from .. import evaluate, likelihoods, paths
from ..config import CODE_VERSION
from ..data import Dataset
from ..io import write_text_atomic
from ..runs import Run
from .explorer import explore, traversal_figure

FORMAT = "vaelib-live-decoder/1"
GLOBAL = "VAELIB_LIVE_MODELS"  # the window property the exported scripts fill, keyed by run name
N_REFERENCE = 4  # reference pairs (z, E[x|z]) per export
REFERENCE_SEED = 0
# The likelihoods whose E[x|z] is the sigmoid of the decoder's first D outputs (Gaussian: its mean half).
SIGMOID_MEAN = (likelihoods.Bernoulli, likelihoods.Gaussian, likelihoods.FixedGaussian, likelihoods.SigmaVAE,
                likelihoods.MSELoss)
ACTIVATIONS = {nn.Tanh: "tanh", nn.ReLU: "relu", nn.ELU: "elu", nn.Softplus: "softplus"}  # the page's too
DECODED_SCALE = 10  # the decoded image is shown this many times its size


def decoder_layers(model: nn.Module) -> list[tuple[np.ndarray, np.ndarray, str | None]]:
    """The MLP decoder of `model` as (weight (out, in), bias (out,), activation after the layer or None),
    float32, the last layer cut to the D outputs whose sigmoid is E[x|z] (D = prod(model.image_shape)).

    Raises ValueError, before any export, for a decoder the page cannot run (a conv net, an unknown
    activation, a likelihood whose mean is not a sigmoid of the first D outputs).
    """
    name = type(model.likelihood).__name__
    if not isinstance(model.likelihood, SIGMOID_MEAN):
        allowed = ", ".join(c.__name__ for c in SIGMOID_MEAN)
        raise ValueError(f"a {name} decoder cannot be exported to the page: its E[x|z] is not the sigmoid of "
                         f"its outputs; the page runs the likelihoods {allowed}")
    modules = list(model.decoder) if isinstance(model.decoder, nn.Sequential) else [model.decoder]
    layers: list[tuple[np.ndarray, np.ndarray, str | None]] = []
    for module in modules:
        if isinstance(module, nn.Linear):
            layers.append((module.weight.detach().float().cpu().numpy(),
                           module.bias.detach().float().cpu().numpy(), None))
        elif type(module) in ACTIVATIONS and layers and layers[-1][2] is None and _default_activation(module):
            weight, bias, _ = layers[-1]
            layers[-1] = (weight, bias, ACTIVATIONS[type(module)])
        else:
            raise ValueError(f"the decoder's {type(module).__name__} cannot be exported to the page: it runs an "
                             f"MLP (architecture='mlp') of Linear layers with {sorted(ACTIVATIONS.values())} "
                             "between them")
    if not layers or layers[-1][2] is not None:
        raise ValueError("the decoder must end with a Linear layer (its outputs are the likelihood's parameters)")
    d = math.prod(model.image_shape)
    weight, bias, _ = layers[-1]
    if weight.shape[0] < d:
        raise ValueError(f"the decoder has {weight.shape[0]} outputs, fewer than the {d} pixels of "
                         f"image_shape={tuple(model.image_shape)}")
    layers[-1] = (weight[:d], bias[:d], None)
    return layers


def _default_activation(module: nn.Module) -> bool:
    # The page implements ELU with alpha 1 and softplus with beta 1 (torch's defaults) only.
    return getattr(module, "alpha", 1.0) == 1.0 and getattr(module, "beta", 1.0) == 1.0


def quantize_rows(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int16 codes (out, in) and float32 scales (out,) with weight ~= codes * scales[:, None]; the error of
    each weight is at most scale / 2 = max |row| / 65534."""
    scale = (np.abs(weight).max(axis=1) / 32767.0).astype(np.float32)
    scale[scale == 0] = 1.0  # an all-zero row: any scale codes it exactly
    codes = np.clip(np.rint(weight.astype(np.float64) / scale[:, None]), -32767, 32767).astype("<i2")
    return codes, scale


def _forward(layers: Sequence[tuple[np.ndarray, np.ndarray, str | None]], z: np.ndarray) -> np.ndarray:
    """sigmoid of the decoder's mean logits in float64, the way the page computes them: (N, D) on [0, 1]."""
    h = z.astype(np.float64)
    for weight, bias, activation in layers:
        h = h @ weight.astype(np.float64).T + bias
        h = _ACTIVATE[activation](h) if activation else h
    return 1.0 / (1.0 + np.exp(-h))


_ACTIVATE = {"tanh": np.tanh, "relu": lambda h: np.maximum(h, 0.0), "elu": lambda h: np.where(h > 0, h, np.expm1(h)),
             "softplus": lambda h: np.logaddexp(0.0, h)}


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


@torch.no_grad()
def export_decoder(run: Run, out_dir: str | os.PathLike, *, active_dims: Sequence[int] | None = None,
                   kl_nats: Sequence[float] | None = None) -> Path:
    """Write `run`'s decoder for the page as `out_dir/<run name>.js` (atomically) and return its path.

    active_dims: latent dimensions the page's sliders walk (most informative first), with their mean KL in
    nats, kl_nats (both recorded in the header). The reference pairs are N_REFERENCE draws z ~ N(0, I)
    (seed REFERENCE_SEED) and torch's E[x|z] from the float32 model, (N_REFERENCE, D) on [0, 1].
    """
    model = run.model
    model.eval()
    layers = decoder_layers(model)
    z = torch.randn(N_REFERENCE, model.latent_dim, generator=torch.Generator().manual_seed(REFERENCE_SEED))
    x_mean = model.decode_mean(z.to(next(model.parameters()).device)).float().cpu().numpy()
    mismatch = float(np.abs(_forward(layers, z.numpy()) - x_mean).max())
    if mismatch > 1e-4:  # the layers read above are not what decode_mean runs: exporting them would mislead
        raise ValueError(f"the exported layers of {run.config.run_name()} give E[x|z] {mismatch:.1e} away from "
                         "model.decode_mean; the decoder is not the plain MLP this export assumes")

    blob = io.BytesIO()
    specs, quantized = [], []
    for weight, bias, activation in layers:
        codes, scale = quantize_rows(weight)
        quantized.append((codes.astype(np.float32) * scale[:, None], bias, activation))
        spec: dict[str, Any] = {"in": int(weight.shape[1]), "out": int(weight.shape[0]), "activation": activation}
        spec["weight_offset"] = blob.tell()
        blob.write(codes.tobytes())
        blob.write(b"\0" * (-blob.tell() % 4))  # keep the float32 arrays 4-byte aligned
        spec["scale_offset"] = blob.tell()
        blob.write(scale.astype("<f4").tobytes())
        spec["bias_offset"] = blob.tell()
        blob.write(bias.astype("<f4").tobytes())
        specs.append(spec)
    config = run.config
    header = {
        "format": FORMAT,
        "key": config.run_name(),
        "run_name": config.run_name(),
        "config_hash": config.hash(),
        "code_version": CODE_VERSION,
        "dataset": config.dataset,
        "likelihood": config.likelihood,
        "latent_dim": int(model.latent_dim),
        "image_shape": [int(s) for s in model.image_shape],
        "output_link": "sigmoid",
        "output": "E[x|z]: the sigmoid of the decoder's first D outputs (the Bernoulli mean; for a Gaussian "
                  "decoder its mean, the log-variance half is not exported)",
        "weights": "int16 per output row with a float32 scale (w = q * scale), then float32 scales and bias, "
                   "little endian, offsets in bytes into data",
        "layers": specs,
        # What the int16 weights alone cost, in torch's arithmetic (float64) on the reference z's.
        "quantization_max_abs_error": float(np.abs(_forward(quantized, z.numpy()) - x_mean).max()),
        "reference": {"count": N_REFERENCE, "seed": REFERENCE_SEED, "z": _b64(z.numpy()), "x_mean": _b64(x_mean)},
    }
    if active_dims is not None:
        header["active_dims"] = [int(d) for d in active_dims]
        header["kl_nats"] = [float(k) for k in kl_nats] if kl_nats is not None else None
    data = base64.b64encode(blob.getvalue()).decode("ascii")
    path = Path(out_dir) / f"{header['key']}.js"
    write_text_atomic(path, (
        f"/* The decoder of vaelib run {header['key']} for the book's live figures; written by "
        "vaelib.figures.live at build time. */\n"
        f"(window.{GLOBAL} = window.{GLOBAL} || {{}})[{json.dumps(header['key'])}] = "
        + json.dumps({"header": header, "data": data}, separators=(",", ":")) + ";\n"))
    return path


class LiveFigure:
    """An HTML output (text/html) for the book: the live figure's placeholder and its static fallback."""

    def __init__(self, html_text: str, path: Path) -> None:
        self.html = html_text
        self.path = path  # the exported decoder

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"LiveFigure({self.path.name})"


def _png_data_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _live_html(kind: str, path: Path, attributes: dict[str, Any], legend: str, fallback: str) -> str:
    data = {"vaelib-live": kind, "model-file": path.name, "model-key": path.stem,
            **{k: str(v) for k, v in attributes.items()}}
    attrs = " ".join(f'data-{k}="{html.escape(v, quote=True)}"' for k, v in data.items())
    return (f'<div class="vaelib-live" {attrs}>\n'
            f'<div class="vaelib-live-fallback">{fallback}</div>\n'
            f'<div class="vaelib-live-app" hidden><p class="vaelib-live-legend">{legend}</p></div>\n</div>')


def manifold(run: Run, n: int = 20, *, scale: int = DECODED_SCALE) -> LiveFigure | Any:
    """The live Fig. 4 of a 2-D model: the learned manifold E[x|z] on the n x n grid z = Phi^-1(u) (as
    `manifold_figure`), drawn by the page, and E[x|z] at the point under the pointer beside it, `scale` times
    enlarged, with z shown; dragging moves through the latent space.

    In a book build it exports the decoder and returns the HTML; without JavaScript and in print the page
    shows nothing in its place (the chapter's static Fig. 4 stands above it). Outside a build it returns
    `explore(run.model, ...)`, the JupyterLab explorer.
    """
    model = run.model
    if model.latent_dim != 2:
        raise ValueError(f"manifold needs a 2-dimensional latent space; {run.config.run_name()} has "
                         f"latent_dim={model.latent_dim} (use sliders(run, dataset) instead)")
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n={n!r} is not allowed; the manifold needs an integer n >= 2 points per axis")
    out = paths.live_dir()
    if out is None:
        return explore(model, model.image_shape)
    path = export_decoder(run, out)
    legend = ("<strong>Live.</strong> Left: the manifold, decoded by this page from the model's weights. Point "
              "at it or drag across it: on the right is E[<b>x</b>|<b>z</b>] at the point under the pointer, "
              "<b>z</b> = &Phi;<sup>-1</sup>(<b>u</b>); the arrow keys move it too.")
    fallback = ('<p class="vaelib-live-noscript">With JavaScript, this page decodes the point under the pointer '
                "on the manifold live, in the browser; the static figure above shows the same manifold.</p>")
    return LiveFigure(_live_html("manifold", path, {"n": n, "scale": scale}, legend, fallback), path)


def sliders(run: Run, dataset: Dataset, max_sliders: int = 10, *, scale: int = DECODED_SCALE) -> LiveFigure | Any:
    """Sliders over the `max_sliders` latent dimensions with the largest mean KL on `dataset`'s test split
    (`vaelib.evaluate.kl_per_dimension`, as the Lab explorer picks them; the others at 0), E[x|z] decoded
    live by the page, and a button that draws z ~ N(0, I).

    In a book build it exports the decoder and returns the HTML, whose static fallback (no JavaScript,
    print) is the explorer's latent traversal along the same dimensions. Outside a build it returns
    `explore(run.model, ..., dims)`, the JupyterLab explorer.
    """
    if not isinstance(max_sliders, int) or max_sliders < 1:
        raise ValueError(f"max_sliders={max_sliders!r} is not allowed; give an integer >= 1")
    model = run.model
    kl = evaluate.kl_per_dimension(model, dataset)
    dims = [int(d) for d in np.argsort(kl)[::-1][:max_sliders]]
    out = paths.live_dir()
    if out is None:
        return explore(model, model.image_shape, dims=dims)
    path = export_decoder(run, out, active_dims=dims, kl_nats=[float(kl[d]) for d in dims])
    figure = traversal_figure(model, model.image_shape, dims)
    fallback = (f'<img class="vaelib-live-static" alt="latent traversal" src="{_png_data_uri(figure)}">'
                f'<p class="vaelib-live-legend">Latent traversal of the N<sub>z</sub> = {model.latent_dim} model '
                f"along its {len(dims)} dimensions of largest KL (largest first): row j walks z<sub>j</sub> from "
                "-2.5 to 2.5, the others at 0. With JavaScript, the page has sliders here instead.</p>")
    legend = (f"<strong>Live.</strong> The N<sub>z</sub> = {model.latent_dim} model's decoder, run by this page: "
              f"one slider for each of its {len(dims)} dimensions of largest mean KL (in nats, on the test "
              "images), the others at 0 until a draw from the prior sets them all.")
    return LiveFigure(_live_html("sliders", path, {"scale": scale}, legend, fallback), path)
