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

from resnext_triton.triton.local.control import DEFAULT_STOP_TIMEOUT_S, ServerStatus, start, status, stop
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
    DEFAULT_HOST,
    ENV_BIND_ADDRESS,
    ENV_MODEL_REPOSITORY,
    ENV_STATE_DIR,
    LOG_FILE,
    VIEW_DIR,
    ServerState,
    default_repository,
    default_state_dir,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0 picks a free one), got {port}")
    return port


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


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
        help="pids, ports, log, backends and the serving view live here "
        f"(default: ${ENV_STATE_DIR} or <project>/.triton)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{start,stop,status,logs}")

    p_start = sub.add_parser(
        "start", help="start a supervised Triton (no-op if it already runs) and wait until it is ready"
    )
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
    p_start.add_argument("--http-port", type=_port, default=DEFAULT_HTTP_PORT, help="HTTP port (default %(default)s)")
    p_start.add_argument("--grpc-port", type=_port, default=DEFAULT_GRPC_PORT, help="gRPC port (default %(default)s)")
    p_start.add_argument(
        "--metrics-port", type=_port, default=DEFAULT_METRICS_PORT, help="metrics port (default %(default)s)"
    )
    p_start.add_argument(
        "--timeout",
        type=_positive,
        default=DEFAULT_TIMEOUT_S,
        help="seconds to wait for readiness, and for a broken model to come back before a restart "
        "(default %(default)s)",
    )
    p_start.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="serve only this model (repeatable; an image pipeline brings its models; "
        "default: every model this CPU host can serve)",
    )
    p_start.add_argument("--log-verbose", type=int, default=0, help="Triton's --log-verbose level (default 0)")

    p_stop = sub.add_parser("stop", help="stop the server this state directory started")
    p_stop.add_argument(
        "--timeout",
        type=_positive,
        default=DEFAULT_STOP_TIMEOUT_S,
        help="seconds to wait before killing it (default %(default)s)",
    )
    p_status = sub.add_parser(
        "status", help="is it running and can it serve, which models, restarts (exit 1 not ready, 3 not running)"
    )
    p_status.add_argument("--json", action="store_true", help="machine-readable output")
    p_logs = sub.add_parser("logs", help="print the end of Triton's log")
    p_logs.add_argument("-n", "--lines", type=int, default=50, help="lines to print (default %(default)s)")
    p_logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C to stop)")
    return parser


def _print_endpoints(state: ServerState, states: dict[str, str], problems: dict[str, str] | None = None) -> None:
    problems = problems or {}
    ready = [m for m, s in states.items() if s == "READY"]
    print(f"  HTTP     {state.http_url}")
    print(f"  gRPC     {state.grpc_url}")
    print(f"  metrics  {state.metrics_url}")
    print(f"  READY    {', '.join(ready) if ready else '(none)'}")
    for name, model_state in states.items():
        if model_state != "READY":
            reason = problems.get(name) or state.skipped.get(name, "")
            print(f"  {model_state:<8} {name}" + (f" ({reason})" if reason else ""))
    for name, reason in state.skipped.items():
        if name not in states:
            print(f"  skipped  {name}: {reason}")
    print(f"  repo     {state.repo} (configs/{MODEL_CONFIG_NAME}.pbtxt)")
    print(f"  serving  {Path(state.state_dir) / VIEW_DIR} (poll mode: new versions go live, no load/unload API)")
    print(f"  log      {state.log_file}")


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
        print(f"Triton Inference Server{version} is ready (pid {state.pid}, supervisor pid {state.supervisor_pid})")
    _print_endpoints(state, result.model_states)
    return EXIT_OK


def _cmd_stop(args: argparse.Namespace) -> int:
    result = stop(args.state_dir, timeout_s=args.timeout)
    if result.state is None:
        print("Triton is not running")
    else:
        print(f"stopped Triton (pid {result.state.pid}, supervisor pid {result.state.supervisor_pid})")
    if result.cleanup:
        print(f"removed what a server of this state directory left: {result.cleanup.describe()}")
    return EXIT_OK


def _status_json(info: ServerStatus) -> str:
    data: dict[str, object] = {"running": info.running, "ready": info.ready, "models": info.model_states,
                               "problems": info.problems, "leftover_processes": info.leftovers}  # fmt: skip
    if info.state is not None:
        st = info.state
        data.update(
            pid=st.pid, supervisor_pid=st.supervisor_pid, server_id=st.server_id, phase=st.phase,
            restarts=st.restarts, model_recoveries=st.recoveries, last_exit=st.last_exit,
            http_url=st.http_url, grpc_url=st.grpc_url, metrics_url=st.metrics_url, log_file=st.log_file,
            repo=st.repo,
        )  # fmt: skip
    return json.dumps(data, indent=2)


def _cmd_status(args: argparse.Namespace) -> int:
    info = status(args.state_dir)
    code = EXIT_NOT_RUNNING if not info.running else EXIT_OK if info.ready else EXIT_ERROR
    if args.json:
        print(_status_json(info))
        return code
    if info.state is None:
        print("Triton is not running")
        if info.leftovers:
            print(f"  {info.leftovers} process(es) of a crashed server remain: `stop` removes them")
        return code
    st = info.state
    uptime = time.time() - (st.server_started_at or st.started_at)
    print(
        f"Triton is running (pid {st.pid}, up {uptime:.0f} s; supervisor pid {st.supervisor_pid}, "
        f"restarts {st.restarts}, model reloads {st.recoveries}), {'ready' if info.ready else 'NOT ready'}"
    )
    if st.last_exit:
        print(f"  last exit: tritonserver {st.last_exit}")
    if "(server)" in info.problems:
        print(f"  problem  {info.problems['(server)']}")
    _print_endpoints(st, info.model_states, info.problems)
    return code


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
    """Run the command line; returns the exit status (0 ok, 1 error or not ready, 2 usage, 3 not running)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("resnext_triton").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    commands = {"start": _cmd_start, "stop": _cmd_stop, "status": _cmd_status, "logs": _cmd_logs}
    try:
        return int(commands[args.command](args))
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.log_tail:
            print(f"--- last lines of Triton's log ---\n{exc.log_tail}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
