"""Run the project's command scripts (``client/``, ``bench/``, ``export/``) from a checkout.

Standard library only: a launcher imports this module before it knows whether the project's
dependencies are there. :func:`run_main` imports a command's module and calls its ``main()``; when
the interpreter lacks a dependency (``python3 client/classify.py`` outside the virtual
environment), it runs the same command again with the checkout's ``.venv/bin/python`` if there is
one, or prints the command to run instead of a ``ModuleNotFoundError`` traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

REEXEC_ENV = "RESNEXT_TRITON_REEXEC"
"""Set in the environment of a command started again under ``.venv`` (it is never started twice)."""
EXIT_MISSING_DEPENDENCIES = 2


def venv_python(root: Path) -> Path | None:
    """The checkout's virtual-environment interpreter, if it exists."""
    python = root / ".venv" / "bin" / "python"
    return python if python.is_file() and os.access(python, os.X_OK) else None


def _missing_dependency(exc: ModuleNotFoundError) -> bool:
    """Whether a failed import is a missing third-party package (not a bug in this project)."""
    return bool(exc.name) and not str(exc.name).startswith("resnext_triton")


def run_main(script: str | os.PathLike[str], module: str) -> int:
    """Call ``main()`` of ``module``; returns its exit status.

    Args:
        script: the launcher's own path (``__file__``): a folder of the checkout holds it, and the
            launcher is started again under the checkout's ``.venv`` (once) when needed.
        module: the dotted name of the command's module.

    Returns:
        The command's exit status, or :data:`EXIT_MISSING_DEPENDENCIES` (after printing the
        command to run) when a dependency is missing and ``.venv`` cannot supply it.
    """
    root = Path(script).resolve().parents[1]
    try:
        entry = importlib.import_module(module).main
    except ModuleNotFoundError as exc:
        if not _missing_dependency(exc):
            raise
        python = venv_python(root)
        if python is not None and not os.environ.get(REEXEC_ENV):
            sys.stdout.flush()
            sys.stderr.flush()
            os.environ[REEXEC_ENV] = "1"
            os.execv(python, [str(python), os.fspath(script), *sys.argv[1:]])
        print(_explain(exc, script, root, python), file=sys.stderr)
        return EXIT_MISSING_DEPENDENCIES
    return int(entry())


def _explain(exc: ModuleNotFoundError, script: str | os.PathLike[str], root: Path, python: Path | None) -> str:
    here = Path(script).resolve()
    command = here.relative_to(root) if here.is_relative_to(root) else here
    bootstrap = root / "scripts" / "bootstrap.py"
    if python is not None:
        fix = f"{root / '.venv'} lacks it too: run `python3 {bootstrap}` again"
    else:
        fix = f"create the project's virtual environment with `python3 {bootstrap}`"
    return (
        f"error: {command} needs the project's dependencies, and {sys.executable} lacks {exc.name!r}; "
        f"{fix}, then run `.venv/bin/python {command} ...` from {root}"
    )
