#!/usr/bin/env python3
"""INT8 targets and calibration methods side by side, in process: ``resnext_triton.bench.int8_recipes``.

Runs from a checkout without installing the package: ``python bench/int8_recipes.py --help``.
"""

import sys

from _launch import run

if __name__ == "__main__":
    sys.exit(run("resnext_triton.bench.int8_recipes"))
