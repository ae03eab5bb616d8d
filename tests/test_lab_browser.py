"""Chapter 5 in JupyterLab, as a person uses it: `jupyter lab` from this environment on the checkout, the
chapter opened in headless Chromium, Run > Run All Cells, then the live explorer: a latent slider dragged
changes the decoded image, and (with ipyevents) a click on the 2-D manifold moves the sliders.

The notebook is chapter 5 with the quick profile's parameters (papermill --prepare-only, in build/lab/),
so every run it asks for is one the quick build trained: the test is skipped until that build has run
(CI runs `make test`, whose `book` tests execute it, before its browser step), and it fails if the kernel
trains anything. The kernel imports this checkout's vaelib and uses the run cache the build used.
Screenshots go to build/screenshots/.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vaelib import paths
from vaelib.book import BUILD_ROOT, NOTEBOOKS_DIR
from vaelib.book.browser import find_chromium, open_browser
from vaelib.book.profiles import load_profile
from vaelib.book.statistics import run_log_path
from vaelib.train import RUN_LOG_ENV

pytestmark = pytest.mark.browser

STEM = "05_latent_dimension"
LAB_DIR = BUILD_ROOT / "lab"
SCREENSHOTS = BUILD_ROOT / "screenshots"
ROOT = NOTEBOOKS_DIR.parent


def _quick_runs() -> list[str]:
    """The runs the quick build's chapter 5 loaded or trained, if all are still in the run cache."""
    log = run_log_path(BUILD_ROOT / "quick", STEM)
    if not log.is_file():
        return []
    names = [json.loads(line)["run"] for line in log.read_text().splitlines() if line.strip()]
    cached = all((paths.runs_dir() / name / "checkpoint.pt").is_file() for name in names)
    return names if cached else []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if find_chromium() is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not _quick_runs():
        pytest.skip(f"the quick build's runs of {STEM} are not in {paths.runs_dir()}; run the quick build first "
                    f"(make book PROFILE=quick, or pytest -m book)")
    import papermill

    # The chapter with the quick profile's parameters injected, as `papermill --prepare-only` writes it.
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    notebook = LAB_DIR / f"{STEM}.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS_DIR / f"{STEM}.ipynb"), str(notebook),
                               parameters=load_profile("quick").parameters(STEM), prepare_only=True,
                               progress_bar=False)
    state = tmp_path_factory.mktemp("lab")
    run_log = state / "runs.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("VAELIB_RESULTS", "VAELIB_STATIC")}
    env.update({
        # The kernel inherits the server's environment: this checkout's vaelib, the build's cache and data.
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "VAELIB_RUNS": str(paths.runs_dir()), "VAELIB_DATA": str(paths.data_dir()), RUN_LOG_ENV: str(run_log),
        # Nothing of the user's JupyterLab state (settings, workspaces, running kernels) comes in or out.
        "JUPYTER_RUNTIME_DIR": str(state / "runtime"), "JUPYTER_CONFIG_DIR": str(state / "config"),
    })
    # JupyterLab would ask whether to fetch Jupyter's news: no.
    news = state / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false"}))
    port = _free_port()
    # No token on a local port, no news, update checks or extension manager (nothing goes to the network);
    # --allow-root: CI machines run as root.
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
               "--IdentityProvider.token=", "--ServerApp.password=", "--allow-root", f"--ServerApp.root_dir={LAB_DIR}",
               f"--LabApp.user_settings_dir={state / 'settings'}", f"--LabApp.workspaces_dir={state / 'workspaces'}",
               "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--LabApp.extension_manager=readonly"]
    server_log = open(state / "server.log", "wb")
    server = subprocess.Popen(command, cwd=LAB_DIR, env=env, stdout=server_log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=5).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("jupyter lab did not start:\n"
                                         + (state / "server.log").read_text(errors="replace")[-3000:]) from None
                time.sleep(0.5)
        with open_browser() as browser:
            yield {"url": url, "browser": browser, "run_log": run_log, "runtime": state / "runtime",
                   "notebook": notebook}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        server_log.close()
        notebook.unlink(missing_ok=True)


PROMPTS_JS = """() => Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt'))
    .map(p => p.textContent.trim())"""


def _shot(target: Any, name: str) -> None:
    """A screenshot of a page or of one element, kept as a build artefact."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target.screenshot(path=str(SCREENSHOTS / name))


def _value(readout: Any) -> float:
    """A slider's readout as a number (ipywidgets writes negatives with U+2212, the minus sign)."""
    return float(readout.inner_text().replace("\u2212", "-"))


def _kernel_reports(lab: dict[str, Any], code: str) -> str:
    """What `code` prints in the notebook's own kernel (reached through its connection file)."""
    from jupyter_client import BlockingKernelClient

    (connection,) = sorted(Path(lab["runtime"]).glob("kernel-*.json"))
    client = BlockingKernelClient(connection_file=str(connection))
    client.load_connection_file()
    client.start_channels()
    try:
        printed: list[str] = []
        client.execute_interactive(code, timeout=60, output_hook=lambda msg: printed.append(
            msg["content"].get("text", "")) if msg["msg_type"] == "stream" else None)
        return "".join(printed)
    finally:
        client.stop_channels()


def test_the_latent_explorer_runs_live_in_jupyterlab(lab: dict[str, Any]) -> None:
    # A desktop's window: narrower, the explorer's sliders are squeezed to nothing beside its two images.
    page = lab["browser"].new_page(viewport={"width": 1920, "height": 1080})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{lab['url']}/lab/tree/{STEM}.ipynb", wait_until="load", timeout=120_000)
        page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell", timeout=120_000)
        # The kernel has started when the status bar says so ("Python 3 (ipykernel) | Idle"); before that,
        # Run All Cells runs nothing.
        page.wait_for_function("() => document.body.innerText.includes('| Idle')", timeout=120_000)
        page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        page.locator(".lm-Menu-item:visible", has_text="Run All Cells").first.click()
        deadline = time.monotonic() + float(os.environ.get("VAELIB_LAB_TIMEOUT", 600))
        while True:
            prompts = page.evaluate(PROMPTS_JS)
            if prompts and all(p not in ("[ ]:", "[*]:", "") for p in prompts):
                break
            if time.monotonic() > deadline:
                _shot(page, "lab_05_failed.png")
                raise AssertionError(f"the cells did not all run (see {SCREENSHOTS}/lab_05_failed.png): {prompts}")
            time.sleep(1)
        errors_shown = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                                    has_text="Error").all_inner_texts()
        assert not errors_shown, f"cells failed: {errors_shown}"
        assert not errors, f"JupyterLab raised in the page: {errors}"

        where = _kernel_reports(lab, "import os, vaelib; print(vaelib.__file__); print(os.environ['VAELIB_RUNS'])")
        module, runs_dir = where.split()
        assert Path(module).resolve().is_relative_to(ROOT), f"the kernel imported another vaelib: {module}"
        assert Path(runs_dir) == paths.runs_dir()
        used = [json.loads(line) for line in lab["run_log"].read_text().splitlines()]
        assert used and all(u["status"] == "loaded" for u in used), f"the kernel trained: {used}"

        # The explorer of the 2-D model: sliders z1, z2, the decoded image, the manifold.
        box = page.locator(".widget-hbox", has=page.locator(".widget-image")).filter(
            has=page.locator(".widget-slider")).first
        box.scroll_into_view_if_needed()
        images = box.locator("img.widget-image")
        assert images.count() == 2, "no live explorer with its decoded image and the manifold"
        decoded, manifold = images.nth(0), images.nth(1)
        readouts = box.locator(".widget-readout")
        _shot(box, "lab_05_explorer.png")
        before, src = decoded.screenshot(), decoded.get_attribute("src")

        handle = box.locator(".noUi-handle").first
        handle.scroll_into_view_if_needed()
        hx = handle.bounding_box()
        page.mouse.move(hx["x"] + hx["width"] / 2, hx["y"] + hx["height"] / 2)
        page.mouse.down()
        page.mouse.move(hx["x"] + hx["width"] / 2 + 30, hx["y"] + hx["height"] / 2, steps=6)
        page.mouse.up()
        page.wait_for_function("([img, src]) => img.getAttribute('src') !== src", arg=[decoded.element_handle(), src],
                               timeout=30_000)
        page.wait_for_timeout(500)
        z1 = _value(readouts.nth(0))
        assert z1 > 0.2, f"the slider did not move (z1 reads {z1})"
        assert decoded.screenshot() != before, "the decoded image did not change"
        _shot(box, "lab_05_after_slider.png")

        if importlib.util.find_spec("ipyevents") is None:
            pytest.skip("ipyevents is not installed: a click on the manifold does nothing")
        mx = manifold.bounding_box()
        manifold.click(position={"x": mx["width"] * 0.2, "y": mx["height"] * 0.2})  # top left: z1 < 0 < z2
        # The kernel sets z1, then z2: wait for both.
        page.wait_for_function("([a, b]) => { const v = r => parseFloat(r.textContent.replace('\u2212', '-'));"
                               " return v(a) < 0 && v(b) > 0; }",
                               arg=[readouts.nth(0).element_handle(), readouts.nth(1).element_handle()],
                               timeout=30_000)
        z1, z2 = _value(readouts.nth(0)), _value(readouts.nth(1))
        assert z1 < 0 < z2, f"a click at the manifold's top left set z = ({z1}, {z2})"
        _shot(box, "lab_05_after_click.png")
    finally:
        page.close()

