"""The Triton installation of the ``nvidia-pytriton`` wheel, its environment, and the backend directory.

The wheel carries Triton Inference Server (``pytriton/tritonserver/bin/``) with only its Python
backend. :func:`prepare_backends` gives it a backend directory holding that Python backend (plus
the stub for the running interpreter's Python version) and the CPU stand-ins for the
``onnxruntime`` and ``pytorch`` backends (``backends/*/model.py`` of this package, each with the
shared base ``backends/_resnext_standin.py`` beside it, since Triton's Python stub imports a
stand-in from its own directory).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from resnext_triton.triton.local.errors import DependencyError
from resnext_triton.triton.local.procs import STUB_NAME, backend_dir

log = logging.getLogger(__name__)

STANDIN_BACKENDS = ("onnxruntime", "pytorch")
STANDIN_BASE = "_resnext_standin.py"


@dataclass(frozen=True)
class TritonInstallation:
    """Where the pip-installed Triton keeps its pieces."""

    binary: Path
    lib_dir: Path
    python_backend: Path
    stub: Path

    @property
    def python_version(self) -> str:
        """The Python version of the stub (that of the running interpreter)."""
        return self.stub.parent.name


def find_installation() -> TritonInstallation:
    """Locate tritonserver, its libraries, the Python backend and the stub for this Python.

    Raises:
        DependencyError: if the nvidia-pytriton wheel or one of its pieces is missing.
    """
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(
            "tritonserver not found: the nvidia-pytriton wheel is not installed in this environment "
            "(run `python3 scripts/bootstrap.py`)"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    root = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstallation(
        binary=root / "bin" / "tritonserver",
        lib_dir=package.parent / "nvidia_pytriton.libs",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
    )
    for what, path in (
        ("tritonserver binary", install.binary),
        ("Triton's libraries", install.lib_dir),
        ("Triton's Python backend", install.python_backend / "libtriton_python.so"),
        (f"the Python backend stub for Python {version}", install.stub),
    ):
        if not path.exists():
            raise DependencyError(f"{what} not found at {path} (reinstall nvidia-pytriton: scripts/bootstrap.py)")
    return install


def server_env(install: TritonInstallation, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for tritonserver: Triton's libraries first, this virtualenv's bin/ first on PATH.

    The Python stub takes its packages from the ``python3`` first on PATH; without the virtualenv
    there, models fail with ModuleNotFoundError.
    """
    env = dict(os.environ if base is None else base)
    lib_path = [str(install.lib_dir)] + [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
    env["LD_LIBRARY_PATH"] = ":".join(lib_path)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = ":".join([bin_dir] + [p for p in env.get("PATH", "").split(":") if p and p != bin_dir])
    return env


def missing_libraries(binary: Path, env: dict[str, str]) -> list[str]:
    """Shared libraries ``binary`` links that the dynamic loader cannot find (empty if ldd is absent)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        log.debug("ldd not found; not checking the shared libraries of %s", binary)
        return []
    proc = subprocess.run([ldd, str(binary)], env=env, capture_output=True, text=True, check=False)
    return sorted({line.split()[0] for line in proc.stdout.splitlines() if "not found" in line})


def library_problems(binaries: list[tuple[Path, dict[str, str]]]) -> list[str]:
    """``"<binary> needs <libraries>"`` for each binary (with its environment) that misses shared libraries."""
    problems = []
    for binary, env in binaries:
        missing = missing_libraries(binary, env)
        if missing:
            problems.append(f"{binary.name} needs {', '.join(missing)}")
    return problems


def check_dependencies(install: TritonInstallation, env: dict[str, str]) -> None:
    """Check that tritonserver and the Python stub find every shared library they link.

    Raises:
        DependencyError: naming the missing libraries and how to install them.
    """
    problems = library_problems([(install.binary, env), (install.stub, env)])
    if problems:
        hint = ""
        if any("libpython" in p for p in problems):
            hint = (
                f"; the Python backend stub links the shared libpython{install.python_version}: install it "
                f"(Debian/Ubuntu: apt-get install libpython{install.python_version})"
            )
        raise DependencyError("missing shared libraries: " + "; ".join(problems) + hint)


def _copy_if_changed(source: Path, target: Path, *, mode: int | None = None) -> None:
    if target.is_file():
        src, dst = source.stat(), target.stat()
        if src.st_size == dst.st_size and int(src.st_mtime) == int(dst.st_mtime):
            return
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copy2(source, tmp)
    if mode is not None:
        tmp.chmod(mode)
    os.replace(tmp, target)


def install_standins(backends: Path) -> Path:
    """Copy the CPU stand-ins into ``backends``: ``<name>/model.py`` with the shared base file beside each.

    Returns:
        ``backends``.
    """
    package_backends = resources.files("resnext_triton.triton").joinpath("backends")
    for name in STANDIN_BACKENDS:
        target_dir = backends / name
        target_dir.mkdir(parents=True, exist_ok=True)
        for source_name, parts in (("model.py", (name, "model.py")), (STANDIN_BASE, (STANDIN_BASE,))):
            with resources.as_file(package_backends.joinpath(*parts)) as source:
                _copy_if_changed(Path(source), target_dir / source_name)
    return backends


def prepare_backends(state_dir: Path, install: TritonInstallation) -> Path:
    """Build ``<state_dir>/backends``: the Python backend with its stub, and the CPU stand-ins.

    Returns:
        The backend directory to pass as ``--backend-directory``.
    """
    backends = backend_dir(state_dir)
    python_dir = backends / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        _copy_if_changed(install.python_backend / name, python_dir / name)
    _copy_if_changed(install.stub, python_dir / STUB_NAME, mode=0o755)
    return install_standins(backends)
