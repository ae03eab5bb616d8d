"""The book's live figures (vaelib.figures.live, book/_static/vaelib-live.js).

Without a browser: the exported file, read back by an independent reader here, reproduces torch's E[x|z];
the export refuses decoders the page cannot run; outside a build nothing is written; the build carries the
files into the HTML.

In headless Chromium (marker `browser`, on the built book; `make book PROFILE=quick` builds it): each page
with a live figure decodes the exported reference z's as torch did; a drag across the manifold and a slider
move change the decoded image; without JavaScript and in print the page shows the static fallback; the page
logs no console error and requests nothing outside its origin, from file:// and over HTTP. Screenshots
(before and after a drag, the sliders) and the measured time per decode go to build/screenshots/.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import math
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy.stats import norm

from vaelib.book import BUILD_ROOT, HTML_DIR, BuildError
from vaelib.book.assemble import EXTRA_DIR, MODELS_DIR, assemble_book, read_build_info
from vaelib.book.browser import open_page
from vaelib.book.execute import LIVE_DIR, kernel_environment
from vaelib.book.profiles import Profile
from vaelib.config import RunConfig
from vaelib.data import image_shape
from vaelib.figures import live, make_grid, manifold_latents
from vaelib.models import build_model
from vaelib.runs import Run

HTML_DIR = Path(os.environ.get("VAELIB_BOOK_HTML") or HTML_DIR)
SCREENSHOT_DIR = BUILD_ROOT / "screenshots"
# The chapters that carry a live figure, and which one: a build that shows the chapter must show it.
EXPECTED = {"notebooks/03_mnist": "sliders", "notebooks/05_latent_dimension": "manifold",
            "notebooks/06_freyface": "manifold"}
ISSUE_BOUND = 1e-3  # per pixel, page against torch's float32 E[x|z] (issue 13)


# ------------------------------------------------------------------------------------ the exported file


def read_export(path: Path) -> tuple[dict[str, Any], list[tuple[np.ndarray, np.ndarray, str | None]]]:
    """An independent reader of an exported decoder: (header, [(weight (out, in), bias, activation)])."""
    text = path.read_text()
    match = re.search(r"\)\[(\"[^\"]+\")\] = (\{.*\});\s*$", text, re.S)
    assert match, f"{path} is not `(window.X = ...)[key] = {{...}};`"
    entry = json.loads(match.group(2))
    assert json.loads(match.group(1)) == entry["header"]["key"]
    data = base64.b64decode(entry["data"])
    layers = []
    for spec in entry["header"]["layers"]:
        n_out, n_in = spec["out"], spec["in"]
        codes = np.frombuffer(data, "<i2", n_out * n_in, spec["weight_offset"]).reshape(n_out, n_in)
        scale = np.frombuffer(data, "<f4", n_out, spec["scale_offset"])
        bias = np.frombuffer(data, "<f4", n_out, spec["bias_offset"])
        layers.append((codes * scale[:, None].astype(np.float64), bias.astype(np.float64), spec["activation"]))
    return entry["header"], layers


def floats(text: str, *shape: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), "<f4").reshape(shape)


def torch_forward(layers: list[tuple[np.ndarray, np.ndarray, str | None]], z: np.ndarray) -> np.ndarray:
    act = {"tanh": torch.tanh, "relu": torch.relu, "elu": torch.nn.functional.elu,
           "softplus": torch.nn.functional.softplus}
    h = torch.from_numpy(z).double()
    for weight, bias, activation in layers:
        h = h @ torch.from_numpy(weight).T + torch.from_numpy(bias)
        h = act[activation](h) if activation else h
    return torch.sigmoid(h).numpy()


def tiny_run(tmp_path: Path, **changes: Any) -> Run:
    config = RunConfig(**{"dataset": "binarized-mnist", "latent_dim": 3, "hidden_dim": 16, "seed": 0,
                          "device": "cpu", **changes})
    torch.manual_seed(1)
    model = build_model(config, image_shape(config.dataset))
    with torch.no_grad():  # weights of a trained model's size rather than the initial ones
        for p in model.decoder.parameters():
            p.mul_(4.0)
    return Run(path=tmp_path, config=config, model=model.eval(), history=pd.DataFrame())


@pytest.mark.parametrize("changes", [
    {},
    {"dataset": "freyface", "latent_dim": 2, "activation": "relu"},
    {"dataset": "mnist", "likelihood": "mse", "hidden_layers": 2, "activation": "softplus"},
], ids=["bernoulli", "gaussian-mean", "two-hidden-layers"])
def test_export_reproduces_torch(tmp_path: Path, changes: dict[str, Any]) -> None:
    run = tiny_run(tmp_path, **changes)
    path = live.export_decoder(run, tmp_path / "live", active_dims=[2, 0], kl_nats=[1.5, 0.5])
    header, layers = read_export(path)
    d = math.prod(run.model.image_shape)
    assert path.name == f"{run.config.run_name()}.js"
    assert header["config_hash"] == run.config.hash() and header["image_shape"] == list(run.model.image_shape)
    assert layers[-1][0].shape[0] == d, "only the D mean logits are exported (a Gaussian's log-variance is not)"
    assert header["active_dims"] == [2, 0] and header["kl_nats"] == [1.5, 0.5]
    linear = [m for m in run.model.decoder if isinstance(m, torch.nn.Linear)]
    for (weight, bias, _), module in zip(layers, linear, strict=True):
        exact = module.weight.detach().numpy()[: len(weight)].astype(np.float64)
        half_step = np.abs(exact).max(axis=1, keepdims=True) / 65534
        assert np.all(np.abs(weight - exact) <= half_step * (1 + 1e-5)), "a weight is off by more than half a step"
        np.testing.assert_array_equal(bias, module.bias.detach().numpy()[: len(bias)])
    z = torch.randn(64, run.model.latent_dim, generator=torch.Generator().manual_seed(5))
    expected = run.model.decode_mean(z).numpy()
    assert np.abs(torch_forward(layers, z.numpy()) - expected).max() < ISSUE_BOUND
    ref = header["reference"]
    ref_z, ref_x = floats(ref["z"], ref["count"], run.model.latent_dim), floats(ref["x_mean"], ref["count"], d)
    np.testing.assert_allclose(ref_x, run.model.decode_mean(torch.from_numpy(ref_z.copy())).numpy(), atol=1e-6)


def test_row_quantization_error_is_half_a_step() -> None:
    weight = np.random.default_rng(0).normal(0, 0.3, (40, 300)).astype(np.float32)
    weight[3] = 0.0
    codes, scale = live.quantize_rows(weight)
    step = np.abs(weight).max(axis=1) / 32767
    error = np.abs(codes * scale[:, None].astype(np.float64) - weight).max(axis=1)
    assert np.all(error <= step / 2 * (1 + 1e-5) + 1e-12)
    assert np.all(codes[3] == 0) and np.abs(codes).max() == 32767


def test_export_refuses_what_the_page_cannot_run(tmp_path: Path) -> None:
    conv = tiny_run(tmp_path, dataset="cifar10", latent_dim=4, hidden_dim=4)
    with pytest.raises(ValueError, match="not the sigmoid"):
        live.export_decoder(conv, tmp_path / "live")
    with pytest.raises(ValueError, match="MLP"):
        live.decoder_layers(tiny_run(tmp_path, dataset="mnist", architecture="conv", hidden_dim=4).model)
    with pytest.raises(ValueError, match="2-dimensional"):
        live.manifold(tiny_run(tmp_path), n=5)
    assert not (tmp_path / "live").exists()


def test_outside_a_build_nothing_is_exported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAELIB_LIVE", raising=False)
    monkeypatch.setenv("VAELIB_STATIC", "1")
    result = live.manifold(tiny_run(tmp_path, latent_dim=2), n=4)
    assert not isinstance(result, live.LiveFigure), "outside a build it is the Lab explorer"
    assert not any(tmp_path.rglob("*.js"))


def test_in_a_build_the_output_points_at_the_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = kernel_environment(tmp_path / "runs", tmp_path / "build" / "results")
    assert env["VAELIB_LIVE"] == str(tmp_path / "build" / "live")
    monkeypatch.setenv("VAELIB_LIVE", env["VAELIB_LIVE"])
    run = tiny_run(tmp_path, latent_dim=2)
    figure = live.manifold(run, n=6)
    assert isinstance(figure, live.LiveFigure) and figure.path.parent == tmp_path / "build" / "live"
    html = figure._repr_html_()
    assert f'data-model-file="{run.config.run_name()}.js"' in html and 'data-n="6"' in html
    assert 'class="vaelib-live-app" hidden' in html, "the app stays hidden until the script shows it"


def test_the_book_carries_the_exports(tmp_path: Path) -> None:
    build_dir = tmp_path / "build"
    (build_dir / "notebooks").mkdir(parents=True)
    (build_dir / LIVE_DIR).mkdir()
    (build_dir / LIVE_DIR / "run-a.js").write_text("/* a */")
    (build_dir / LIVE_DIR / ".run-b.js.x.tmp").write_text("half written")
    profile = Profile(name="t", description="", banner="The t banner.", notebooks={}, path=tmp_path / "t.yaml")
    source = assemble_book(profile, [], build_dir)
    models = source / EXTRA_DIR / MODELS_DIR
    assert sorted(p.name for p in models.iterdir()) == ["run-a.js"], "only finished exports are carried"
    assert (models / "run-a.js").stat().st_mode & 0o044 == 0o044, "a web server must be able to read it"
    config = yaml.safe_load((source / "_config.yml").read_text())
    assert config["sphinx"]["config"]["html_extra_path"] == [EXTRA_DIR]
    assert not list((source / "_static").rglob("run-*.js")), "under _static/ every page would load it"


# ------------------------------------------------------------------------------------ in the browser


def _live_pages() -> dict[str, list[str]]:
    """Built pages that hold live figures: {page: [kind, ...]}."""
    try:
        pages = read_build_info(HTML_DIR)["pages"]
    except BuildError:
        return {}
    found = {}
    for name in pages:
        path = HTML_DIR / f"{name}.html"
        kinds = re.findall(r'data-vaelib-live="(\w+)"', path.read_text()) if path.is_file() else []
        if kinds or name in EXPECTED:
            found[name] = kinds
    return found


LIVE_PAGES = _live_pages()
needs_book = pytest.mark.skipif(not LIVE_PAGES, reason=f"no built book with live figures in {HTML_DIR}; "
                                                       "run `make book PROFILE=quick`")


def in_the_browser(test: Any) -> Any:
    """A test of the built book in headless Chromium: marked `browser`, skipped without a built book."""
    return pytest.mark.browser(needs_book(test))
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def http_root() -> Iterator[str]:
    """The built book over HTTP on a local port, for the same checks as from file://."""
    handler = functools.partial(_QuietHandler, directory=str(HTML_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class Watched:
    """A page whose console errors and requests outside its origin are recorded (and refused)."""

    def __init__(self, page: Any, origin: str) -> None:
        self.page, self.errors, self.outside = page, [], []
        page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("requestfailed", lambda req: self.errors.append(f"failed to load {req.url}: {req.failure}"))

        def route(r: Any) -> None:
            url = r.request.url
            if url.startswith(("data:", "blob:", "about:")) or url.startswith(origin):
                r.continue_()
            else:
                self.outside.append(url)
                r.abort()

        page.route("**/*", route)

    def check(self, name: str) -> None:
        assert not self.outside, f"{name}: requests outside the page's origin: {self.outside}"
        assert not self.errors, f"{name}: console errors: {self.errors}"


@contextmanager
def _opened(browser: Any, name: str, base: str | None = None, **context: Any) -> Iterator[tuple[Any, Watched]]:
    """Page `name` of the built book from file:// (or from the server at `base`), its live figures drawn."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, **context)
    try:
        page = ctx.new_page()
        if base is None:
            watched = Watched(page, "file://")
            open_page(page, HTML_DIR / f"{name}.html")
        else:
            watched = Watched(page, base + "/")
            page.goto(f"{base}/{name}.html", wait_until="load")
        if context.get("java_script_enabled", True):
            page.evaluate("async () => await window.vaelibLive.ready")
        yield page, watched
    finally:
        ctx.close()


def _frames(page: Any) -> None:
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def _pixels(locator: Any) -> str:
    return locator.evaluate("c => c.toDataURL()")


def _z_shown(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"-?\d+\.\d+", text.replace("\u2212", "-").replace("\u2007", ""))]


@in_the_browser
@pytest.mark.parametrize("name", sorted(LIVE_PAGES))
@pytest.mark.parametrize("over", ["file", "http"])
def test_page_decoder_reproduces_torch(browser: Any, http_root: str, name: str, over: str) -> None:
    if name in EXPECTED:
        assert EXPECTED[name] in LIVE_PAGES[name], f"{name} lost its live {EXPECTED[name]} figure"
    with _opened(browser, name, http_root if over == "http" else None) as (page, watched):
        states = page.eval_on_selector_all(".vaelib-live", "els => els.map(e => e.dataset.liveState)")
        assert states and all(s == "ready" for s in states), f"{name}: live figures {states}"
        assert page.locator(".vaelib-live-fallback").first.is_hidden(), "the fallback shows beside the live figure"
        for key in page.evaluate("() => Object.keys(vaelibLive.models)"):
            header, layers = read_export(HTML_DIR / "live-models" / f"{key}.js")
            ref, d = header["reference"], math.prod(header["image_shape"])
            z = floats(ref["z"], ref["count"], header["latent_dim"])
            page_x = np.array(page.evaluate("([k, zs]) => zs.map(z => Array.from(vaelibLive.models[k].decode(z)))",
                                            [key, z.tolist()]))
            to_torch = float(np.abs(page_x - floats(ref["x_mean"], ref["count"], d)).max())
            # The page's float32 arithmetic against float64 on the same 16-bit weights, read independently.
            to_weights = float(np.abs(page_x - torch_forward(layers, z.astype(np.float64))).max())
            assert to_torch <= ISSUE_BOUND, f"{key}: the page is {to_torch:.1e} from torch's E[x|z]"
            assert to_weights <= 1e-5, f"{key}: the page is {to_weights:.1e} from its own weights"
            ms = page.evaluate("""k => { const m = vaelibLive.models[k], z = new Float32Array(m.latentDim).fill(0.5);
                for (let i = 0; i < 20; i++) m.decode(z);
                const t = performance.now(); for (let i = 0; i < 200; i++) m.decode(z);
                return (performance.now() - t) / 200; }""", key)
            TIMINGS[f"{key} ({over})"] = ms
            print(f"{key} over {over}: max |page - torch| = {to_torch:.2e}, |page - its weights| = "
                  f"{to_weights:.1e}, {ms:.2f} ms per decode")
        watched.check(name)
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    (SCREENSHOT_DIR / "live_decode_ms.json").write_text(json.dumps(TIMINGS, indent=2) + "\n")


def _pages_with(kind: str) -> list[str]:
    return sorted(n for n, kinds in LIVE_PAGES.items() if kind in kinds)


def _figure(page: Any, kind: str) -> Any:
    """The page's first live figure of `kind`, scrolled into view."""
    figure = page.locator(f'.vaelib-live[data-vaelib-live="{kind}"]').first
    figure.scroll_into_view_if_needed()
    return figure


@in_the_browser
@pytest.mark.parametrize("name", _pages_with("manifold"))
def test_drag_across_the_manifold(browser: Any, name: str) -> None:
    with _opened(browser, name) as (page, watched):
        figure = _figure(page, "manifold")
        marker, decoded = figure.locator(".vaelib-live-marker"), figure.locator(".vaelib-live-decoded")
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        figure.screenshot(path=str(SCREENSHOT_DIR / f"{Path(name).name}_before_drag.png"))
        # The live grid is the static Fig. 4's: z = Phi^-1(u) on the same n x n points, z_2 growing upwards.
        n = int(figure.get_attribute("data-n"))
        header, layers = read_export(HTML_DIR / "live-models" / figure.get_attribute("data-model-file"))
        shape = tuple(header["image_shape"])
        _, grid_z = manifold_latents(n, 2)
        expected = make_grid(torch_forward(layers, grid_z.numpy()), shape, nrow=n, padding=0)
        red = ("c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data"
               ".filter((_, i) => !(i % 4)))")
        drawn = np.array(figure.locator(".vaelib-live-manifold").evaluate(red))  # a grey image: R = G = B
        np.testing.assert_allclose(drawn.reshape(expected.shape) / 255, expected, atol=0.51 / 255)
        before, shown_before = _pixels(decoded), figure.locator(".vaelib-live-z").inner_text()
        assert _z_shown(shown_before) == [0.0, 0.0], "the figure starts at z = 0"
        box = marker.bounding_box()
        x0, y0 = box["x"] + 0.2 * box["width"], box["y"] + 0.8 * box["height"]
        x1, y1 = box["x"] + 0.85 * box["width"], box["y"] + 0.3 * box["height"]
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x1, y1, steps=12)
        page.mouse.up()
        _frames(page)
        figure.screenshot(path=str(SCREENSHOT_DIR / f"{Path(name).name}_after_drag.png"))
        assert _pixels(decoded) != before, "the decoded image did not change with the drag"
        u = [(x1 - box["x"]) / box["width"], 1 - (y1 - box["y"]) / box["height"]]
        np.testing.assert_allclose(_z_shown(figure.locator(".vaelib-live-z").inner_text()), norm.ppf(u), atol=6e-3,
                                   err_msg="the z shown is not Phi^-1(u) of the pointer's place")
        after_drag = _pixels(decoded)
        marker.press("ArrowLeft")
        _frames(page)
        assert _pixels(decoded) != after_drag, "an arrow key did not move z"
        watched.check(name)


@in_the_browser
@pytest.mark.parametrize("name", _pages_with("sliders"))
def test_sliders_and_the_prior(browser: Any, name: str) -> None:
    with _opened(browser, name) as (page, watched):
        figure = _figure(page, "sliders")
        decoded, slider = figure.locator(".vaelib-live-decoded"), figure.locator("input[type=range]").first
        value = figure.locator(".vaelib-live-value").first
        at_zero = _pixels(decoded)
        slider.press("End")  # a range input's End key: its maximum, 3 prior standard deviations
        _frames(page)
        assert _z_shown(value.inner_text()) == [3.0]
        assert _pixels(decoded) != at_zero, "moving a slider did not change the decoded image"
        box = slider.bounding_box()
        page.mouse.click(box["x"] + 0.25 * box["width"], box["y"] + box["height"] / 2)
        _frames(page)
        assert _z_shown(value.inner_text())[0] < 0, "a click on the slider's left half gives a negative z"
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        figure.screenshot(path=str(SCREENSHOT_DIR / f"{Path(name).name}_sliders.png"))
        moved = _pixels(decoded)
        figure.locator("button.vaelib-live-sample").click()
        _frames(page)
        assert _pixels(decoded) != moved, "a draw from the prior did not change the decoded image"
        figure.locator("button.vaelib-live-reset").click()
        _frames(page)
        assert _pixels(decoded) == at_zero, "reset did not bring back the image at z = 0"
        assert all(_z_shown(t) == [0.0] for t in figure.locator(".vaelib-live-value").all_inner_texts())
        watched.check(name)


@in_the_browser
@pytest.mark.parametrize("name", sorted(LIVE_PAGES))
@pytest.mark.parametrize("mode", ["no-javascript", "print"])
def test_static_fallback(browser: Any, name: str, mode: str) -> None:
    """Without JavaScript, or printed (make pdf), no live figure shows; the sliders' traversal does."""
    with _opened(browser, name, java_script_enabled=mode != "no-javascript") as (page, watched):
        if mode == "print":
            page.emulate_media(media="print")
        for figure in page.locator(".vaelib-live").all():
            assert figure.locator(".vaelib-live-app").is_hidden(), f"{mode}: the live figure shows"
            if figure.get_attribute("data-vaelib-live") == "sliders":
                image = figure.locator("img.vaelib-live-static")
                assert image.is_visible() and image.evaluate("i => i.naturalWidth") > 0
            else:  # the chapter's static Fig. 4 stands above; print drops the note about JavaScript
                note = figure.locator(".vaelib-live-noscript")
                assert note.is_visible() == (mode == "no-javascript")
        if mode == "no-javascript":  # the page's own scripts are refused (as "csp"), not lost
            watched.errors = [e for e in watched.errors if not e.endswith(": csp")]
        watched.check(name)
