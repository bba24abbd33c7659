#!/usr/bin/env python3
"""Search instance count x max batch size x queue delay on this host: ``resnext_triton.bench.config_search``.

Runs from a checkout without installing the package: ``python bench/config_search.py --help``.
"""

import sys

from _launch import run

if __name__ == "__main__":
    sys.exit(run("resnext_triton.bench.config_search"))
