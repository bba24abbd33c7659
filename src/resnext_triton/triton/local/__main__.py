"""``python -m resnext_triton.triton.local {start,stop,status,logs}``."""

import sys

from resnext_triton.triton.local.cli import main

sys.exit(main())
