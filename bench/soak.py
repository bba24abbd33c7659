#!/usr/bin/env python3
"""Sustained load on the supervised local Triton with faults injected on a schedule: ``resnext_triton.bench.soak``.

Runs from a checkout without installing the package: ``python bench/soak.py --help``.
"""

import sys

from _launch import run

if __name__ == "__main__":
    sys.exit(run("resnext_triton.bench.soak"))
