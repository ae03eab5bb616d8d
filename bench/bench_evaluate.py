"""Seconds for `python -m vaelib evaluate RUN --iw-samples 5000` on the full MNIST test set (target < 300 s).

The run is the paper's MNIST model (784-500-20, tanh, Bernoulli, binarized MNIST), trained here for one
epoch unless --run names a trained run directory: the cost of importance sampling does not depend on the
weights. k = 5000 samples for each of the 10,000 test images is 5 x 10^7 decoder passes, about
    5e7 x 2 (20 x 500 + 500 x 784) = 40 TFLOP
of matrix products, so the floor at the measured float32 matmul peak is printed next to the time.

Usage:  .venv/bin/python bench/bench_evaluate.py [--threads 2] [--run DIR] [--max-examples N]
        [--sweep 256,512,1024,...]   (time log_likelihood on --sweep-examples images at several chunk
                                       sizes, in decoded rows per chunk, before the full evaluation)
        [--no-full]                  (only the sweep)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_epoch import machine, matmul_peak, warn_if_busy  # noqa: E402

from vaelib.config import RunConfig  # noqa: E402
from vaelib.data import load_dataset  # noqa: E402
from vaelib.estimators import log_likelihood  # noqa: E402
from vaelib.runs import load_run  # noqa: E402
from vaelib.train import fit  # noqa: E402

K = 5000


def decoder_flop_per_row(hidden: int = 500, latent: int = 20, pixels: int = 784) -> int:
    return 2 * (latent * hidden + hidden * pixels)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--run", default=None, help="a trained run directory (default: train one for 1 epoch)")
    parser.add_argument("--k", type=int, default=K, help="importance samples per image")
    parser.add_argument("--max-examples", type=int, default=None, help="evaluate the first N test images only")
    parser.add_argument("--sweep", default="", help="comma-separated decoded rows per chunk to time first")
    parser.add_argument("--sweep-examples", type=int, default=200)
    parser.add_argument("--no-full", action="store_true", help="skip the full `vaelib evaluate` timing")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warn_if_busy()

    results: dict = {"machine": machine(), "k": args.k}
    peak = matmul_peak()
    results["matmul_peak_gflops"] = peak
    with tempfile.TemporaryDirectory() as tmp:
        if args.run is None:
            config = RunConfig(dataset="binarized-mnist", epochs=1, device="cpu")  # the paper's MNIST model
            fit(config, Path(tmp) / "run", data_dir=args.data_dir, progress=False)
            run_dir = Path(tmp) / "run"
        else:
            run_dir = Path(args.run)
        run = load_run(run_dir, device="cpu")
        c = run.config
        flop_row = decoder_flop_per_row(c.hidden_dim, c.latent_dim)

        if args.sweep:
            data = load_dataset(c.dataset, args.data_dir, test_size=args.sweep_examples)
            results["sweep"] = {}
            print(f"chunk sweep: log_likelihood, k={args.k}, first {args.sweep_examples} test images, batch 100")
            for rows in (int(r) for r in args.sweep.split(",")):
                chunk = max(1, rows // 100)
                started = time.perf_counter()
                log_likelihood(run.model, data.test_batches(100), args.k, chunk_size=chunk, progress=False)
                seconds = time.perf_counter() - started
                full = seconds * 10000 / args.sweep_examples
                gflops = flop_row * args.k * args.sweep_examples / seconds / 1e9
                results["sweep"][rows] = {"seconds": seconds, "full_test_set_seconds": full, "gflops": gflops}
                print(f"  {chunk * 100:7d} rows/chunk ({chunk:4d} samples x 100 images): {seconds:7.2f} s -> "
                      f"{full:6.0f} s for 10,000 images; decoder matmuls {gflops:.0f} GFLOP/s ({gflops / peak:.0%})")

        if not args.no_full:
            command = [sys.executable, "-m", "vaelib", "evaluate", str(run_dir), "--iw-samples", str(args.k),
                       "--device", "cpu", "--no-progress"]
            if args.max_examples:
                command += ["--max-examples", str(args.max_examples)]
            if args.data_dir:
                command += ["--data-dir", args.data_dir]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
            print("timing:", " ".join(command[1:]), f"(OMP_NUM_THREADS={args.threads})")
            started = time.perf_counter()
            out = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
            seconds = time.perf_counter() - started
            if out.returncode:
                raise SystemExit(f"vaelib evaluate failed:\n{out.stderr}")
            figures = json.loads(out.stdout[out.stdout.index("{"):])
            n = figures.get("n_examples", 10000)
            floor = flop_row * args.k * n / peak / 1e9
            results["evaluate"] = {"wall_seconds": seconds, "figures": figures, "matmul_floor_seconds": floor}
            print(f"\nvaelib evaluate --iw-samples {args.k} on {n:,} test images: {seconds:.1f} s wall "
                  f"(evaluate's own 'seconds': {figures.get('seconds', float('nan')):.1f}); target < 300 s for "
                  f"10,000 images: {'met' if n >= 10000 and seconds < 300 else 'see above'}")
            print(f"log p(x) = {figures['log_likelihood']:.2f} nats (importance sampling, k={args.k}); "
                  f"matmul floor at {peak:.0f} GFLOP/s: {floor:.0f} s ({floor / seconds:.0%} of the time)")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(args.json) if args.json else ROOT / "bench" / "results" / f"evaluate-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
