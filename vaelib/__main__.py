"""Command line: `python -m vaelib train | evaluate | sample`. Bad values exit with status 2 and one line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import ACTIVATIONS, DATASETS, ESTIMATORS, LIKELIHOODS, METHODS, OPTIMIZERS, ConfigError, RunConfig
from .data import DataError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vaelib", description="Auto-Encoding Variational Bayes.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a VAE and write DIR/{config.json,history.csv,checkpoint.pt}")
    defaults = RunConfig()
    train.add_argument("--dataset", default=defaults.dataset, help=f"one of: {', '.join(DATASETS)}")
    train.add_argument("--method", default="aevb", help=f"one of: {', '.join(METHODS)}")
    train.add_argument("--latent-dim", type=int, default=defaults.latent_dim)
    train.add_argument("--epochs", type=int, default=defaults.epochs)
    train.add_argument("--batch-size", type=int, default=defaults.batch_size, help="M, datapoints per step")
    train.add_argument("--optimizer", default=defaults.optimizer, help=f"one of: {', '.join(OPTIMIZERS)}")
    train.add_argument("--lr", type=float, default=defaults.lr, help="global step size")
    train.add_argument("--likelihood", default="auto", help=f"auto or one of: {', '.join(LIKELIHOODS)}")
    train.add_argument("--architecture", default="auto", help="auto, mlp or conv")
    train.add_argument("--hidden-dim", type=int, default=None, help="hidden units (auto: 500 MNIST, 200 Frey)")
    train.add_argument("--hidden-layers", type=int, default=defaults.hidden_layers)
    train.add_argument("--activation", default="auto", help=f"auto or one of: {', '.join(ACTIVATIONS)}")
    train.add_argument("--res-blocks", type=int, default=defaults.res_blocks, help="conv: residual blocks")
    train.add_argument("--estimator", default=defaults.estimator, help=f"one of: {', '.join(ESTIMATORS)}")
    train.add_argument("--n-samples", type=int, default=defaults.n_samples, help="L (or k for iwae)")
    train.add_argument("--beta", type=float, default=defaults.beta, help="weight on the KL (1 = ELBO)")
    train.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    train.add_argument("--lr-schedule", default=defaults.lr_schedule, help="constant or cosine")
    train.add_argument("--kl-warmup-epochs", type=int, default=defaults.kl_warmup_epochs,
                       help="ramp the KL weight from 0 to 1 over this many epochs")
    train.add_argument("--train-size", type=int, default=None, help="use the first N training examples")
    train.add_argument("--test-size", type=int, default=None, help="use the first N test examples")
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--device", default=defaults.device, help="auto, cpu, cuda, cuda:N or mps")
    train.add_argument("--data-dir", default=None, help="directory of the .npz files (else $VAELIB_DATA)")
    train.add_argument("--out", required=True, help="run directory")
    train.add_argument("--resume", action="store_true", help="continue the run in --out up to --epochs in all")
    train.add_argument("--no-progress", action="store_true")

    evaluate = sub.add_parser("evaluate", help="test ELBO and importance-sampled log-likelihood, as JSON")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--iw-samples", type=int, default=5000, help="k, importance samples per example")
    evaluate.add_argument("--split", default="test", choices=["test", "train"])
    evaluate.add_argument("--batch-size", type=int, default=100)
    evaluate.add_argument("--max-examples", type=int, default=None, help="evaluate only the first N")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--data-dir", default=None)
    evaluate.add_argument("--no-progress", action="store_true")

    sample = sub.add_parser("sample", help="decode z ~ N(0, I) into an image grid")
    sample.add_argument("run_dir")
    sample.add_argument("--n", type=int, default=100, help="number of samples (a square grid)")
    sample.add_argument("--out", default="samples.png")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--device", default="auto")
    return parser


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _check_run_dir(path: str) -> Path:
    run_dir = Path(path)
    if not (run_dir / "checkpoint.pt").exists():
        raise ConfigError(f"run directory {path!r} not found or holds no checkpoint.pt; pass a directory "
                          "written by `python -m vaelib train --out DIR`")
    return run_dir


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "evaluate":
            return _evaluate(args)
        return _sample(args)
    except (ConfigError, DataError, FileExistsError) as error:
        return _fail(str(error))


def _train(args: argparse.Namespace) -> int:
    from .train import fit  # noqa: PLC0415  (keeps `--help` and argument errors instant)

    config = RunConfig(
        dataset=args.dataset, method=args.method, latent_dim=args.latent_dim, epochs=args.epochs,
        batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr, likelihood=args.likelihood,
        architecture=args.architecture, hidden_dim=args.hidden_dim, hidden_layers=args.hidden_layers,
        activation=args.activation, res_blocks=args.res_blocks, estimator=args.estimator,
        n_samples=args.n_samples, beta=args.beta,
        weight_decay=args.weight_decay, lr_schedule=args.lr_schedule, kl_warmup_epochs=args.kl_warmup_epochs,
        train_size=args.train_size, test_size=args.test_size,
        seed=args.seed, device=args.device,
    )
    run = fit(config, args.out, resume=args.resume, data_dir=args.data_dir, progress=not args.no_progress)
    last = run.history.iloc[-1] if len(run.history) else None
    if last is not None:
        print(f"epoch {int(last.epoch)}: train ELBO {last.train_elbo:.2f}, test ELBO {last.test_elbo:.2f} "
              f"nats per example; run in {run.path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if args.iw_samples < 0:
        raise ConfigError(f"--iw-samples={args.iw_samples} is not allowed; use 0 (ELBO only) or a count >= 1")
    run_dir = _check_run_dir(args.run_dir)
    from .evaluate import evaluate  # noqa: PLC0415
    from .train import load_run  # noqa: PLC0415

    run = load_run(run_dir, args.device)
    data = run.load_data(args.data_dir)
    result = evaluate(run, data, args.iw_samples, args.split, args.batch_size, not args.no_progress,
                      args.max_examples)
    print(json.dumps(result))
    return 0


def _sample(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ConfigError(f"--n={args.n} is not allowed; it must be >= 1")
    run_dir = _check_run_dir(args.run_dir)
    import torch  # noqa: PLC0415
    from torchvision.utils import save_image  # noqa: PLC0415

    from .train import load_run  # noqa: PLC0415

    run = load_run(run_dir, args.device)
    generator = torch.Generator(device=next(run.model.parameters()).device).manual_seed(args.seed)
    images = run.model.sample(args.n, generator).reshape(-1, *run.model.image_shape).cpu()
    save_image(images, args.out, nrow=max(1, round(args.n**0.5)))
    print(f"wrote {args.n} samples to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
