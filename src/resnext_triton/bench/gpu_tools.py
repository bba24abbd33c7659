"""Where the GPU harness finds Triton and perf_analyzer: the unpacked GPU carry, or this environment's own.

:func:`carried_tools` unpacks the archive ``bench/gpu/prepare.py`` wrote (checked against its
manifest: size, sha256, Python version); :func:`local_tools` takes the nvidia-pytriton
installation and the perf_analyzer of the running environment (a CPU host set up by
``scripts/bootstrap.py``). :func:`check_tools` then asks ``ldd`` what tritonserver, the Python
backend stub and perf_analyzer cannot find on this host, and fixes what it can:

* the stub's ``libpythonX.Y.so.1.0``: the running interpreter's ``LIBDIR`` when it has one;
* a library the host lacks that the carry holds under the wheel's mangled name (perf_analyzer's
  ``libssl.so.3`` / ``libcrypto.so.3``): a link under the plain name in a private directory.

What is still missing then is an error that names it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys
import sysconfig
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from resnext_triton.bench.gpu_carry import CLIENT_DIR, MANIFEST_NAME, PYTHON_DIR, SERVER, TRITON_DIR, WHEEL_LIBS
from resnext_triton.triton.local.install import TritonInstallation, library_problems, missing_libraries, server_env


class ToolsError(RuntimeError):
    """Triton or perf_analyzer cannot run on this host (a missing carry, stub or library)."""


@dataclass(frozen=True)
class HarnessTools:
    """tritonserver, perf_analyzer and the environments they run in."""

    install: TritonInstallation
    perf_analyzer: Path
    server_env: dict[str, str]
    perf_env: dict[str, str]
    origin: str
    python_path: tuple[Path, ...] = ()
    """Carried pure-Python packages (tritonclient) to import, when this Python lacks them."""
    fixes: tuple[str, ...] = field(default=())


def python_version() -> str:
    """``3.12`` for the running interpreter."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _prepend(env: dict[str, str], key: str, *paths: Path) -> dict[str, str]:
    parts = [str(p) for p in paths] + [p for p in env.get(key, "").split(os.pathsep) if p]
    return {**env, key: os.pathsep.join(dict.fromkeys(parts))}


def unpack_carry(carry: Path, work: Path) -> Path:
    """Check the carry against its manifest and unpack it into ``work/carry``; returns that directory.

    Raises:
        ToolsError: if the carry is missing, damaged, or made for another Python version.
    """
    try:
        manifest = json.loads((carry / MANIFEST_NAME).read_text(encoding="utf-8"))
        archive = carry / manifest["archive"]
        data = archive.read_bytes()
    except (OSError, ValueError, KeyError) as exc:
        raise ToolsError(f"no usable GPU carry in {carry} ({exc}); make one with: "
                         f"python bench/gpu/prepare.py --out {carry}") from exc
    if len(data) != manifest.get("archive_bytes") or hashlib.sha256(data).hexdigest() != manifest.get("archive_sha256"):
        raise ToolsError(f"{archive} does not match {carry / MANIFEST_NAME} (cut short in transfer?); prepare it again")
    if manifest.get("python") != python_version():
        raise ToolsError(f"the carry holds the Python backend stub for Python {manifest.get('python')}, this is "
                         f"Python {python_version()}: python bench/gpu/prepare.py --python {python_version()}")
    target = work / "carry"
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:xz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(target, filter="data")
        else:  # Python without extraction filters; the archive is our own
            tar.extractall(target)
    return target


def carried_tools(carry: Path, work: Path) -> HarnessTools:
    """The tools of an unpacked carry (see :func:`unpack_carry`)."""
    root = unpack_carry(carry, work)
    server = root / TRITON_DIR / SERVER
    install = TritonInstallation(
        binary=server / "bin" / "tritonserver",
        lib_dir=root / TRITON_DIR / WHEEL_LIBS,
        python_backend=server / "backends" / "python",
        stub=server / "python_backend_stubs" / python_version() / "triton_python_backend_stub",
    )
    perf_env = _prepend(dict(os.environ), "LD_LIBRARY_PATH", root / CLIENT_DIR / "lib")
    return HarnessTools(install, root / CLIENT_DIR / "bin" / "perf_analyzer", server_env(install), perf_env,
                        origin=f"carry {carry} (unpacked in {root})", python_path=(root / PYTHON_DIR,))


def local_tools() -> HarnessTools:
    """This environment's nvidia-pytriton installation and perf_analyzer.

    Raises:
        ToolsError: if either is missing.
    """
    from resnext_triton.bench.perf import find_perf_analyzer, perf_env
    from resnext_triton.bench.perf_csv import PerfAnalyzerError
    from resnext_triton.triton.local.errors import DependencyError
    from resnext_triton.triton.local.install import find_installation

    try:
        install = find_installation()
        binary = find_perf_analyzer()
    except (DependencyError, PerfAnalyzerError) as exc:
        raise ToolsError(f"{exc} (or pass --carry DIR from bench/gpu/prepare.py)") from exc
    return HarnessTools(install, binary, server_env(install), perf_env(), origin="this environment")


def _mangled(lib_dir: Path, soname: str) -> Path | None:
    """The wheel's copy of ``soname`` (``libssl.so.3`` -> ``libssl-57118d4e.so.3``), if it bundles one."""
    stem, sep, version = soname.partition(".so")
    if not sep:
        return None
    pattern = re.compile(rf"{re.escape(stem)}-[0-9a-f]{{8}}\.so{re.escape(version)}(\.[0-9.]+)?$")
    return next((p for p in sorted(lib_dir.iterdir()) if pattern.match(p.name)), None) if lib_dir.is_dir() else None


def _libpython_dir(soname: str) -> Path | None:
    libdir = sysconfig.get_config_var("LIBDIR")
    return Path(libdir) if libdir and (Path(libdir) / soname).is_file() else None


def check_tools(tools: HarnessTools, fallback_dir: Path) -> HarnessTools:
    """The tools with every shared library they need found, or an error naming what is missing.

    Raises:
        ToolsError: if a binary is missing or a library cannot be found nor supplied.
    """
    for path in (tools.install.binary, tools.install.stub, tools.perf_analyzer):
        if not path.is_file():
            raise ToolsError(f"{path} is missing")
    server, perf, fixes = tools.server_env, tools.perf_env, []
    for binary in (tools.install.binary, tools.install.stub, tools.perf_analyzer):
        is_perf = binary == tools.perf_analyzer
        for soname in missing_libraries(binary, perf if is_perf else server):
            found = _libpython_dir(soname) if soname.startswith("libpython") else None
            if found is not None:
                server = _prepend(server, "LD_LIBRARY_PATH", found)
                fixes.append(f"{soname} from {found}")
                continue
            copy = _mangled(tools.install.lib_dir, soname)
            if copy is not None:
                fallback_dir.mkdir(parents=True, exist_ok=True)
                link = fallback_dir / soname
                link.unlink(missing_ok=True)
                link.symlink_to(copy)
                perf, server = (_prepend(env, "LD_LIBRARY_PATH", fallback_dir) for env in (perf, server))
                fixes.append(f"{soname} -> {copy.name}")
    problems = library_problems(
        [(tools.install.binary, server), (tools.install.stub, server), (tools.perf_analyzer, perf)]
    )
    if problems:
        hint = ""
        if any("libpython" in p for p in problems):
            hint = (f"; the Python backend stub needs the shared libpython{python_version()}, which this Python "
                    f"({sys.executable}) does not have: install it (Debian/Ubuntu: libpython{python_version()})")
        raise ToolsError("missing shared libraries: " + "; ".join(problems) + hint)
    return replace(tools, server_env=server, perf_env=perf, fixes=tuple(fixes))


def use_carried_python(tools: HarnessTools) -> tuple[Path, ...]:
    """Put the carried tritonclient on ``sys.path`` when this Python lacks it; returns what was added.

    A tritonclient that is importable only through an earlier unpacked copy of the carry
    (:func:`resnext_triton.bench.gpu_carry.carried_python_path`) counts as lacking: the exporter
    subprocesses need the carry's path too.
    """
    spec = importlib.util.find_spec("tritonclient")
    if spec is not None and "resnext-carry-python-" not in str(spec.origin):
        return ()
    added = tuple(p for p in tools.python_path if p.is_dir())
    sys.path[:0] = [str(p) for p in added]
    return added
