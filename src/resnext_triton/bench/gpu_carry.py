"""The GPU carry: what a bare GPU machine lacks to serve and measure the model, as one small archive.

The GPU machine has Python with CUDA PyTorch, onnx and onnxruntime, but no Triton, no
perf_analyzer, no tritonclient and no network, and a call to it carries at most 64 MiB. The carry
takes, straight out of the pinned wheels (``pyproject.toml``):

* ``nvidia-pytriton``: ``tritonserver``, the Python backend (``libtriton_python.so`` and
  ``triton_python_backend_utils.py``), the backend stub for ONE Python version (the GPU
  machine's, 3.12), and the bundled libraries these load (followed through ``DT_NEEDED``; the
  copy of libpython 3.13 the wheel also bundles is loaded by none of them and left out);
* ``tritonclient`` 2.51.0: ``perf_analyzer`` and the pure-Python ``tritonclient`` package (the
  exporter writes configs with its ``model_config_pb2``);
* ``libcudart.so.12`` (``nvidia-cuda-runtime-cu12``) and ``libb64.so.0d`` (the system's, else
  the copy the pytriton wheel bundles), which perf_analyzer links.

Layout inside the archive: ``triton/`` (the wheel's own relative paths, so its RPATHs hold),
``client/bin/perf_analyzer`` with ``client/lib/``, ``python/tritonclient/``. A manifest
(``carry.json``) beside the archive lists every file; :mod:`resnext_triton.bench.gpu_tools`
unpacks it on the GPU machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import lzma
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from resnext_triton.bench.gpu_elf import closure

ROOT = Path(__file__).resolve().parents[3]
CARRY_LIMIT_BYTES = 64 * 2**20
ARCHIVE_NAME = "gpu-carry.tar.xz"
MANIFEST_NAME = "carry.json"
DEFAULT_PYTHON = "3.12"
DEFAULT_XZ_PRESET = 6
SYSTEM_LIBB64 = Path("/usr/lib/x86_64-linux-gnu/libb64.so.0d")
SERVER = "pytriton/tritonserver"
WHEEL_LIBS = "nvidia_pytriton.libs"
TRITON_DIR, CLIENT_DIR, PYTHON_DIR = "triton", "client", "python"
EXECUTABLE = 0o755


class CarryError(RuntimeError):
    """The carry cannot be planned or written (a wheel is missing, or it does not fit)."""


@dataclass(frozen=True)
class CarryFile:
    """One file of the carry: its path in the archive and where its bytes come from."""

    arcname: str
    size: int
    mode: int
    source: Path
    member: str | None = None
    """The member of the wheel ``source``; None when ``source`` is the file itself."""

    @contextlib.contextmanager
    def reader(self) -> Iterator[IO[bytes]]:
        """The file's bytes as a stream (closed with the ``with`` block)."""
        if self.member is None:
            with open(self.source, "rb") as stream:
                yield stream
        else:
            with zipfile.ZipFile(self.source) as archive, archive.open(self.member) as stream:
                yield stream


@dataclass(frozen=True)
class CarryPlan:
    """Every file of the carry, for one Python version."""

    files: tuple[CarryFile, ...]
    python: str
    wheels: tuple[str, ...]

    @property
    def total_bytes(self) -> int:
        """Bytes before compression."""
        return sum(f.size for f in self.files)

    def fingerprint(self, preset: int) -> str:
        """A digest of the plan and the compression preset (an unchanged plan is not written again)."""
        items = [self.python, preset, list(self.wheels), [(f.arcname, f.size, f.mode) for f in self.files]]
        return hashlib.sha256(json.dumps(items).encode()).hexdigest()

    def names(self, prefix: str) -> list[str]:
        """Archive paths under ``prefix``."""
        return [f.arcname for f in self.files if f.arcname.startswith(prefix)]


def wheel_requirements(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """The pinned requirements of the three wheels, read from ``pyproject.toml`` (the one place for pins).

    Raises:
        CarryError: if a pin is missing.
    """
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    tool = data["tool"]["resnext-triton"]
    pins = [*tool.get("no-deps", []), tool.get("perf-analyzer-wheel", ""),
            *data["project"]["optional-dependencies"].get("bench", [])]
    found = {}
    wanted = (("pytriton", "nvidia-pytriton"), ("client", "tritonclient"), ("cudart", "nvidia-cuda-runtime-cu12"))
    for key, name in wanted:
        pin = next((p for p in pins if p.startswith(f"{name}==")), None)
        if pin is None:
            raise CarryError(f"pyproject.toml pins no {name}==VERSION")
        found[key] = pin
    return found


def _wheel_file(dest: Path, requirement: str) -> Path | None:
    name, version = requirement.split("==")
    return next(iter(sorted(dest.glob(f"{name.replace('-', '_')}-{version}-*.whl"))), None)


def fetch_wheels(requirements: dict[str, str], dest: Path, *, download: bool = True,
                 echo: Callable[[str], None] = print) -> dict[str, Path]:
    """The wheel file of each requirement: found in ``dest``, else fetched with ``pip download --no-deps``.

    pip takes the wheel from its own cache when it has it; PyPI is asked otherwise.

    Raises:
        CarryError: if a wheel is not in ``dest`` and cannot be downloaded.
    """
    dest.mkdir(parents=True, exist_ok=True)
    wheels = {}
    for key, requirement in requirements.items():
        path = _wheel_file(dest, requirement)
        if path is None and download:
            echo(f"downloading {requirement} into {dest} (pip download --no-deps)")
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                   "-d", str(dest), requirement]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            path = _wheel_file(dest, requirement)
            if path is None:
                tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
                raise CarryError(f"cannot download {requirement}: {tail or f'pip exited {proc.returncode}'}")
        if path is None:
            raise CarryError(f"no wheel of {requirement} in {dest} (downloading is off)")
        wheels[key] = path
    return wheels


def _member(archive: zipfile.ZipFile, suffix: str) -> zipfile.ZipInfo:
    found = [i for i in archive.infolist() if i.filename == suffix or i.filename.endswith("/" + suffix)]
    if len(found) != 1:
        raise CarryError(f"{Path(str(archive.filename)).name} holds {len(found)} files named {suffix}, expected 1")
    return found[0]


def _from_wheel(wheel: Path, info: zipfile.ZipInfo, arcname: str, mode: int | None = None) -> CarryFile:
    executable = (info.external_attr >> 16) & 0o111
    return CarryFile(arcname, info.file_size, mode or (EXECUTABLE if executable else 0o644), wheel, info.filename)


def _triton_files(wheel: Path, python: str) -> list[CarryFile]:
    with zipfile.ZipFile(wheel) as archive:
        roots = {f"{SERVER}/bin/tritonserver": EXECUTABLE,
                 f"{SERVER}/backends/python/libtriton_python.so": 0o644,
                 f"{SERVER}/backends/python/triton_python_backend_utils.py": 0o644,
                 f"{SERVER}/python_backend_stubs/{python}/triton_python_backend_stub": EXECUTABLE}
        names = set(archive.namelist())
        missing = [name for name in roots if name not in names]
        if missing:
            stubs = sorted({n.split("/")[3] for n in names if n.startswith(f"{SERVER}/python_backend_stubs/")})
            raise CarryError(f"{wheel.name} lacks {', '.join(missing)} (stubs for Python {', '.join(stubs)})")
        libs = {n.rsplit("/", 1)[1]: n for n in names if n.startswith(f"{WHEEL_LIBS}/") and not n.endswith("/")}
        elf_roots = [n for n in roots if not n.endswith(".py")]
        loaded = closure(elf_roots, lambda name: archive.read(libs.get(name, name)), set(libs))
        files = [_from_wheel(wheel, archive.getinfo(n), f"{TRITON_DIR}/{n}", mode) for n, mode in roots.items()]
        files += [_from_wheel(wheel, archive.getinfo(libs[n]), f"{TRITON_DIR}/{libs[n]}") for n in loaded]
    return files


def _client_files(client: Path, cudart: Path, pytriton: Path, libb64: Path | None) -> list[CarryFile]:
    files = []
    with zipfile.ZipFile(client) as archive:
        files.append(_from_wheel(client, _member(archive, "data/bin/perf_analyzer"),
                                 f"{CLIENT_DIR}/bin/perf_analyzer", EXECUTABLE))
        for info in archive.infolist():
            _, sep, rel = info.filename.partition(".data/purelib/")
            if sep and rel.startswith("tritonclient/") and not info.is_dir() and "__pycache__" not in rel:
                files.append(_from_wheel(client, info, f"{PYTHON_DIR}/{rel}"))
    with zipfile.ZipFile(cudart) as archive:
        files.append(_from_wheel(cudart, _member(archive, "lib/libcudart.so.12"), f"{CLIENT_DIR}/lib/libcudart.so.12"))
    if libb64 is not None and libb64.is_file():
        files.append(CarryFile(f"{CLIENT_DIR}/lib/libb64.so.0d", libb64.stat().st_size, 0o644, libb64))
    else:  # the same library, bundled in the pytriton wheel under a mangled name
        with zipfile.ZipFile(pytriton) as archive:
            bundled = next((i for i in archive.infolist() if Path(i.filename).name.startswith("libb64-")), None)
            if bundled is None:
                raise CarryError(f"no libb64.so.0d at {libb64} nor in {pytriton.name}: apt-get install libb64-0d")
            files.append(_from_wheel(pytriton, bundled, f"{CLIENT_DIR}/lib/libb64.so.0d"))
    return files


def plan_carry(wheels: dict[str, Path], *, python: str = DEFAULT_PYTHON,
               libb64: Path | None = SYSTEM_LIBB64) -> CarryPlan:
    """Every file the GPU machine needs from the wheels (``pytriton``, ``client``, ``cudart``) and libb64.

    Raises:
        CarryError: if a wheel lacks a needed file (a stub for ``python``, perf_analyzer, libcudart).
        resnext_triton.bench.gpu_elf.ElfError: if a binary in the wheel is not a readable ELF file.
    """
    files = _triton_files(wheels["pytriton"], python)
    files += _client_files(wheels["client"], wheels["cudart"], wheels["pytriton"], libb64)
    return CarryPlan(tuple(files), python, tuple(sorted(p.name for p in wheels.values())))


@dataclass(frozen=True)
class CarryResult:
    """A written (or already up-to-date) carry."""

    archive: Path
    archive_bytes: int
    uncompressed_bytes: int
    seconds: float
    reused: bool


def write_carry(plan: CarryPlan, out: Path, *, preset: int = DEFAULT_XZ_PRESET) -> CarryResult:
    """Write ``out/gpu-carry.tar.xz`` and ``out/carry.json``; an up-to-date carry is kept as it is."""
    out.mkdir(parents=True, exist_ok=True)
    archive, manifest_path = out / ARCHIVE_NAME, out / MANIFEST_NAME
    fingerprint = plan.fingerprint(preset)
    try:
        old = json.loads(manifest_path.read_text(encoding="utf-8"))
        if old.get("fingerprint") == fingerprint and archive.stat().st_size == old.get("archive_bytes"):
            return CarryResult(archive, old["archive_bytes"], plan.total_bytes, 0.0, reused=True)
    except (OSError, ValueError):
        pass
    start = time.perf_counter()
    tmp = out / f".{ARCHIVE_NAME}.tmp"
    with lzma.open(tmp, "wb", preset=preset) as packed, tarfile.open(fileobj=packed, mode="w") as tar:
        for item in plan.files:
            info = tarfile.TarInfo(item.arcname)
            info.size, info.mode, info.mtime = item.size, item.mode, 0
            with item.reader() as stream:
                tar.addfile(info, stream)
    tmp.replace(archive)
    digest, size = hashlib.sha256(archive.read_bytes()).hexdigest(), archive.stat().st_size
    manifest = {
        "format": 1, "python": plan.python, "fingerprint": fingerprint, "archive": ARCHIVE_NAME,
        "archive_bytes": size, "archive_sha256": digest, "uncompressed_bytes": plan.total_bytes,
        "xz_preset": preset, "wheels": list(plan.wheels), "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": [{"path": f.arcname, "bytes": f.size} for f in plan.files],
    }
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return CarryResult(archive, size, plan.total_bytes, time.perf_counter() - start, False)


def travelling_bytes(root: Path = ROOT, *, exclude: Path | None = None) -> int | None:
    """Bytes of the working tree that travels with a device call (tracked and untracked-not-ignored files).

    Files under ``exclude`` are not counted. None when git cannot tell.
    """
    try:
        proc = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                              capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    skip = exclude.resolve() if exclude is not None else None
    total = 0
    for rel in filter(None, proc.stdout.decode("utf-8", "replace").split("\0")):
        path = (root / rel).resolve()
        if skip is not None and path.is_relative_to(skip):
            continue
        if path.is_file():
            total += path.stat().st_size
    return total


def carried_python_path(argv: list[str]) -> Path | None:
    """Unpack the carry's pure-Python packages early when this Python lacks tritonclient.

    The run step's own imports need ``tritonclient`` (the config writer), which a bare GPU machine
    has only in the carry; the rest of the carry is checked and unpacked later. Returns the
    directory put on ``sys.path``, or None when nothing was needed or no ``--carry`` was given.
    """
    import tempfile

    try:
        import tritonclient.grpc.model_config_pb2  # noqa: F401 -- what the config writer needs
    except ImportError:
        pass
    else:
        return None
    carry = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--carry"), None)
    carry = carry or next((a.split("=", 1)[1] for a in argv if a.startswith("--carry=")), None)
    if carry is None or not (Path(carry) / ARCHIVE_NAME).is_file():
        return None
    dest = Path(tempfile.mkdtemp(prefix="resnext-carry-python-"))
    with tarfile.open(Path(carry) / ARCHIVE_NAME, "r:xz") as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(f"{PYTHON_DIR}/") and m.isfile()]
        archive.extractall(dest, members=members, filter="data")
    sys.path.insert(0, str(dest / PYTHON_DIR))
    return dest / PYTHON_DIR

