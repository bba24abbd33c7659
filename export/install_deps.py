#!/usr/bin/env python3
"""Install the project's export dependencies into an NGC PyTorch image without touching its stack.

The NGC image's own torch and TensorRT are the ones the Triton image of the same release was built
against, so they must stay: a second torch from the registry would be another CUDA build, and its
libraries would lose to the image's on LD_LIBRARY_PATH. This script (run by export/Dockerfile):

* never installs torch (the project's torch pin is for CPU hosts);
* keeps every requirement the image already holds, at the image's version, and says so;
* installs the missing ones at the project's pins, with the image's versions of its core stack
  (torch, TensorRT, numpy, the CUDA libraries) as constraints, so pip cannot replace them. If the
  pins cannot be met beside that stack, pip fails and names the conflict: the build stops there.

    python3 export/install_deps.py [--pyproject pyproject.toml] [--dry-run]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path

SKIP = {"torch"}
PROTECTED = re.compile(r"^(torch.*|tensorrt.*|numpy|nvidia-.*|triton|pytorch-triton|cuda-.*|onnx)$")


def canonical(name: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    """The distribution name of a requirement string (``tritonclient[grpc]==2.73.0`` → ``tritonclient``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    if not match:
        raise ValueError(f"cannot parse requirement {req!r}")
    return canonical(match.group(1))


def export_requirements(pyproject: Path) -> list[str]:
    """The project's runtime dependencies plus its ``export`` extra."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["export"]]


def plan(requirements: list[str], installed: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    """Split requirements: (to install, kept from the image (messages), constraints for pip)."""
    install: list[str] = []
    kept: list[str] = []
    for req in requirements:
        name = requirement_name(req)
        if name in SKIP:
            kept.append(f"{name}: the image's {installed.get(name, '(none)')} (project pin {req} is for CPU hosts)")
        elif name in installed:
            kept.append(f"{name}: the image's {installed[name]} (project asks {req})")
        else:
            install.append(req)
    constraints = [f"{name}=={version}" for name, version in sorted(installed.items()) if PROTECTED.match(name)]
    return install, kept, constraints


def installed_distributions() -> dict[str, str]:
    """{canonical name: version} of what this interpreter has installed."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), dist.version)
    return found


def main(argv: list[str] | None = None) -> int:
    """Print the plan and run pip (unless ``--dry-run``); pip's exit status is returned."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the pip command only")
    args = parser.parse_args(argv)
    install, kept, constraints = plan(export_requirements(args.pyproject), installed_distributions())
    for line in kept:
        print(f"install_deps: keeping {line}")
    if not install:
        print("install_deps: nothing to install")
        return 0
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(constraints) + "\n")
    command = [sys.executable, "-m", "pip", "install", "--constraint", f.name, *install]
    print("install_deps: " + " ".join(command))
    print("install_deps: constraints (the image's core stack): " + ", ".join(constraints))
    if args.dry_run:
        return 0
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
