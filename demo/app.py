#!/usr/bin/env python3
"""Serve the demo page (Gradio) over Triton: a thin launcher for ``resnext_triton.demo.cli``.

Runs from a checkout without installing the package: ``python demo/app.py --port 7860``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
if importlib.util.find_spec("resnext_triton") is None and SRC.is_dir():
    sys.path.insert(0, str(SRC))

from resnext_triton.demo.cli import build_parser, main  # noqa: E402

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
