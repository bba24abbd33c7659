#!/usr/bin/env python3
"""Search instance count x max batch size x queue delay on this host: ``resnext_triton.bench.config_search``.

Runs from a checkout without installing the package: ``python bench/config_search.py --help``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def _main() -> int:
    if importlib.util.find_spec("resnext_triton") is None and SRC.is_dir():
        sys.path.insert(0, str(SRC))
    from resnext_triton.bench.config_search import main

    return main()


if __name__ == "__main__":
    sys.exit(_main())
