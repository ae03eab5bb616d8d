"""Microseconds per optimizer step over the paper MLP's parameters: fused against PyTorch's other two paths.

vaelib.train.make_optimizer asks for `fused=True` where the device has the kernel; this script measures
what that buys on the machine at hand, for Adagrad and Adam, over the 0.8 million parameters of the
784-500-20 MLP VAE (weights and biases of its four layers), with fixed random gradients.

Usage:  .venv/bin/python bench/bench_optimizer.py [--threads 2] [--steps 200]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

IMPLEMENTATIONS = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}


def seconds_per_step(optimizer: torch.optim.Optimizer, steps: int, repeats: int = 5) -> float:
    for _ in range(20):  # warm-up: state allocation, thread pool
        optimizer.step()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(steps):
            optimizer.step()
        best = min(best, (time.perf_counter() - started) / steps)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)
    if args.threads < 1 or args.steps < 1:
        parser.error("--threads and --steps must be >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layers = nn.Sequential(nn.Linear(784, 500), nn.Linear(500, 40), nn.Linear(20, 500), nn.Linear(500, 784))
    for p in layers.parameters():
        p.grad = torch.randn_like(p)
    n_params = sum(p.numel() for p in layers.parameters())
    print(f"{n_params:,} parameters, {args.threads} threads, torch {torch.__version__}")
    for name, cls in (("Adagrad", torch.optim.Adagrad), ("Adam", torch.optim.Adam)):
        times = {impl: seconds_per_step(cls(layers.parameters(), lr=1e-3, **kwargs), args.steps)
                 for impl, kwargs in IMPLEMENTATIONS.items()}
        for impl, seconds in times.items():
            print(f"{name:8s} {impl:9s} {seconds * 1e6:8.1f} us/step  {seconds / times['fused']:5.2f}x fused")


if __name__ == "__main__":
    main()
