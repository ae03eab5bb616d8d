"""The command line (`python -m vaelib`): bad values exit with status 2 and one line on stderr naming the
value; train -> evaluate -> sample works end to end on the tiny MNIST fixture; --resume continues a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from vaelib.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "binarized-mnist", "--latent-dim", "5", "--hidden-dim", "64", "--batch-size", "50",
        "--optimizer", "adam", "--lr", "0.003", "--train-size", "500", "--test-size", "200", "--device", "cpu",
        "--no-progress"]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("args, value", [
    (["train", "--dataset", "svhn"], "'svhn'"),
    (["train", "--optimizer", "sgd"], "'sgd'"),
    (["train", "--estimator", "C"], "'C'"),
    (["train", "--likelihood", "poisson"], "'poisson'"),
    (["train", "--latent-dim", "0"], "latent_dim=0"),
    (["train", "--lr", "-1"], "lr=-1"),
    (["train", "--epochs", "-1"], "epochs=-1"),
    (["train", "--batch-size", "0"], "batch_size=0"),
    (["train", "--dataset", "cifar10", "--likelihood", "bernoulli"], "'bernoulli'"),
    (["evaluate", "no/such/run"], "no/such/run"),
    (["sample", "no/such/run"], "no/such/run"),
])
def test_bad_values_exit_2_with_one_line(args: list[str], value: str, tmp_path: Path, capsys, data_dir) -> None:
    if args[0] == "train":
        args = [*args, "--out", str(tmp_path / "run"), "--data-dir", str(data_dir), "--no-progress"]
    assert main(args) == 2
    line = one_error_line(capsys)
    assert value in line, line
    assert not (tmp_path / "run").exists()  # refused before any work


def test_bad_evaluate_and_sample_counts_exit_2(trained_run: Path, capsys) -> None:
    assert main(["evaluate", str(trained_run), "--iw-samples", "-1"]) == 2
    assert "--iw-samples=-1" in one_error_line(capsys)
    assert main(["sample", str(trained_run), "--n", "0"]) == 2
    assert "--n=0" in one_error_line(capsys)


def test_missing_data_exits_2_naming_the_file(tmp_path: Path, capsys, monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("torchvision.datasets.MNIST", offline)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", *TINY, "--epochs", "1", "--data-dir", str(empty), "--out", str(tmp_path / "run")]) == 2
    line = one_error_line(capsys)
    assert str(empty / "mnist.npz") in line and "VAELIB_DATA" in line


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *TINY, "--epochs", "3", "--data-dir", str(data_dir), "--out", str(out)]) == 0
    return out


def test_evaluate_prints_json_with_a_bound_above_the_elbo(trained_run: Path, data_dir: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["evaluate", str(trained_run), "--iw-samples", "10", "--data-dir", str(data_dir),
                 "--device", "cpu", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("elbo", "log_likelihood", "bits_per_dim", "iw_samples", "log_likelihood_sem", "note"):
        assert key in result, key
    assert result["iw_samples"] == 10 and result["n_examples"] == 200
    # The k=10 importance-weighted bound is above the ELBO in expectation; allow 3 standard errors of noise.
    assert result["log_likelihood"] >= result["elbo"] - 3 * result["log_likelihood_sem"], result
    assert result["log_likelihood"] < 0
    assert 0 < result["bits_per_dim"] < 1  # binary pixels: a model better than a fair coin, below 1 bit
    assert "200" in result["note"]  # a subset of the official test set is labelled as such


def test_sample_writes_an_image_grid(trained_run: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    out = tmp_path / "samples.png"
    assert main(["sample", str(trained_run), "--n", "16", "--out", str(out), "--device", "cpu"]) == 0
    with Image.open(out) as image:
        width, height = image.size
    assert width == height and width >= 4 * 28  # a 4 x 4 grid of 28 x 28 digits


def test_train_resume_continues_to_the_requested_epochs(data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    base = ["train", *TINY, "--train-size", "100", "--data-dir", str(data_dir), "--out", str(out)]
    assert main([*base, "--epochs", "1"]) == 0
    assert len(pd.read_csv(out / "history.csv")) == 1
    capsys.readouterr()
    assert main([*base, "--epochs", "2"]) == 2  # no --resume: the run is not overwritten
    assert "--resume" in one_error_line(capsys)
    assert main([*base, "--epochs", "2", "--resume"]) == 0
    history = pd.read_csv(out / "history.csv")
    assert list(history.epoch) == [1, 2]
    assert main([*base, "--epochs", "3", "--resume", "--lr", "0.01"]) == 2  # another experiment: refused
    assert "lr" in one_error_line(capsys)


def test_module_entry_point_exits_2_with_one_line(tmp_path: Path, data_dir: Path) -> None:
    # The real process: exit status and a clean stderr (no traceback, no progress bar).
    env = {**os.environ, "VAELIB_DATA": str(data_dir)}
    result = subprocess.run([sys.executable, "-m", "vaelib", "train", "--latent-dim", "0", "--out", str(tmp_path)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "latent_dim=0" in result.stderr


def test_module_entry_point_evaluate_last_line_is_json(trained_run: Path, data_dir: Path) -> None:
    env = {**os.environ, "VAELIB_DATA": str(data_dir)}
    result = subprocess.run([sys.executable, "-m", "vaelib", "evaluate", str(trained_run), "--iw-samples", "5",
                             "--device", "cpu", "--max-examples", "50"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    result_json = json.loads(result.stdout.strip().splitlines()[-1])
    assert result_json["n_examples"] == 50 and result_json["iw_samples"] == 5
