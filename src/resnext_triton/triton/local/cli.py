"""The ``python -m resnext_triton.triton.local {start,stop,status,logs}`` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path

from resnext_triton.triton.local.errors import ServerError
from resnext_triton.triton.local.launch import (
    DEFAULT_GRPC_PORT,
    DEFAULT_HTTP_PORT,
    DEFAULT_METRICS_PORT,
    DEFAULT_TIMEOUT_S,
    MODEL_CONFIG_NAME,
    ServerConfig,
)
from resnext_triton.triton.local.state import (
    ADMIN_HEADER,
    DEFAULT_HOST,
    ENV_BIND_ADDRESS,
    ENV_MODEL_REPOSITORY,
    ENV_STATE_DIR,
    GRPC_ADMIN_HEADER,
    LOG_FILE,
    TOKEN_FILE,
    ServerState,
    default_repository,
    default_state_dir,
)
from resnext_triton.triton.local.supervise import DEFAULT_STOP_TIMEOUT_S, start, status, stop

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_RUNNING = 3


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m resnext_triton.triton.local`` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m resnext_triton.triton.local",
        description="Run the pip-installed Triton Inference Server locally on a CPU host, with CPU stand-ins "
        "for the onnxruntime and pytorch backends.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="pid, ports, log, backends and the admin token live here "
        f"(default: ${ENV_STATE_DIR} or <project>/.triton)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{start,stop,status,logs}")

    p_start = sub.add_parser("start", help="start Triton (no-op if it already runs) and wait until it is ready")
    p_start.add_argument(
        "--model-repository",
        type=Path,
        default=None,
        help=f"model repository (default: ${ENV_MODEL_REPOSITORY} or <project>/model_repository)",
    )
    p_start.add_argument(
        "--host",
        default=None,
        help=f"address to bind HTTP, gRPC and metrics to (default: ${ENV_BIND_ADDRESS} or {DEFAULT_HOST})",
    )
    p_start.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT, help="HTTP port (default %(default)s)")
    p_start.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT, help="gRPC port (default %(default)s)")
    p_start.add_argument(
        "--metrics-port", type=int, default=DEFAULT_METRICS_PORT, help="metrics port (default %(default)s)"
    )
    p_start.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for readiness (default %(default)s)"
    )
    p_start.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="load only this model (repeatable; default: every model this CPU host can serve)",
    )
    p_start.add_argument("--log-verbose", type=int, default=0, help="Triton's --log-verbose level (default 0)")

    p_stop = sub.add_parser("stop", help="stop the server this state directory started")
    p_stop.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_STOP_TIMEOUT_S,
        help="seconds to wait before killing it (default %(default)s)",
    )
    p_status = sub.add_parser("status", help="is it running and ready, which models are loaded (exit 3 if not running)")
    p_status.add_argument("--json", action="store_true", help="machine-readable output")
    p_logs = sub.add_parser("logs", help="print the end of Triton's log")
    p_logs.add_argument("-n", "--lines", type=int, default=50, help="lines to print (default %(default)s)")
    p_logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C to stop)")
    return parser


def _print_endpoints(state: ServerState, states: dict[str, str]) -> None:
    ready = [m for m, s in states.items() if s == "READY"]
    print(f"  HTTP     {state.http_url}")
    print(f"  gRPC     {state.grpc_url}")
    print(f"  metrics  {state.metrics_url}")
    print(f"  READY    {', '.join(ready) if ready else '(none)'}")
    for name, model_state in states.items():
        if model_state != "READY":
            reason = state.skipped.get(name, "")
            print(f"  {model_state:<8} {name}" + (f" ({reason})" if reason else ""))
    print(f"  repo     {state.repo} (configs/{MODEL_CONFIG_NAME}.pbtxt)")
    print(f"  log      {state.log_file}")
    token_file = Path(state.state_dir) / TOKEN_FILE
    print(
        f"  admin    load/unload: HTTP header '{ADMIN_HEADER}' (gRPC '{GRPC_ADMIN_HEADER}') = contents of {token_file}"
    )


def _cmd_start(args: argparse.Namespace) -> int:
    config = ServerConfig(
        repo=args.model_repository or default_repository(),
        state_dir=args.state_dir or default_state_dir(),
        host=args.host or os.environ.get(ENV_BIND_ADDRESS) or DEFAULT_HOST,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        timeout_s=args.timeout,
        models=tuple(args.models) if args.models else None,
        log_verbose=args.log_verbose,
    )
    result = start(config)
    state = result.state
    if result.already_running:
        print(f"Triton is already running for {state.state_dir} (pid {state.pid}); not starting another")
        asked = (config.http_port, config.grpc_port, config.metrics_port)
        if asked != (state.http_port, state.grpc_port, state.metrics_port):
            print("  (it keeps its own ports; run `stop` first to change them)")
    else:
        version = f" {state.version}" if state.version else ""
        print(f"Triton Inference Server{version} is ready (pid {state.pid})")
    for name, reason in state.skipped.items():
        if name not in result.model_states:
            print(f"  skipped  {name}: {reason}")
    _print_endpoints(state, result.model_states)
    return EXIT_OK


def _cmd_stop(args: argparse.Namespace) -> int:
    state = stop(args.state_dir, timeout_s=args.timeout)
    if state is None:
        print("Triton is not running")
    else:
        print(f"stopped Triton (pid {state.pid})")
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    info = status(args.state_dir)
    if args.json:
        print(
            json.dumps(
                {
                    "running": info.running,
                    "ready": info.ready,
                    "models": info.model_states,
                    **(
                        {
                            "pid": info.state.pid,
                            "http_url": info.state.http_url,
                            "grpc_url": info.state.grpc_url,
                            "metrics_url": info.state.metrics_url,
                            "log_file": info.state.log_file,
                            "repo": info.state.repo,
                        }
                        if info.state
                        else {}
                    ),
                },
                indent=2,
            )
        )
        return EXIT_OK if info.running else EXIT_NOT_RUNNING
    if info.state is None:
        print("Triton is not running")
        return EXIT_NOT_RUNNING
    uptime = time.time() - info.state.started_at
    print(f"Triton is running (pid {info.state.pid}, up {uptime:.0f} s), {'ready' if info.ready else 'NOT ready'}")
    _print_endpoints(info.state, info.model_states)
    return EXIT_OK if info.ready else EXIT_ERROR


def _cmd_logs(args: argparse.Namespace) -> int:
    path = (args.state_dir or default_state_dir()).resolve() / LOG_FILE
    if not path.is_file():
        print(f"no log at {path} (Triton was never started with this state directory)", file=sys.stderr)
        return EXIT_ERROR
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8", "replace").splitlines()[-args.lines :] if args.lines > 0 else []
        print("\n".join(lines))
        if not args.follow:
            return EXIT_OK
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                chunk = f.read()
                if chunk:
                    sys.stdout.write(chunk.decode("utf-8", "replace"))
                    sys.stdout.flush()
                else:
                    time.sleep(0.5)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 error, 3 status: not running)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("resnext_triton").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    commands = {"start": _cmd_start, "stop": _cmd_stop, "status": _cmd_status, "logs": _cmd_logs}
    try:
        return commands[args.command](args)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.log_tail:
            print(f"--- last lines of Triton's log ---\n{exc.log_tail}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
