"""The speed benchmark (bench/): its FLOP formula, its offline torchvision MNIST files, and one tiny end-to-end
run. No timing is asserted: the numbers depend on the machine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import bench_epoch  # noqa: E402
from bench_epoch import SPECS, ExamplesVAE, examples_loss, vaelib_config, write_mnist_idx  # noqa: E402

from vaelib.models import build_model  # noqa: E402
from vaelib.objectives import elbo  # noqa: E402


@pytest.mark.parametrize("name", sorted(SPECS))
def test_flop_formula_matches_what_pytorch_counts_for_both_loops(name: str) -> None:
    spec = SPECS[name]
    x = torch.rand(spec.batch_size, 784)
    conventional = ExamplesVAE(spec.hidden, spec.latent, spec.activation)
    with FlopCounterMode(display=False) as counted_conventional:
        recon, mu, logvar = conventional(x)
        examples_loss(recon, x, mu, logvar).backward()
    model = build_model(vaelib_config(spec, 1, None), (1, 28, 28))
    with FlopCounterMode(display=False) as counted_vaelib:
        (-elbo(model, x).objective.mean()).backward()
    expected = spec.batch_size * spec.train_flop_per_example()
    assert counted_conventional.get_total_flops() == expected
    assert counted_vaelib.get_total_flops() == expected


def test_idx_files_read_back_through_torchvision_unchanged(tmp_path: Path) -> None:
    from torchvision.datasets import MNIST

    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, 30).astype(np.uint8),
              "x_test": rng.integers(0, 256, (7, 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, 7).astype(np.uint8)}
    np.savez(tmp_path / "mnist.npz", **arrays)
    root = write_mnist_idx(tmp_path / "mnist.npz", tmp_path / "tv")
    for train, split in ((True, "train"), (False, "test")):
        data = MNIST(str(root), train=train, download=False)
        assert np.array_equal(data.data.numpy(), arrays[f"x_{split}"])
        assert np.array_equal(data.targets.numpy(), arrays[f"y_{split}"])


def test_tiny_end_to_end_run_writes_a_complete_result(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    results = bench_epoch.main(["--models", "paper", "--train-size", "200", "--peak-size", "128",
                                "--data-dir", str(data_dir), "--json", str(out)])
    saved = json.loads(out.read_text())
    row = saved["models"]["paper"]
    assert row["examples_per_epoch"] == 200
    assert row["flop_per_epoch"] == 200 * SPECS["paper"].train_flop_per_example()
    for key in ("conventional_median", "vaelib_median", "ratio", "vaelib_gflops", "fraction_of_peak"):
        assert np.isfinite(row[key]) and row[key] > 0
    assert np.isfinite(row["vaelib_train_elbo"]) and row["vaelib_train_elbo"] < 0  # nats: log-probabilities
    assert results["matmul_peak_gflops"] > 0
