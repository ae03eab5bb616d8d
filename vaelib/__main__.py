"""Command line: `python -m vaelib train | evaluate | sample`. Bad values exit with status 2 and one line.

`train` has one option per RunConfig field, generated from the dataclass (its type, default and
`config.FIELD_HELP`), so every knob of a run is reachable from the shell.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from .config import FIELD_HELP, ConfigError, RunConfig
from .data import DataError


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error}); give an object, e.g. '{{\"hmc_leapfrog\": 20}}'"
                                         ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object; give one, e.g. '{{\"label\": \"a\"}}'")
    return value


def _optional(kind: type):
    def parse(text: str):
        return None if text.lower() in ("none", "null", "") else kind(text)
    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse


# Field annotation (a string under `from __future__ import annotations`) -> how its option parses.
_PARSERS = {"str": str, "int": int, "float": float, "int | None": _optional(int), "float | None": _optional(float),
            "dict[str, Any]": _json_object}


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One `--field-name` option per RunConfig field, with the field's default and help."""
    for f in dataclasses.fields(RunConfig):
        default = None if f.default is dataclasses.MISSING else f.default  # extra: a fresh {} per config
        text = FIELD_HELP[f.name] + ("" if default is None else f" (default: {default})")
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=_PARSERS[str(f.type)],
                            default=default, help=text, metavar=f.name.upper())


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig the parsed options describe (validated by RunConfig itself)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)}
    if values["extra"] is None:
        values["extra"] = {}
    return RunConfig(**values)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vaelib", description="Auto-Encoding Variational Bayes.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a VAE and write DIR/{config.json,history.csv,checkpoint.pt}")
    add_config_options(train)
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

    config = config_from_args(args)
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
    from .runs import load_run  # noqa: PLC0415

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

    from .runs import load_run  # noqa: PLC0415

    run = load_run(run_dir, args.device)
    generator = torch.Generator(device=next(run.model.parameters()).device).manual_seed(args.seed)
    images = run.model.sample(args.n, generator).reshape(-1, *run.model.image_shape).cpu()
    save_image(images, args.out, nrow=max(1, round(args.n**0.5)))
    print(f"wrote {args.n} samples to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
