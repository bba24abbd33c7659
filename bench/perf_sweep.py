#!/usr/bin/env python3
"""perf_analyzer sweeps of the served models beside in-process baselines: ``resnext_triton.bench.sweep``.

Runs from a checkout without installing the package: ``python bench/perf_sweep.py --help``.
"""

import sys

from _launch import run

if __name__ == "__main__":
    sys.exit(run("resnext_triton.bench.sweep"))
