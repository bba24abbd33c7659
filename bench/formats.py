#!/usr/bin/env python3
"""Served formats (FP32, INT8, TorchScript) and the image pipeline side by side: ``resnext_triton.bench.formats``.

Runs from a checkout without installing the package: ``python bench/formats.py --help``.
"""

import sys

from _launch import run

if __name__ == "__main__":
    sys.exit(run("resnext_triton.bench.formats"))
