#!/usr/bin/env python3
"""Accuracy of ResNeXt101-32x4d on Triton over an image set: a thin launcher for ``resnext_triton.client.evaluate``.

Runs from a checkout without installing the package: ``python client/evaluate.py imagenet/val -m MODEL``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def _main() -> int:
    if importlib.util.find_spec("resnext_triton") is None and SRC.is_dir():
        sys.path.insert(0, str(SRC))
    from resnext_triton.client.evaluate import main

    return main()


if __name__ == "__main__":
    sys.exit(_main())
