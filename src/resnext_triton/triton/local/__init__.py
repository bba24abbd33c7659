"""Run a real Triton Inference Server locally, without Docker, on a CPU-only host, and keep it serving.

The ``nvidia-pytriton`` wheel carries Triton Inference Server with only its Python backend. This
package gives it a backend directory holding that Python backend and the CPU stand-ins for the
``onnxruntime`` and ``pytorch`` backends (``triton/backends/``), and runs it with
``--model-config-name=cpu`` in poll mode over a *serving view*: a directory of symlinks to the
models of the repository this host can serve, so newly exported versions go live by themselves
and no model load/unload API (and no admin token) exists.

A small *supervisor* process owns tritonserver: it restarts it with backoff when it dies, reloads
a model whose backend process died (Triton itself keeps calling it ready), removes the processes
and ``/dev/shm`` regions a crash leaves, and records all of it in ``server.json``.

Everything lives in a *state directory* (default ``<project>/.triton/``): the backend directory,
the serving view (``serving/``), ``launch.json``, ``server.json`` and ``triton.log``. Servers bind
to 127.0.0.1 unless told otherwise.

Modules: ``errors`` (the ServerError tree), ``install`` (the wheel's Triton, its environment, the
backend directory), ``state`` (state directory, ports, ``server.json``, lock), ``probes`` (HTTP
probes), ``launch`` (ServerConfig and the tritonserver command line), ``view`` (the serving view),
``procs`` (a state directory's processes and shm regions), ``health`` (readiness checked against
the processes), ``supervisor`` (the supervising process), ``control`` (start/stop/status),
``served`` (which versions running servers serve), ``launcher`` (LocalTriton) and ``cli``.

Library use (tests use it too)::

    with LocalTriton(ServerConfig(repo=Path("model_repository"), http_port=0)) as server:
        print(server.http_url, server.models)

Command line: ``python -m resnext_triton.triton.local {start,stop,status,logs} --help``.
"""

from resnext_triton.triton.local.cli import EXIT_ERROR, EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE, build_parser, main
from resnext_triton.triton.local.control import ServerStatus, StartResult, StopResult, start, status, stop
from resnext_triton.triton.local.errors import (
    AddressError,
    DependencyError,
    ModelLoadError,
    NoModelsError,
    PortInUseError,
    ServerError,
    ServerExitedError,
    StartTimeoutError,
)
from resnext_triton.triton.local.install import (
    TritonInstallation,
    check_dependencies,
    find_installation,
    prepare_backends,
    server_env,
)
from resnext_triton.triton.local.launch import ServerConfig, build_command, check_ports
from resnext_triton.triton.local.launcher import LocalTriton
from resnext_triton.triton.local.probes import is_ready, model_states, server_id, server_version
from resnext_triton.triton.local.state import (
    LOG_FILE,
    STATE_FILE,
    ServerState,
    default_repository,
    default_state_dir,
    free_port,
    log_tail,
    running_state,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_NOT_RUNNING",
    "EXIT_OK",
    "EXIT_USAGE",
    "LOG_FILE",
    "STATE_FILE",
    "AddressError",
    "DependencyError",
    "LocalTriton",
    "ModelLoadError",
    "NoModelsError",
    "PortInUseError",
    "ServerConfig",
    "ServerError",
    "ServerExitedError",
    "ServerState",
    "ServerStatus",
    "StartResult",
    "StartTimeoutError",
    "StopResult",
    "TritonInstallation",
    "build_command",
    "build_parser",
    "check_dependencies",
    "check_ports",
    "default_repository",
    "default_state_dir",
    "find_installation",
    "free_port",
    "is_ready",
    "log_tail",
    "main",
    "model_states",
    "prepare_backends",
    "running_state",
    "server_env",
    "server_id",
    "server_version",
    "start",
    "status",
    "stop",
]
