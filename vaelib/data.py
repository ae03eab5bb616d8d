"""Data sets held in memory as uint8 tensors, served as shuffled float batches.

Every data set is stored flat, shape (N, D) with D = C*H*W in channel-first order, so an MLP reads it as is
and a conv net views it as (N, C, H, W). No per-sample transforms: a batch is one index and one cast.

Files: `<data_dir>/<name>.npz` in the Keras layout (`x_train y_train x_test y_test`, uint8); Frey Face is
`freyface.npz` with one key `x` of shape (1965, 28, 20). The data directory is resolved by
`vaelib.paths.data_dir`: the argument, else `$VAELIB_DATA`, else `<repo>/data`, else `~/.cache/vaelib/data`.

The sizes of the splits are facts of the data sets and live here once (`TRAIN_SIZES`, `TEST_SIZES`), so code
that plans a budget (epochs for 10^7 samples) need not load a file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import paths
from .config import DATASETS, check_choice

TEST_BINARIZATION_SEED = 0  # one fixed draw of the binarized test set, the usual protocol for nats figures
FREYFACE_SPLIT_SEED = 0
FREYFACE_FRAMES = 1965
FREYFACE_TEST_SIZE = 393  # a fixed random 20% of the 1,965 frames; the paper does not state its split
FREYFACE_URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
OFFICIAL_TEST_SIZE = 10_000  # MNIST's and CIFAR-10's official test sets

TRAIN_SIZES = {"mnist": 60_000, "binarized-mnist": 60_000, "cifar10": 50_000,
               "freyface": FREYFACE_FRAMES - FREYFACE_TEST_SIZE}
# CIFAR-10: the offline data file holds the first 1,000 of the official 10,000 test images (figures say so).
TEST_SIZES = {"mnist": OFFICIAL_TEST_SIZE, "binarized-mnist": OFFICIAL_TEST_SIZE, "cifar10": OFFICIAL_TEST_SIZE,
              "freyface": FREYFACE_TEST_SIZE}

_FILES = {"mnist": "mnist.npz", "binarized-mnist": "mnist.npz", "cifar10": "cifar10.npz",
          "freyface": "freyface.npz"}
_SHAPES = {"mnist.npz": (1, 28, 28), "cifar10.npz": (3, 32, 32), "freyface.npz": (1, 28, 20)}


class DataError(RuntimeError):
    """A data file is missing, unreadable or has the wrong layout; the message says what to do."""


def train_set_size(name: str, train_size: int | None = None) -> int:
    """Training examples of data set `name` (the first `train_size` of them if given), without loading it."""
    check_choice("dataset", name, DATASETS)
    full = TRAIN_SIZES[name]
    return full if train_size is None else min(train_size, full)


@dataclass
class Dataset:
    """One data set in memory.

    x_train, x_test: uint8 tensors of shape (N, D). For "binarized-mnist", x_test already holds the fixed
    0/1 draw and x_train the grey levels that each epoch binarizes afresh.
    image_shape: (C, H, W). kind: "binary", "grey" (values in [0, 1]) or "8bit" (for discretized
    likelihoods the same [0, 1] floats are read as 256 bins).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor | None
    image_shape: tuple[int, int, int]
    test_note: str = ""

    @property
    def num_dims(self) -> int:
        return int(np.prod(self.image_shape))

    @property
    def binarized(self) -> bool:
        return self.name == "binarized-mnist"

    def to(self, device: torch.device | str) -> Dataset:
        move = (lambda t: None if t is None else t.to(device))  # noqa: E731
        return Dataset(self.name, move(self.x_train), move(self.y_train), move(self.x_test),
                       move(self.y_test), self.image_shape, self.test_note)

    def _as_float(self, x: torch.Tensor, generator: torch.Generator | None, binarize: bool) -> torch.Tensor:
        x = x.div(255.0)  # uint8 / float -> float32 in one pass, the same values as .float().div_(255.0)
        if binarize:
            # Dynamic binarization: a fresh Bernoulli draw with the grey level as its probability.
            u = torch.rand(x.shape, generator=generator, device=x.device)
            return (u < x).float()
        return x

    def train_batches(self, batch_size: int, generator: torch.Generator | None = None,
                      shuffle: bool = True, drop_last: bool = False) -> Iterator[torch.Tensor]:
        """Yield float batches of shape (batch_size, D), shuffled afresh each call (one epoch)."""
        n = self.x_train.shape[0]
        gen_device = generator.device if generator is not None else "cpu"
        order = torch.randperm(n, generator=generator, device=gen_device) if shuffle else torch.arange(n)
        order = order.to(self.x_train.device)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            index = order[start:start + batch_size]
            # index_select, not x_train[index]: the same rows, 3x faster on CPU (bench/README.md)
            yield self._as_float(self.x_train.index_select(0, index), generator, self.binarized)

    def test_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Yield the test set in order as float batches (fixed binarization: the same every call)."""
        for start in range(0, self.x_test.shape[0], batch_size):
            yield self._as_float(self.x_test[start:start + batch_size], None, False)

    def split_batches(self, split: str, batch_size: int) -> Iterator[torch.Tensor]:
        """Deterministic batches of "test" or "train" (train binarized with a fixed seed, for evaluation)."""
        if split == "test":
            yield from self.test_batches(batch_size)
        elif split == "train":
            generator = torch.Generator(device=self.x_train.device).manual_seed(TEST_BINARIZATION_SEED)
            yield from self.train_batches(batch_size, generator, shuffle=False)
        else:
            raise ValueError(f"split={split!r} is not allowed; choose 'train' or 'test'")

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """View flat batches (B, D) as images (B, C, H, W)."""
        return x.reshape(-1, *self.image_shape)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, train_size: int | None = None,
                 test_size: int | None = None, download: bool = True,
                 device: torch.device | str = "cpu") -> Dataset:
    """Load a data set into memory; `train_size`/`test_size` keep the first N examples of each split.

    A missing file is fetched once (MNIST, CIFAR-10 through torchvision; Frey Face from its original
    address) and written as `<data_dir>/<name>.npz`. Offline with no file, DataError says what to do.
    """
    check_choice("dataset", name, DATASETS)
    directory = paths.data_dir(data_dir)
    path = directory / _FILES[name]
    if not path.exists():
        if not download:
            raise DataError(_missing_message(path))
        _download(name, path)
    arrays = _read_npz(path)
    shape = _SHAPES[path.name]

    if path.name == "freyface.npz":
        x = arrays["x"].reshape(len(arrays["x"]), -1)
        order = np.random.default_rng(FREYFACE_SPLIT_SEED).permutation(len(x))
        test_index, train_index = order[:FREYFACE_TEST_SIZE], order[FREYFACE_TEST_SIZE:]
        x_train, x_test, y_train, y_test = x[np.sort(train_index)], x[np.sort(test_index)], None, None
        note = (f"Frey Face: a fixed random split (seed {FREYFACE_SPLIT_SEED}) of {len(x) - FREYFACE_TEST_SIZE:,} "
                f"training and {FREYFACE_TEST_SIZE} test frames")
    else:
        x_train, x_test = _channel_first_flat(arrays["x_train"]), _channel_first_flat(arrays["x_test"])
        y_train, y_test = arrays["y_train"].astype(np.int64), arrays["y_test"].astype(np.int64)
        note = ""

    if train_size is not None:
        x_train = x_train[:train_size]
        y_train = None if y_train is None else y_train[:train_size]
    if test_size is not None:
        x_test = x_test[:test_size]
        y_test = None if y_test is None else y_test[:test_size]
    if path.name != "freyface.npz" and len(x_test) < OFFICIAL_TEST_SIZE:
        note = f"test figures are over the first {len(x_test):,} of the {OFFICIAL_TEST_SIZE:,} official test images"

    x_test_t = torch.from_numpy(np.ascontiguousarray(x_test))
    if name == "binarized-mnist":
        generator = torch.Generator().manual_seed(TEST_BINARIZATION_SEED)
        u = torch.rand(x_test_t.shape, generator=generator)
        x_test_t = (u < x_test_t.float() / 255.0).to(torch.uint8) * 255

    dataset = Dataset(
        name=name,
        x_train=torch.from_numpy(np.ascontiguousarray(x_train)),
        y_train=None if y_train is None else torch.from_numpy(y_train),
        x_test=x_test_t,
        y_test=None if y_test is None else torch.from_numpy(y_test),
        image_shape=shape,
        test_note=note,
    )
    return dataset.to(device) if str(device) != "cpu" else dataset


def image_shape(name: str) -> tuple[int, int, int]:
    """(C, H, W) of a data set's images, without loading it."""
    return _SHAPES[_FILES[name]]


def check_available(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data file's path, or raise DataError before any work if it is absent (no download)."""
    path = paths.data_dir(data_dir) / _FILES[name]
    if not path.exists():
        raise DataError(_missing_message(path))
    return path


def _channel_first_flat(x: np.ndarray) -> np.ndarray:
    if x.ndim == 4:  # (N, H, W, C), the Keras layout of colour images
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x.reshape(len(x), -1))


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as error:  # a truncated or non-npz file
        raise DataError(f"{path} could not be read as an .npz file ({error}); delete it and run again to "
                        "fetch it anew, or copy a good copy there") from error
    shape = _SHAPES[path.name]
    keys = ("x",) if path.name == "freyface.npz" else ("x_train", "y_train", "x_test", "y_test")
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise DataError(f"{path} lacks the key(s) {', '.join(missing)}; expected keys {', '.join(keys)}")
    for key in keys:
        if key.startswith("x"):
            x = arrays[key]
            hw = x.shape[1:3]
            expected_hw = shape[1:]
            channels_ok = x.ndim == 3 and shape[0] == 1 or x.ndim == 4 and x.shape[3] == shape[0]
            if x.dtype != np.uint8 or tuple(hw) != expected_hw or not channels_ok:
                raise DataError(
                    f"{path}: {key} has shape {x.shape} and dtype {x.dtype}; expected uint8 images of "
                    f"{expected_hw[0]}x{expected_hw[1]}" + (f"x{shape[0]}" if shape[0] > 1 else "")
                    + " in the Keras layout (N, H, W[, C])"
                )
    return arrays


def _missing_message(path: Path) -> str:
    return (f"data file {path} not found and it could not be downloaded. Put {path.name} there (layout: "
            f"Keras .npz, uint8), or point the environment variable VAELIB_DATA (or --data-dir) at a "
            "directory that holds it")


def _download(name: str, path: Path) -> None:
    """Fetch a data set once and store it as an npz in the Keras layout; DataError when offline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    try:
        if path.name == "mnist.npz":
            from torchvision.datasets import MNIST

            raw = path.parent / "torchvision"
            train, test = MNIST(raw, train=True, download=True), MNIST(raw, train=False, download=True)
            np.savez(tmp, x_train=train.data.numpy(), y_train=train.targets.numpy().astype(np.uint8),
                     x_test=test.data.numpy(), y_test=test.targets.numpy().astype(np.uint8))
        elif path.name == "cifar10.npz":
            from torchvision.datasets import CIFAR10

            raw = path.parent / "torchvision"
            train, test = CIFAR10(raw, train=True, download=True), CIFAR10(raw, train=False, download=True)
            np.savez(tmp, x_train=train.data, y_train=np.array(train.targets, np.uint8),
                     x_test=test.data, y_test=np.array(test.targets, np.uint8))
        else:
            import urllib.request

            import scipy.io

            mat_path = path.parent / "frey_rawface.mat"
            urllib.request.urlretrieve(FREYFACE_URL, mat_path)
            ff = scipy.io.loadmat(mat_path)["ff"]
            np.savez(tmp, x=ff.T.reshape(-1, 28, 20).astype(np.uint8))
        os.replace(tmp, path)
    except Exception as error:
        tmp.unlink(missing_ok=True)
        raise DataError(_missing_message(path) + f" (download failed: {error})") from error
