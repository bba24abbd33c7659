"""Run a real Triton Inference Server locally, without Docker, on a CPU-only host.

The ``nvidia-pytriton`` wheel carries Triton Inference Server with only its Python backend. This
package gives it a backend directory holding that Python backend and the CPU stand-ins for the
``onnxruntime`` and ``pytorch`` backends (``triton/backends/``), then starts it with
``--model-config-name=cpu`` in explicit model-control mode, loading every model of the repository
that can run on a CPU.

Everything the server needs lives in a *state directory* (default ``<project>/.triton/``): the
backend directory, ``server.json`` (pid, ports, models), ``triton.log`` and the token that guards
the model-repository, trace and logging APIs (``repository-api-token``; to load or unload models send
it as the HTTP header ``admin-token``, or as the gRPC metadata ``triton-grpc-protocol-admin-token``).
Servers bind to 127.0.0.1 unless told otherwise.

Modules: ``errors`` (the ServerError tree), ``install`` (the wheel's Triton, its environment, the
backend directory), ``state`` (state directory, ports, ``server.json``, token, lock), ``probes``
(HTTP probes), ``launch`` (ServerConfig and the tritonserver command line), ``supervise``
(start/stop/status), ``launcher`` (LocalTriton) and ``cli``.

Library use (tests use it too)::

    with LocalTriton(ServerConfig(repo=Path("model_repository"), http_port=0)) as server:
        print(server.http_url, server.models)

Command line: ``python -m resnext_triton.triton.local {start,stop,status,logs} --help``.
"""

from resnext_triton.triton.local.cli import EXIT_ERROR, EXIT_NOT_RUNNING, EXIT_OK, build_parser, main
from resnext_triton.triton.local.errors import (
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
from resnext_triton.triton.local.probes import is_ready, model_states, server_version
from resnext_triton.triton.local.state import (
    ADMIN_HEADER,
    GRPC_ADMIN_HEADER,
    LOG_FILE,
    STATE_FILE,
    TOKEN_FILE,
    ServerState,
    default_repository,
    default_state_dir,
    free_port,
    log_tail,
    repository_token,
    running_state,
)
from resnext_triton.triton.local.supervise import ServerStatus, StartResult, start, status, stop

__all__ = [
    "ADMIN_HEADER",
    "EXIT_ERROR",
    "EXIT_NOT_RUNNING",
    "EXIT_OK",
    "GRPC_ADMIN_HEADER",
    "LOG_FILE",
    "STATE_FILE",
    "TOKEN_FILE",
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
    "repository_token",
    "running_state",
    "server_env",
    "server_version",
    "start",
    "status",
    "stop",
]
