"""What the launchers in this folder share: run a ``resnext_triton.bench`` command from a checkout.

The package is imported as installed, or from ``src/`` beside this folder when it is not.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def run(module: str) -> int:
    """Call ``main()`` of ``module`` (a dotted name in ``resnext_triton.bench``); returns its exit status.

    An interpreter without the project's dependencies hands over to ``.venv/bin/python`` (or says
    what to run): ``resnext_triton.checkout.run_main``.
    """
    if importlib.util.find_spec("resnext_triton") is None and SRC.is_dir():
        sys.path.insert(0, str(SRC))
    from resnext_triton.checkout import run_main

    return run_main(sys.argv[0], module)
