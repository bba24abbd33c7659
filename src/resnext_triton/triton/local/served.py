"""Which versions of a model running Triton servers on this host serve (so that pruning spares them).

Every tritonserver process names its repositories on its command line (``--model-repository``),
and its HTTP endpoint (``--http-address``, ``--http-port``). A server serves a model directory
when one of its repositories holds that directory, or (the local launcher's serving view) a
directory whose ``config.pbtxt`` is the same file. Such a server is asked which versions it has
loaded (``/v2/models/<name>``). A server that serves the model but cannot be asked (HTTP off, in
another network namespace such as a container, not answering) makes the answer unknown.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from resnext_triton.triton.local import probes
from resnext_triton.triton.local.procs import pids
from resnext_triton.triton.local.state import client_host, cmdline

log = logging.getLogger(__name__)

_DEFAULT_HTTP_PORT = "8000"


def _options(argv: list[str]) -> dict[str, list[str]]:
    """``--name=value`` and ``--name value`` options of a command line, by name."""
    found: dict[str, list[str]] = {}
    args = iter(argv[1:])
    for arg in args:
        if not arg.startswith("--"):
            continue
        name, eq, value = arg.partition("=")
        if not eq:
            value = next(args, "")
        found.setdefault(name, []).append(value)
    return found


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _holds(pid: int, repository: str, model_dir: Path) -> bool:
    """True if the repository (as process ``pid`` sees its file system) holds ``model_dir``."""
    candidates = [Path(repository) / model_dir.name]
    root = Path(f"/proc/{pid}/root")
    if os.access(root, os.R_OK):
        candidates.append(root / repository.lstrip("/") / model_dir.name)
    for candidate in candidates:
        if _same(candidate, model_dir) or _same(candidate / "config.pbtxt", model_dir / "config.pbtxt"):
            return True
    return False


def _other_netns(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    except OSError:
        return False  # unreadable: assume the host's network


BUSY_STATES = ("READY", "LOADING", "UNLOADING")


def loaded_versions(http_url: str, model: str) -> set[int] | None:
    """Versions of ``model`` a server has loaded or is loading (None if it does not answer).

    The repository index also shows versions being loaded; where it is restricted (an
    explicit-mode server with an admin token), the model metadata lists the ready ones.
    """
    index = probes.repository_index(http_url)
    if index is None:
        return probes.model_versions(http_url, model)
    return {
        int(entry["version"])
        for entry in index
        if entry["name"] == model and entry.get("state") in BUSY_STATES and str(entry.get("version", "")).isdigit()
    }


def served_versions(model_dir: Path) -> tuple[set[int], list[str]]:
    """The versions of ``model_dir`` that running tritonservers have loaded.

    Returns:
        (versions, servers that serve the model but could not be asked: when not empty, the
        versions are incomplete and nothing should be deleted).
    """
    model_dir = model_dir.resolve()
    versions: set[int] = set()
    unknown: list[str] = []
    for pid in pids():
        argv = cmdline(pid)
        if not argv or not argv[0].endswith("tritonserver"):
            continue
        options = _options(argv)
        repositories = options.get("--model-repository", []) + options.get("--model-store", [])
        if not any(_holds(pid, repo, model_dir) for repo in repositories):
            continue
        host = client_host(options.get("--http-address", ["0.0.0.0"])[-1])
        port = options.get("--http-port", [_DEFAULT_HTTP_PORT])[-1]
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        loaded = None
        if options.get("--allow-http", ["true"])[-1].lower() not in ("false", "0") and not _other_netns(pid):
            loaded = loaded_versions(url, model_dir.name)
        if loaded is None:
            unknown.append(f"tritonserver pid {pid} ({url})")
        else:
            versions |= loaded
    return versions, unknown
