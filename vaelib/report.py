"""`python -m vaelib.report build --profile quick`: the book's command line, kept under the name the Makefile
and earlier recipes use. It is `vaelib.book.__main__`; the book's code lives in `vaelib.book`."""

from __future__ import annotations

import sys

from .book.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
