#!/usr/bin/env python3
"""Export ResNeXt to a Triton model repository: ``python export/export.py --help``."""

import sys
from pathlib import Path

try:
    import resnext_triton  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from resnext_triton.checkout import run_main  # .venv/bin/python takes over when dependencies are missing

if __name__ == "__main__":
    sys.exit(run_main(__file__, "resnext_triton.exporters.cli"))
