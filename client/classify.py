#!/usr/bin/env python3
"""Classify images with ResNeXt101-32x4d on Triton: a thin launcher for ``resnext_triton.client.cli``.

Runs from a checkout without installing the package: ``python client/classify.py photo.jpg``. An
interpreter without the project's dependencies hands over to the checkout's ``.venv/bin/python``
(or says what to run): see ``resnext_triton.checkout``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def _main() -> int:
    if importlib.util.find_spec("resnext_triton") is None and SRC.is_dir():
        sys.path.insert(0, str(SRC))
    from resnext_triton.checkout import run_main

    return run_main(__file__, "resnext_triton.client.cli")


if __name__ == "__main__":
    sys.exit(_main())
