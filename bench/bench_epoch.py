"""Seconds per MNIST epoch: vaelib against the conventional torchvision loop, and vaelib's share of the matmul peak.

One run, one machine, one thread setting. For each architecture:

* "examples": the pytorch/examples VAE (784-400-20, ReLU, Adam lr 1e-3, batch 128, Bernoulli/BCE);
* "paper": Kingma & Welling's MNIST MLP (784-500-20, tanh, Adagrad lr 0.02, M = 100, Bernoulli/BCE),

it trains one epoch of grey-level MNIST two ways:

* conventional: `torchvision.datasets.MNIST(..., transform=ToTensor())` + `DataLoader(batch_size, shuffle=True)`
  and the pytorch/examples train loop (sigmoid decoder, `F.binary_cross_entropy(..., reduction="sum")` + KL,
  `loss.item()` every step), verbatim apart from the architecture knobs. torchvision reads the raw IDX files,
  which are written offline from `mnist.npz` into a temporary directory;
* vaelib: `vaelib.train.fit` with `RunConfig(dataset="mnist", likelihood="bernoulli", ...)`: the same model
  and loss (BCE on grey levels + analytic KL; the mean over the batch instead of the sum, which Adam and
  Adagrad are invariant to up to their eps). Its time is the history's `seconds` column: the training
  loop alone, as for the conventional loop; the test ELBO that `fit` computes after the epoch is reported
  apart (`eval_seconds`).

FLOP count (matrix products only; each product of an (m x k) by a (k x n) matrix is 2 m k n FLOP). With
D = 784 pixels, H hidden units and Z latent dimensions, one example's forward pass costs
    F = 2 (D H + H 2Z + Z H + H D)        (encoder D->H, H->2Z; decoder Z->H, H->D)
and its backward pass 2F (a weight gradient and an input gradient per layer) less the input gradient of
the first layer (2 D H), which nothing needs. So an epoch of N examples costs
    FLOP = N (3F - 2 D H).
Elementwise work (activations, the loss, the optimizer) is left out, so GFLOP/s = FLOP / seconds is what
the matmuls would need to run at for the epoch to take that long: "fraction of peak" is that figure over
the best float32 `torch.matmul` rate measured in this run (square 2048^3 products, best of several, same
thread count) — an upper-bound yardstick, since small batched products never quite reach it. How far
short they fall is measured too: the epoch's own products, alone, at the same batch size, in a tight loop
(`matmul_floor_seconds`). No training loop at that batch size can beat that floor, so it bounds the
fraction of peak that any implementation can reach here.

Targets (issue 10): vaelib's epoch within TARGET_FLOOR times that floor, and at least TARGET_RATIO times
faster than the conventional loop; the output marks each met or MISSED and names the step `fit` took
(`vaelib.methods.update_for`: the hand-written step without autograd, or the plain autograd one).

Usage:  .venv/bin/python bench/bench_epoch.py [--threads 2] [--models examples,paper] [--repeats 1]
        (`make bench` runs it with the defaults). Writes a JSON next to the printed table, in bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vaelib.config import RunConfig  # noqa: E402
from vaelib.data import Dataset, load_dataset  # noqa: E402
from vaelib.methods import FastMLPAEVB, update_for  # noqa: E402
from vaelib.models import build_model  # noqa: E402
from vaelib.paths import data_dir as default_data_dir  # noqa: E402
from vaelib.train import fit  # noqa: E402

TARGET_RATIO = 3.3  # vaelib at least this many times faster than the conventional loop (issue 10)
TARGET_FLOOR = 1.35  # vaelib's epoch at most this many times the epoch's matrix products alone (issue 10)


@dataclass(frozen=True)
class Spec:
    """One architecture and its training settings."""

    name: str
    title: str
    hidden: int
    latent: int
    activation: str
    optimizer: str
    lr: float
    batch_size: int
    pixels: int = 784

    def forward_flop_per_example(self) -> int:
        d, h, z = self.pixels, self.hidden, self.latent
        return 2 * (d * h + h * 2 * z + z * h + h * d)

    def train_flop_per_example(self) -> int:
        """Forward + backward matmul FLOP: 3F less the first layer's unneeded input gradient (2DH)."""
        return 3 * self.forward_flop_per_example() - 2 * self.pixels * self.hidden


SPECS = {
    "examples": Spec("examples", "pytorch/examples VAE 784-400-20 ReLU, Adam 1e-3, M=128", 400, 20, "relu", "adam",
                     1e-3, 128),
    "paper": Spec("paper", "K&W 2013 MLP 784-500-20 tanh, Adagrad 0.02, M=100", 500, 20, "tanh", "adagrad", 0.02,
                  100),
}


# --- the yardstick ---------------------------------------------------------------------------------------
def matmul_peak(n: int = 2048, repeats: int = 7, min_seconds: float = 0.3) -> float:
    """Best float32 GFLOP/s of an n x n by n x n torch.matmul, after a warm-up long enough for the clocks
    and the thread pool to settle."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    flop = 2.0 * n**3
    started = time.perf_counter()
    while time.perf_counter() - started < min_seconds:  # warm-up
        torch.matmul(a, b, out=c)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    return flop / best / 1e9


def matmul_floor_seconds(spec: Spec, n_examples: int, repeats: int = 3) -> float:
    """Seconds per epoch for the matrix products of `spec`'s training step alone, at its batch size.

    The eleven products of one step (forward: D->H, H->2Z, Z->H, H->D; backward: a weight gradient for each
    layer and an input gradient for all but the first), in a tight loop whose operands stay in cache, with
    nothing else in between: the arithmetic floor of an epoch at these shapes, as torch's BLAS runs them.
    Its FLOP count is the same N (3F - 2DH) as the epoch's, so its GFLOP/s is a shape-matched peak.
    """
    m, d, h, z = spec.batch_size, spec.pixels, spec.hidden, spec.latent
    r = torch.randn
    w1, w2, w3, w4 = r(h, d), r(2 * z, h), r(h, z), r(d, h)
    x, h1, mu_logvar, zz, h3, out = r(m, d), r(m, h), r(m, 2 * z), r(m, z), r(m, h), r(m, d)

    def step() -> None:
        x @ w1.t(), h1 @ w2.t(), zz @ w3.t(), h3 @ w4.t()  # forward
        out.t() @ h3, out @ w4  # decoder output layer: weight and input gradients
        h3.t() @ zz, h3 @ w3  # decoder hidden layer
        mu_logvar.t() @ h1, mu_logvar @ w2  # encoder output layer
        h1.t() @ x  # encoder hidden layer: its input gradient is not needed

    steps = -(-n_examples // m)
    for _ in range(20):
        step()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, time.perf_counter() - started)
    return best


# --- the conventional loop (pytorch/examples/vae/main.py) -----------------------------------------------
def write_mnist_idx(npz_path: Path, root: Path) -> Path:
    """Write MNIST as the four uncompressed IDX files torchvision expects under `root/MNIST/raw`."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    with np.load(npz_path) as f:
        arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = arrays[f"x_{split}"].astype(np.uint8), arrays[f"y_{split}"].astype(np.uint8)
        with open(raw / f"{prefix}-images-idx3-ubyte", "wb") as out:
            out.write(struct.pack(">IIII", 0x803, *x.shape))  # magic: unsigned bytes, 3 dimensions
            out.write(np.ascontiguousarray(x).tobytes())
        with open(raw / f"{prefix}-labels-idx1-ubyte", "wb") as out:
            out.write(struct.pack(">II", 0x801, len(y)))
            out.write(y.tobytes())
    return root


class ExamplesVAE(nn.Module):
    """pytorch/examples' VAE with the hidden width and activation as knobs."""

    def __init__(self, hidden: int, latent: int, activation: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc21 = nn.Linear(hidden, latent)
        self.fc22 = nn.Linear(hidden, latent)
        self.fc3 = nn.Linear(latent, hidden)
        self.fc4 = nn.Linear(hidden, 784)
        self.act = torch.relu if activation == "relu" else torch.tanh

    def encode(self, x):
        h1 = self.act(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = self.act(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def examples_loss(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def conventional_epochs(spec: Spec, idx_root: Path, epochs: int, train_size: int | None,
                        seed: int = 0) -> list[float]:
    """Seconds of each epoch of the pytorch/examples loop (CPU settings: num_workers=0, no pin_memory)."""
    from torchvision import datasets, transforms

    torch.manual_seed(seed)
    train_set = datasets.MNIST(str(idx_root), train=True, download=False, transform=transforms.ToTensor())
    if train_size is not None:
        train_set = torch.utils.data.Subset(train_set, range(train_size))
    loader = torch.utils.data.DataLoader(train_set, batch_size=spec.batch_size, shuffle=True)
    model = ExamplesVAE(spec.hidden, spec.latent, spec.activation)
    if spec.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr)
    else:
        optimizer = torch.optim.Adagrad(model.parameters(), lr=spec.lr)
    seconds = []
    for _ in range(epochs):
        model.train()
        train_loss = 0.0
        started = time.perf_counter()
        for data, _ in loader:
            optimizer.zero_grad()
            recon_batch, mu, logvar = model(data)
            loss = examples_loss(recon_batch, data, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
        seconds.append(time.perf_counter() - started)
        if not np.isfinite(train_loss):
            raise FloatingPointError(f"conventional loop diverged on {spec.name}")
    return seconds


# --- vaelib ---------------------------------------------------------------------------------------------
def vaelib_config(spec: Spec, epochs: int, train_size: int | None, seed: int = 0) -> RunConfig:
    return RunConfig(dataset="mnist", likelihood="bernoulli", architecture="mlp", hidden_dim=spec.hidden,
                     latent_dim=spec.latent, activation=spec.activation, optimizer=spec.optimizer, lr=spec.lr,
                     batch_size=spec.batch_size, epochs=epochs, train_size=train_size, seed=seed, device="cpu")


def vaelib_epochs(spec: Spec, dataset: Dataset, epochs: int, train_size: int | None,
                  progress: bool) -> tuple[list[float], list[float], float]:
    """(training seconds per epoch, test-ELBO seconds per epoch, train ELBO of the last epoch) from fit."""
    config = vaelib_config(spec, epochs, train_size)
    if train_size is not None:  # fit takes a given data set as it is
        dataset = Dataset(dataset.name, dataset.x_train[:train_size], None, dataset.x_test, None,
                          dataset.image_shape)
    with tempfile.TemporaryDirectory() as out:
        run = fit(config, out, progress=progress, dataset=dataset)
    history = run.history
    return history["seconds"].tolist(), history["eval_seconds"].tolist(), float(history["train_elbo"].iloc[-1])


def vaelib_step(spec: Spec) -> str:
    """Which training step `fit` takes for `spec` (vaelib.methods.update_for decides)."""
    config = vaelib_config(spec, 1, None)
    fast = isinstance(update_for(build_model(config, (1, 28, 28)), config), FastMLPAEVB)
    return "fast (no autograd)" if fast else "plain autograd (the fast step does not cover it)"


# --- driver ---------------------------------------------------------------------------------------------
def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cpus_usable": affinity, "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "mkl": torch.backends.mkl.is_available(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


def warn_if_busy() -> None:
    """Say so when other work is running: with OpenMP threads that wait on each other at every op, a
    contended core slows a 2-thread epoch several-fold, so such timings say little about the code."""
    if hasattr(os, "getloadavg") and os.getloadavg()[0] > 0.5:
        print(f"warning: load average {os.getloadavg()[0]:.2f} before the benchmark: other processes are running "
              "and the timings will be slow and noisy", file=sys.stderr)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="examples,paper", help=f"comma-separated, of: {', '.join(SPECS)}")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for everything timed")
    parser.add_argument("--repeats", type=int, default=1,
                        help="train each way this many times (alternating) and report the median epoch")
    parser.add_argument("--train-size", type=int, default=None, help="first N training images (smoke runs)")
    parser.add_argument("--data-dir", default=None, help="directory holding mnist.npz (else $VAELIB_DATA)")
    parser.add_argument("--json", default=None, help="where to write the results (default bench/results/)")
    parser.add_argument("--progress", action="store_true", help="show vaelib's tqdm bar while it trains")
    parser.add_argument("--peak-size", type=int, default=2048, help="n of the n^3 matmul that measures the peak")
    args = parser.parse_args(argv)

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in SPECS]
    if unknown or not names:
        parser.error(f"--models {args.models!r}: unknown {unknown}; choose from {', '.join(SPECS)}")
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be >= 1")
    npz = default_data_dir(args.data_dir) / "mnist.npz"
    if not npz.exists():
        parser.error(f"{npz} not found: point --data-dir or $VAELIB_DATA at the directory holding mnist.npz")

    torch.set_num_threads(args.threads)
    warn_if_busy()
    peak_before = matmul_peak(args.peak_size)
    dataset = load_dataset("mnist", args.data_dir)
    results = {"machine": machine(), "targets": {"ratio": TARGET_RATIO, "over_floor": TARGET_FLOOR},
               "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        idx_root = write_mnist_idx(npz, Path(tmp))
        # Warm both paths once (thread pools, allocator, torchvision import) so neither pays it in its epoch.
        conventional_epochs(SPECS[names[0]], idx_root, 1, train_size=4 * SPECS[names[0]].batch_size)
        vaelib_epochs(SPECS[names[0]], Dataset(dataset.name, dataset.x_train[:512], None, dataset.x_test[:100],
                                               None, dataset.image_shape), 1, None, False)
        for name in names:
            spec = SPECS[name]
            conv, vae, vae_eval, final_elbo = [], [], [], None
            for _ in range(args.repeats):
                conv += conventional_epochs(spec, idx_root, 1, args.train_size)
                seconds, eval_seconds, final_elbo = vaelib_epochs(spec, dataset, 1, args.train_size, args.progress)
                vae += seconds
                vae_eval += eval_seconds
            n = args.train_size or dataset.x_train.shape[0]
            flop = n * spec.train_flop_per_example()
            results["models"][name] = {
                "title": spec.title, "step": vaelib_step(spec), "examples_per_epoch": n, "flop_per_epoch": flop,
                "conventional_seconds": conv, "vaelib_seconds": vae, "vaelib_eval_seconds": vae_eval,
                "vaelib_train_elbo": final_elbo, "matmul_floor_seconds": matmul_floor_seconds(spec, n),
            }
    peak_after = matmul_peak(args.peak_size)
    peak = max(peak_before, peak_after)
    results["matmul_peak_gflops"] = peak
    results["matmul_peak_runs_gflops"] = [peak_before, peak_after]
    results["machine"]["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None

    print(f"\n{results['machine']['cpu']}, {args.threads} threads, torch {torch.__version__}; "
          f"float32 matmul peak ({args.peak_size}^3, best of 7): {peak:.0f} GFLOP/s "
          f"(runs: {peak_before:.0f}, {peak_after:.0f})")
    header = (f"{'model':9s} {'conventional s/epoch':>21s} {'vaelib s/epoch':>15s} {'ratio':>7s} "
              f"{'vaelib GFLOP/s':>15s} {'of peak':>8s}")
    print(header)
    print("-" * len(header))
    for name, r in results["models"].items():
        conv, vae = float(np.median(r["conventional_seconds"])), float(np.median(r["vaelib_seconds"]))
        gflops = r["flop_per_epoch"] / vae / 1e9
        r.update(conventional_median=conv, vaelib_median=vae, ratio=conv / vae, vaelib_gflops=gflops,
                 conventional_gflops=r["flop_per_epoch"] / conv / 1e9, fraction_of_peak=gflops / peak)
        print(f"{name:9s} {conv:21.2f} {vae:15.2f} {r['ratio']:6.2f}x {gflops:15.0f} {r['fraction_of_peak']:8.0%}")
    print("\nThe same epoch's matrix products alone, at the same batch size, in a tight loop (the arithmetic floor):")
    for name, r in results["models"].items():
        floor = r["matmul_floor_seconds"]
        r.update(floor_gflops=r["flop_per_epoch"] / floor / 1e9, floor_fraction_of_peak=r["flop_per_epoch"] / floor
                 / 1e9 / peak, vaelib_over_floor=r["vaelib_median"] / floor)
        print(f"{name:9s} {floor:.2f} s/epoch = {r['floor_gflops']:.0f} GFLOP/s = {r['floor_fraction_of_peak']:.0%} of "
              f"the {args.peak_size}^3 peak; vaelib's epoch takes {r['vaelib_over_floor']:.2f}x that")
    print(f"\nTargets: vaelib's epoch within {TARGET_FLOOR}x the floor and at least {TARGET_RATIO}x faster than "
          "the conventional loop")
    for name, r in results["models"].items():
        r.update(floor_target_met=r["vaelib_over_floor"] <= TARGET_FLOOR, ratio_target_met=r["ratio"] >= TARGET_RATIO)
        print(f"{name:9s} step: {r['step']}; {r['vaelib_over_floor']:.2f}x the floor "
              f"({'met' if r['floor_target_met'] else 'MISSED'}), {r['ratio']:.2f}x the conventional loop "
              f"({'met' if r['ratio_target_met'] else 'MISSED'})")
    evals = ", ".join(f"{k} {np.median(r['vaelib_eval_seconds']):.2f} s" for k, r in results["models"].items())
    print(f"(FLOP per epoch = N (3F - 2DH), matmuls only; vaelib's test ELBO after each epoch, not in its "
          f"s/epoch: {evals})")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(args.json) if args.json else ROOT / "bench" / "results" / f"epoch-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
