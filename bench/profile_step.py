"""Where one vaelib training step spends its time: torch.profiler over `aevb_update`, grouped by kind.

Usage:  .venv/bin/python bench/profile_step.py [--model paper|examples] [--threads 2] [--steps 200] [--table]

Prints milliseconds per step for the matrix products (forward and backward), the optimizer, the other
aten ops (activations, loss, sampling, sums) and what is left (Python, autograd bookkeeping, the data
batch), next to the wall-clock time per step measured without the profiler, and the matmul-only floor at
the measured peak.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_epoch import SPECS, matmul_peak, vaelib_config  # noqa: E402

from vaelib.data import load_dataset  # noqa: E402
from vaelib.methods import aevb_update  # noqa: E402
from vaelib.models import build_model  # noqa: E402
from vaelib.train import make_optimizer, seed_everything  # noqa: E402

MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="paper", choices=sorted(SPECS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--table", action="store_true", help="also print the profiler's top-25 op table")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    spec = SPECS[args.model]
    config = vaelib_config(spec, 1, None)
    dataset = load_dataset("mnist", args.data_dir)
    seed_everything(0)
    model = build_model(config, dataset.image_shape)
    optimizer = make_optimizer(model, config)
    generator = torch.Generator().manual_seed(0)

    def steps(n: int) -> None:
        done = 0
        while done < n:
            for x in dataset.train_batches(spec.batch_size, generator):
                aevb_update(model, optimizer, x, config, 1.0)
                done += 1
                if done == n:
                    return

    peak = matmul_peak()
    steps(50)
    started = time.perf_counter()
    steps(args.steps)
    wall_ms = (time.perf_counter() - started) / args.steps * 1e3
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        steps(args.steps)
    events = prof.key_averages()
    total_us = sum(e.self_cpu_time_total for e in events)
    matmul_us = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    optim_us = sum(e.self_cpu_time_total for e in events if "adagrad" in e.key.lower() or "adam" in e.key.lower())
    aten_us = sum(e.self_cpu_time_total for e in events if e.key.startswith("aten::")) - matmul_us - optim_us
    other_us = total_us - matmul_us - optim_us - aten_us
    flop = spec.batch_size * spec.train_flop_per_example()
    per = 1e-3 / args.steps
    print(f"{spec.title}; {args.threads} threads; matmul peak {peak:.0f} GFLOP/s")
    print(f"wall clock, no profiler: {wall_ms:.3f} ms/step = {flop / wall_ms / 1e6:.0f} GFLOP/s "
          f"({flop / wall_ms / 1e6 / peak:.0%} of peak); matmul floor at peak {flop / peak / 1e6:.3f} ms")
    print(f"under the profiler ({total_us * per:.3f} ms/step, self time):")
    for label, us in (("matrix products", matmul_us), ("optimizer", optim_us), ("other aten ops", aten_us),
                      ("python/autograd/profiler", other_us)):
        print(f"  {label:26s} {us * per:7.3f} ms  {us / total_us:5.1%}")
    print(f"  matrix products run at {flop / (matmul_us * per) / 1e6:.0f} GFLOP/s")
    if args.table:
        print(events.table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
