#!/usr/bin/env python3
"""perf_analyzer sweeps of the served models beside in-process baselines: ``resnext_triton.bench.sweep``.

Runs from a checkout without installing the package: ``python bench/perf_sweep.py --help``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def _main() -> int:
    if importlib.util.find_spec("resnext_triton") is None and SRC.is_dir():
        sys.path.insert(0, str(SRC))
    from resnext_triton.bench.sweep import main

    return main()


if __name__ == "__main__":
    sys.exit(_main())
