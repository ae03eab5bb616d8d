"""`python -m vaelib.book build --profile quick [--only 03_mnist] [--pdf]`: the book's command line.
`python -m vaelib.report` is the same command (the name the Makefile and older recipes use)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..config import ConfigError
from . import BuildError
from .build import build
from .profiles import ProfileError, available_profiles, load_profile


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vaelib.book",
                                     description="Build the book: profile -> papermill -> Jupyter Book (-> PDF).")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="execute the notebooks of a profile and render the book")
    b.add_argument("--profile", default="default", help="one of: " + ", ".join(available_profiles()))
    b.add_argument("--only", action="append", metavar="STEM",
                   help="execute only this notebook (repeatable, or comma-separated), e.g. 03_mnist")
    b.add_argument("--pdf", action="store_true", help="also print the book to book/_build/pdf/book.pdf")
    b.add_argument("--skip-execute", action="store_true",
                   help="render the book from the notebooks executed by the last build, running none")
    b.add_argument("--no-render", action="store_true", help="execute the notebooks but do not render the book")
    b.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="execute N notebooks side by side, each with its share of the CPU threads (the results "
                        "page waits for the others)")
    b.add_argument("--executor", default=None, metavar="KIND",
                   help="how chapters train their runs: inprocess, local:N (a process pool), slurm or "
                        "submitit-local; sets $VAELIB_EXECUTOR for the kernels (vaelib.executors)")
    sub.add_parser("profiles", help="list the profiles and what they are for")
    return parser

def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m vaelib.report`; returns the exit status (2: bad arguments, 1: failed)."""
    args = _parser().parse_args(argv)
    if args.command == "profiles":
        for name in available_profiles():
            print(f"{name}: {load_profile(name).description}")
        return 0
    try:
        build(args.profile, args.only, pdf=args.pdf, execute=not args.skip_execute, render=not args.no_render,
              jobs=args.jobs, executor=args.executor)
    except (ProfileError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
