"""Shared fixtures: a tiny committed MNIST file and a tiny training configuration.

`tests/fixtures/mnist.npz` holds the first 1,000 training and 500 test images of MNIST in the Keras layout
(uint8), so the data, training and CLI tests run offline in seconds without the full data set.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from vaelib.config import RunConfig

torch.set_num_threads(2)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """A data directory holding only the tiny `mnist.npz` (1,000 train / 500 test images)."""
    assert (FIXTURES / "mnist.npz").exists(), "tests/fixtures/mnist.npz is missing from the checkout"
    return FIXTURES


@pytest.fixture
def tiny_config() -> RunConfig:
    """A binarized-MNIST run small enough to train a few epochs in about a second on 2 CPU cores."""
    return RunConfig(dataset="binarized-mnist", latent_dim=5, hidden_dim=64, epochs=3, batch_size=50,
                     optimizer="adam", lr=3e-3, train_size=500, test_size=200, seed=0, device="cpu")


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny tensors: one thread is fastest, and much faster on a busy machine. Restored after,
    so other test modules keep their setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for the `browser` tests (the system's, through Playwright), or a skip without one."""
    from vaelib.book.browser import find_chromium, open_browser

    if find_chromium() is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with open_browser() as b:
        yield b
