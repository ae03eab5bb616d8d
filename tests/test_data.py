"""Data loading (vaelib.data): the committed MNIST fixture, tiny synthetic files in tmp_path, and every way a
data file can be missing or broken."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelib.config import DATASETS, ConfigError
from vaelib.data import FREYFACE_TEST_SIZE, DataError, Dataset, check_available, load_dataset


def _indexed_dataset(n: int, name: str = "mnist") -> Dataset:
    """A grey-level data set whose row i encodes i in its first two pixels, so batches reveal their indices."""
    x = torch.zeros(n, 784, dtype=torch.uint8)
    x[:, 0] = torch.arange(n) % 256
    x[:, 1] = torch.arange(n) // 256
    return Dataset(name, x, None, x[:10].clone(), None, (1, 28, 28))


def _indices(batch: torch.Tensor) -> list[int]:
    levels = (batch[:, :2] * 255).round().long()
    return (levels[:, 0] + 256 * levels[:, 1]).tolist()


# --- the fixture, binarization, batching ------------------------------------------------------------------------
def test_fixture_loads_with_the_documented_layout(data_dir: Path) -> None:
    data = load_dataset("mnist", data_dir)
    assert data.x_train.shape == (1000, 784) and data.x_test.shape == (500, 784)
    assert data.x_train.dtype == torch.uint8
    assert data.image_shape == (1, 28, 28) and data.num_dims == 784
    assert data.y_train.shape == (1000,) and set(data.y_train.tolist()) == set(range(10))
    batch = next(data.test_batches(7))
    assert batch.dtype == torch.float32 and batch.min() >= 0 and batch.max() <= 1
    assert data.images(batch).shape == (7, 1, 28, 28)
    # Subsets keep the first N examples.
    small = load_dataset("mnist", data_dir, train_size=100, test_size=30)
    assert torch.equal(small.x_train, data.x_train[:100]) and torch.equal(small.x_test, data.x_test[:30])
    assert torch.equal(small.y_test, data.y_test[:30])


def test_vaelib_data_environment_variable_is_the_default_directory(data_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("VAELIB_DATA", str(data_dir))
    assert load_dataset("mnist", train_size=5, test_size=5).x_train.shape == (5, 784)
    assert check_available("binarized-mnist") == data_dir / "mnist.npz"


def test_binarized_test_set_is_fixed_and_training_draws_are_fresh(data_dir: Path) -> None:
    first = load_dataset("binarized-mnist", data_dir, train_size=200, test_size=100)
    second = load_dataset("binarized-mnist", data_dir, train_size=200, test_size=100)
    assert torch.equal(first.x_test, second.x_test)  # the same fixed draw on every load
    assert set(first.x_test.unique().tolist()) <= {0, 255}
    assert torch.equal(torch.cat(list(first.test_batches(30))), torch.cat(list(first.test_batches(1000))))

    generator = torch.Generator().manual_seed(0)
    epoch1 = torch.cat(list(first.train_batches(50, generator, shuffle=False)))
    epoch2 = torch.cat(list(first.train_batches(50, generator, shuffle=False)))
    assert set(epoch1.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(epoch1, epoch2)  # dynamic binarization: a new draw each epoch
    # Each draw is Bernoulli(grey level / 255): the mean over both epochs matches the grey levels.
    grey = first.x_train.float() / 255
    draws = torch.stack([epoch1, epoch2])  # (2, N, D)
    mask = (grey > 0) & (grey < 1)
    # Each entry of the two-draw average has variance p(1-p)/2; the SE of the mean over all M entries follows.
    se = torch.sqrt((grey * (1 - grey))[mask].sum() / 2) / mask.sum()
    assert abs(draws.mean(0)[mask].mean() - grey[mask].mean()) < 5 * se
    # Pixels at 0 or 255 are deterministic.
    assert torch.all(draws[:, grey == 0] == 0) and torch.all(draws[:, grey == 1] == 1)


def test_binarized_test_set_differs_from_the_grey_levels_only_by_the_draw(data_dir: Path) -> None:
    grey = load_dataset("mnist", data_dir, train_size=1, test_size=100)
    binary = load_dataset("binarized-mnist", data_dir, train_size=1, test_size=100)
    assert torch.all(binary.x_test[grey.x_test == 0] == 0)
    assert torch.all(binary.x_test[grey.x_test == 255] == 255)


@pytest.mark.parametrize("n, batch_size", [(1000, 64), (500, 50), (7, 10)])
def test_batches_cover_the_training_set_once_per_epoch(n: int, batch_size: int) -> None:
    data = _indexed_dataset(n)
    generator = torch.Generator().manual_seed(0)
    orders = []
    for _ in range(2):
        batches = list(data.train_batches(batch_size, generator))
        assert all(len(b) == batch_size for b in batches[:-1]) and 0 < len(batches[-1]) <= batch_size
        assert len(batches) == math.ceil(n / batch_size)
        order = [i for b in batches for i in _indices(b)]
        assert sorted(order) == list(range(n))  # every example exactly once
        orders.append(order)
    if n > 10:
        assert orders[0] != orders[1]  # reshuffled each epoch
    dropped = [i for b in data.train_batches(batch_size, generator, drop_last=True) for i in _indices(b)]
    assert len(dropped) == n - n % batch_size and len(set(dropped)) == len(dropped)


def test_evaluation_batches_are_deterministic(data_dir: Path) -> None:
    data = load_dataset("binarized-mnist", data_dir, train_size=120, test_size=50)
    a = torch.cat(list(data.split_batches("train", 50)))
    b = torch.cat(list(data.split_batches("train", 50)))
    assert torch.equal(a, b) and a.shape == (120, 784)
    assert torch.equal(torch.cat(list(data.split_batches("test", 20))), torch.cat(list(data.test_batches(50))))
    with pytest.raises(ValueError, match="'valid'"):
        next(data.split_batches("valid", 10))


# --- errors -------------------------------------------------------------------------------------------------------
def _assert_helpful_missing_message(error: DataError, path: Path) -> None:
    message = str(error)
    assert str(path) in message
    assert "VAELIB_DATA" in message
    assert "--data-dir" in message or "Put" in message  # says what to do


def test_missing_file_without_download_names_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path, download=False)
    _assert_helpful_missing_message(info.value, tmp_path / "mnist.npz")
    with pytest.raises(DataError) as info:
        check_available("cifar10", tmp_path)
    _assert_helpful_missing_message(info.value, tmp_path / "cifar10.npz")


@pytest.mark.parametrize("name, target", [
    ("binarized-mnist", "torchvision.datasets.MNIST"),
    ("cifar10", "torchvision.datasets.CIFAR10"),
    ("freyface", "urllib.request.urlretrieve"),
])
def test_failed_download_raises_data_error(tmp_path: Path, monkeypatch, name: str, target: str) -> None:
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(target, offline)
    with pytest.raises(DataError) as info:
        load_dataset(name, tmp_path, download=True)
    file = {"binarized-mnist": "mnist.npz", "cifar10": "cifar10.npz", "freyface": "freyface.npz"}[name]
    _assert_helpful_missing_message(info.value, tmp_path / file)
    assert "network is unreachable" in str(info.value)
    assert not (tmp_path / file).exists()
    assert not list(tmp_path.glob("*.tmp*"))  # no half-written file left to be mistaken for data


def test_corrupt_files_raise_data_error(tmp_path: Path, data_dir: Path) -> None:
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"this is not an npz file")
    with pytest.raises(DataError, match="mnist.npz"):
        load_dataset("mnist", tmp_path)
    # A download cut off halfway.
    full = (data_dir / "mnist.npz").read_bytes()
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match="mnist.npz"):
        load_dataset("mnist", tmp_path)


@pytest.mark.parametrize("arrays, fragment", [
    ({"x_train": np.zeros((4, 32, 32), np.uint8), "y_train": np.zeros(4, np.uint8),
      "x_test": np.zeros((4, 28, 28), np.uint8), "y_test": np.zeros(4, np.uint8)}, "(4, 32, 32)"),
    ({"x_train": np.zeros((4, 28, 28), np.float32), "y_train": np.zeros(4, np.uint8),
      "x_test": np.zeros((4, 28, 28), np.uint8), "y_test": np.zeros(4, np.uint8)}, "float32"),
    ({"x_train": np.zeros((4, 28, 28, 3), np.uint8), "y_train": np.zeros(4, np.uint8),
      "x_test": np.zeros((4, 28, 28), np.uint8), "y_test": np.zeros(4, np.uint8)}, "(4, 28, 28, 3)"),
    ({"x_train": np.zeros((4, 28, 28), np.uint8), "x_test": np.zeros((4, 28, 28), np.uint8)}, "y_train"),
])
def test_wrongly_shaped_files_raise_data_error(tmp_path: Path, arrays: dict, fragment: str) -> None:
    np.savez(tmp_path / "mnist.npz", **arrays)
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path)
    assert "mnist.npz" in str(info.value) and fragment in str(info.value)


def test_unknown_dataset_lists_the_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_dataset("svhn", tmp_path)
    assert "'svhn'" in str(info.value)
    for name in DATASETS:
        assert name in str(info.value)


# --- CIFAR-10 and Frey Face, from tiny synthetic files ------------------------------------------------------------
def _write_cifar(directory: Path, n_train: int, n_test: int) -> None:
    # Channel c of every image holds the constant 10 * (c + 1), so the channel order is visible after loading.
    def images(n: int) -> np.ndarray:
        x = np.zeros((n, 32, 32, 3), np.uint8)
        x[..., 0], x[..., 1], x[..., 2] = 10, 20, 30
        x[:, 0, 0, 0] = np.arange(n) % 256  # row identity in the first red pixel
        return x

    np.savez(directory / "cifar10.npz", x_train=images(n_train), y_train=np.arange(n_train, dtype=np.uint8) % 10,
             x_test=images(n_test), y_test=np.arange(n_test, dtype=np.uint8) % 10)


def test_cifar_is_channel_first_and_the_note_counts_the_test_images(tmp_path: Path) -> None:
    _write_cifar(tmp_path, 20, 1000)
    data = load_dataset("cifar10", tmp_path)
    assert data.image_shape == (3, 32, 32) and data.x_train.shape == (20, 3072)
    images = data.images(next(data.test_batches(5)))  # (5, 3, 32, 32)
    for channel, level in enumerate((10, 20, 30)):
        torch.testing.assert_close(images[:, channel, 1:, :], torch.full((5, 31, 32), level / 255))
    assert torch.equal((images[:, 0, 0, 0] * 255).round().long(), torch.arange(5))
    assert "1,000" in data.test_note and "10,000" in data.test_note
    assert "100" in load_dataset("cifar10", tmp_path, test_size=100).test_note


def test_full_test_set_needs_no_note(tmp_path: Path) -> None:
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((3, 28, 28), np.uint8), y_train=np.zeros(3, np.uint8),
             x_test=np.zeros((10_000, 28, 28), np.uint8), y_test=np.zeros(10_000, np.uint8))
    assert load_dataset("mnist", tmp_path).test_note == ""


def test_freyface_split_is_fixed_and_disjoint(tmp_path: Path) -> None:
    n = 1965
    frames = np.zeros((n, 28, 20), np.uint8)
    frames[:, 0, 0], frames[:, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
    np.savez(tmp_path / "freyface.npz", x=frames)
    first, second = load_dataset("freyface", tmp_path), load_dataset("freyface", tmp_path)
    assert first.image_shape == (1, 28, 20) and first.y_train is None
    assert first.x_test.shape == (FREYFACE_TEST_SIZE, 560) and first.x_train.shape == (n - FREYFACE_TEST_SIZE, 560)
    assert torch.equal(first.x_test, second.x_test)

    def ids(x: torch.Tensor) -> set[int]:
        return set((x[:, 0].long() + 256 * x[:, 1].long()).tolist())

    train, test = ids(first.x_train), ids(first.x_test)
    assert not train & test and train | test == set(range(n))
    assert test != set(range(n - FREYFACE_TEST_SIZE, n))  # a random split, not the last frames
    assert str(FREYFACE_TEST_SIZE) in first.test_note

