#!/usr/bin/env python3
"""The GPU harness's run step (on the GPU machine): ``resnext_triton.bench.gpu_run``; ``--help`` lists its options.

Runs from a checkout without installing the package (``src/`` is put on the path).
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("resnext_triton") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from resnext_triton.bench.gpu_carry import carried_python_path

carried_python_path(sys.argv[1:])  # a bare GPU machine has tritonclient only in the carry

from resnext_triton.bench.gpu_run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
