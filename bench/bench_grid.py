"""Fig. 2's AEVB runs trained as one grid (vaelib.grid) against the same runs one after another, in one run.

Three ways to train the same configs (figure2_configs, the paper's architectures, M = 100, Adagrad) for the
same samples, measured back to back in this process: `sequential` (train.fit on each run), `grid-padded`
(one grid, the latent padded to the largest with a mask) and `grid-by-shape` (the grid trainer on each
latent size alone: what grouping by shape gives when every member's latent size differs) and `bucketed`
(vaelib.grid.latent_buckets, what the 'grid' executor does: sizes <= PAD_LIMIT padded together, larger
ones apart). Wall seconds
include each run's test evaluations, the same in all three. Ratios are sequential / way.

Usage:  .venv/bin/python bench/bench_grid.py [--threads 1] [--train-size 3000] [--datasets binarized-mnist freyface]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from vaelib import grid, train
from vaelib.config import RunConfig
from vaelib.data import Dataset, load_dataset
from vaelib.experiments.figure2 import figure2_configs


def timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def sequential(configs: list[RunConfig], root: Path, data: Dataset) -> None:
    for i, config in enumerate(configs):
        train.fit(config, root / str(i), progress=False, dataset=data)


def one_grid_per_shape(configs: list[RunConfig], root: Path, data: Dataset) -> None:
    for config in configs:
        grid.train_grid([config], root, None, data)


def bucketed(configs: list[RunConfig], root: Path, data: Dataset) -> None:
    for bucket in grid.latent_buckets(configs):
        grid.train_grid(bucket, root, None, data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--datasets", nargs="+", default=["binarized-mnist", "freyface"])
    args = parser.parse_args(argv)
    if args.threads < 1 or args.train_size < 100 or args.epochs < 1:
        parser.error("--threads and --epochs must be >= 1, --train-size >= 100")
    torch.set_num_threads(args.threads)
    print(f"threads={args.threads}, {args.train_size} training points, {args.epochs} epochs per run")
    print(f"{'data set':<16} {'runs':>4} {'sequential s':>12} {'grid-padded s':>13} {'grid-by-shape s':>15} "
          f"{'bucketed s':>10} {'padded x':>8} {'by-shape x':>10} {'bucketed x':>10}")
    for dataset in args.datasets:
        configs = figure2_configs(dataset, methods=("aevb",), samples_budget=args.epochs * args.train_size,
                                  train_size=args.train_size, test_size=500, device="cpu")
        ref = configs[0]
        data = load_dataset(ref.dataset, None, ref.train_size, ref.test_size)  # loaded once for all three
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            seq = timed(sequential, configs, root / "seq", data)
            padded = timed(grid.train_grid, configs, root / "padded", None, data)
            by_shape = timed(one_grid_per_shape, configs, root / "shape", data)
            buckets = timed(bucketed, configs, root / "buckets", data)
        print(f"{dataset:<16} {len(configs):>4} {seq:>12.1f} {padded:>13.1f} {by_shape:>15.1f} "
              f"{buckets:>10.1f} {seq / padded:>8.2f} {seq / by_shape:>10.2f} {seq / buckets:>10.2f}")


if __name__ == "__main__":
    main()
