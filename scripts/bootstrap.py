#!/usr/bin/env python3
"""Create or refresh the project's virtualenv (.venv) with every pinned dependency.

Idempotent: a stamp file holds a hash of pyproject.toml, so a second run with nothing changed
returns at once. Uses only the standard library (it runs before anything is installed).

    python3 scripts/bootstrap.py [--venv .venv] [--force] [--no-apt]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    """Print a bootstrap step to stderr."""
    print(f"[bootstrap] {message}", file=sys.stderr, flush=True)


def run(cmd: list[str]) -> None:
    """Run a command, exiting with its message on failure."""
    log("$ " + " ".join(cmd))
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        sys.exit(f"[bootstrap] failed ({result.returncode}): {' '.join(cmd)}")


def missing_libraries(names: list[str]) -> list[str]:
    """The Debian packages of ``names`` that are not installed."""
    if shutil.which("dpkg-query") is None:
        return []
    missing = []
    for name in names:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True, check=False
        ).stdout
        if "install ok installed" not in out:
            missing.append(name)
    return missing


def install_apt(names: list[str]) -> None:
    """Install the Debian packages Triton's Python backend and perf_analyzer link against."""
    missing = missing_libraries(names)
    if not missing:
        return
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            sys.exit(
                f"[bootstrap] these system packages are needed and installing them needs root: {' '.join(missing)}\n"
                f"  run: sudo apt-get install -y {' '.join(missing)}   (then run this command again)"
            )
        prefix = [sudo]
    else:
        prefix = []
    run([*prefix, "apt-get", "update", "-qq"])
    run([*prefix, "apt-get", "install", "-y", "-qq", *missing])


def install_perf_analyzer(python: Path, requirement: str, venv_dir: Path) -> None:
    """Copy perf_analyzer out of a tritonclient wheel that carries a glibc-2.34 build."""
    target = venv_dir / "bin" / "perf_analyzer"
    if target.exists():
        return
    with tempfile.TemporaryDirectory() as tmp:
        run([str(python), "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", tmp, requirement])
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith("/data/bin/perf_analyzer"))
            partial = target.with_suffix(".partial")
            partial.write_bytes(zf.read(member))
            partial.chmod(0o755)
            partial.replace(target)
    log(f"perf_analyzer installed at {target}")


def link_stubs(python: Path, venv_dir: Path) -> None:
    """Copy TensorRT's stub packages (which lack py.typed) into .venv/stubs for mypy.

    The generated stubs name some plugin-method parameters ``in``, a Python keyword; those are
    renamed ``in_`` in the copy so that mypy can parse the file.
    """
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    stubs = venv_dir / "stubs"
    shutil.rmtree(stubs, ignore_errors=True)
    for name in ("tensorrt", "tensorrt_bindings"):
        for source in (Path(site) / name).glob("*.pyi"):
            target = stubs / name / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
            fixed = [_fix_stub_def(ln) if ln.lstrip().startswith("def ") else ln for ln in lines]
            target.write_text("".join(fixed), encoding="utf-8")


def _fix_stub_def(line: str) -> str:
    """Make one generated ``def`` line valid Python: no keyword parameter names, defaults in order."""
    line = re.sub(r"([(,] ?)in:", r"\1in_:", line)
    start, end = line.find("("), line.rfind(") ->")
    if start < 0 or end < 0:
        return line
    params, depth, current = [], 0, ""
    for char in line[start + 1 : end]:
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        if char == "," and depth == 0:
            params.append(current)
            current = ""
        else:
            current += char
    params.append(current)
    seen_default = False
    for i, param in enumerate(params):
        if "=" in param:
            seen_default = True
        elif seen_default and param.strip() and not param.strip().startswith("*"):
            params[i] = param + " = ..."
    return line[: start + 1] + ",".join(params) + line[end:]


def main(argv: list[str] | None = None) -> int:
    """Create the virtualenv and install everything pinned in pyproject.toml."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv", help="virtualenv directory (default: .venv)")
    parser.add_argument("--force", action="store_true", help="reinstall even if nothing changed")
    parser.add_argument("--no-apt", action="store_true", help="do not install Debian packages")
    args = parser.parse_args(argv)

    pyproject = (ROOT / "pyproject.toml").read_bytes()
    tool = tomllib.loads(pyproject.decode())["tool"]["resnext-triton"]
    digest = hashlib.sha256(pyproject + Path(__file__).read_bytes()).hexdigest()
    venv_dir: Path = args.venv.resolve()
    stamp = venv_dir / ".bootstrap-stamp"
    python = venv_dir / "bin" / "python"

    if not args.no_apt:
        install_apt(tool["apt"])
    if not args.force and stamp.exists() and stamp.read_text().strip() == digest and python.exists():
        return 0
    if not python.exists():
        log(f"creating virtualenv {venv_dir}")
        venv.EnvBuilder(with_pip=True).create(venv_dir)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    # torch==2.13.0 resolves to the CPU build where the platform provides it; see README.
    run([*pip, "install", "-q", "-e", f"{ROOT}[dev]"])
    run([*pip, "install", "-q", "--no-deps", *tool["no-deps"]])
    install_perf_analyzer(python, tool["perf-analyzer-wheel"], venv_dir)
    link_stubs(python, venv_dir)
    stamp.write_text(digest + "\n")
    log(f"ready: {venv_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
