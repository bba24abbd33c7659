#!/usr/bin/env bash
# Launch, stop and inspect Triton Inference Server serving model_repository/.
#
#   ./deploy.sh [up] [--local|--docker] [--weights W] [--http-port N] [--grpc-port N]
#               [--metrics-port N] [--bind ADDR] [--timeout S] [--dry-run]
#   ./deploy.sh stop|status|logs [--local|--docker] [-n LINES]
#
# Docker mode (a Docker engine with the NVIDIA runtime): `docker compose up` of docker-compose.yml,
# the NGC Triton image on the GPU; its one-shot `export` job builds the TensorRT plan first.
# Local mode (anything else, e.g. a CPU-only host): the pip-installed Triton of .venv through
# `python -m resnext_triton.triton.server`, with CPU stand-ins for the onnxruntime/pytorch backends.
# If the repository holds no exported model, local mode runs the exporter first.
#
# Environment: RESNEXT_TRITON_MODEL_REPOSITORY (default ./model_repository),
# RESNEXT_TRITON_STATE_DIR (default ./.triton: pid, ports, log, admin token),
# TRITON_BIND_ADDRESS (default 127.0.0.1), RESNEXT_TRITON_PYTHON (default ./.venv/bin/python).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${RESNEXT_TRITON_PYTHON:-$ROOT/.venv/bin/python}"
REPO="${RESNEXT_TRITON_MODEL_REPOSITORY:-$ROOT/model_repository}"
STATE_DIR="${RESNEXT_TRITON_STATE_DIR:-$ROOT/.triton}"
COMPOSE_FILE="$ROOT/docker-compose.yml"
TOKEN_FILE="repository-api-token"

command="up"
mode="auto"
weights="ngc"
http_port=8000
grpc_port=8001
metrics_port=8002
bind="${TRITON_BIND_ADDRESS:-127.0.0.1}"
timeout=""
lines=50
dry_run=0

usage() {
  cat <<EOF
Usage: ./deploy.sh [up] [options]      start Triton (exports the model first if the repository has none)
       ./deploy.sh stop|status|logs     stop it, show its endpoints and models, print its log

Mode (default: docker when 'docker info' shows the NVIDIA runtime, else local):
  --local            the pip-installed Triton of .venv on this host (CPU)
  --docker           docker compose with the NGC Triton image on the GPU

Options for up:
  --weights W        weights for the export: 'ngc' (default), 'random' or a checkpoint PATH
  --http-port N      HTTP port (default 8000)
  --grpc-port N      gRPC port (default 8001)
  --metrics-port N   metrics port (default 8002)
  --bind ADDR        address the ports bind to (default \$TRITON_BIND_ADDRESS or 127.0.0.1)
  --timeout S        seconds to wait for readiness (default 180 local, 1800 docker: TensorRT build)
  --dry-run          print the commands instead of running them
Options for logs:
  -n, --lines N      lines to print (default 50)

Environment: RESNEXT_TRITON_MODEL_REPOSITORY (default ./model_repository),
RESNEXT_TRITON_STATE_DIR (default ./.triton), TRITON_BIND_ADDRESS, RESNEXT_TRITON_PYTHON.
EOF
}

die() {
  echo "deploy.sh: error: $*" >&2
  exit 1
}

usage_error() {
  echo "deploy.sh: $*" >&2
  echo "Try './deploy.sh --help'." >&2
  exit 2
}

# Print a command (dry run) or run it.
run() {
  if [ "$dry_run" -eq 1 ]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

need_value() {
  [ "$#" -ge 2 ] && [ -n "$2" ] || usage_error "option $1 needs a value"
}

need_number() {
  [[ "$2" =~ ^[0-9]+$ ]] || usage_error "option $1 needs a number, got '$2'"
}

parse_args() {
  local first=1
  while [ "$#" -gt 0 ]; do
    case "$1" in
      up | stop | status | logs)
        [ "$first" -eq 1 ] || usage_error "the command ($1) must come first"
        command="$1"
        ;;
      --local) mode="local" ;;
      --docker) mode="docker" ;;
      --weights) need_value "$@"; weights="$2"; shift ;;
      --http-port) need_value "$@"; need_number "$1" "$2"; http_port="$2"; shift ;;
      --grpc-port) need_value "$@"; need_number "$1" "$2"; grpc_port="$2"; shift ;;
      --metrics-port) need_value "$@"; need_number "$1" "$2"; metrics_port="$2"; shift ;;
      --bind) need_value "$@"; bind="$2"; shift ;;
      --timeout) need_value "$@"; need_number "$1" "$2"; timeout="$2"; shift ;;
      -n | --lines) need_value "$@"; need_number "$1" "$2"; lines="$2"; shift ;;
      --dry-run) dry_run=1 ;;
      -h | --help) usage; exit 0 ;;
      *) usage_error "unknown argument '$1'" ;;
    esac
    first=0
    shift
  done
}

docker_has_nvidia() {
  command -v docker >/dev/null 2>&1 || return 1
  local runtimes
  runtimes="$(docker info --format '{{json .Runtimes}}' 2>/dev/null)" || return 1
  [[ "$runtimes" == *nvidia* ]]
}

resolve_mode() {
  case "$mode" in
    local) ;;
    docker)
      command -v docker >/dev/null 2>&1 || die "--docker: the docker command is not installed"
      docker info >/dev/null 2>&1 || die "--docker: no Docker engine answers (is the daemon running?)"
      docker_has_nvidia || die "--docker: the Docker engine has no NVIDIA runtime (install the NVIDIA Container Toolkit), or use --local"
      ;;
    auto)
      if [ "$command" != "up" ] && [ -f "$STATE_DIR/server.json" ]; then
        mode="local"
      elif docker_has_nvidia; then
        mode="docker"
      else
        mode="local"
      fi
      ;;
  esac
}

# True if some model directory holds a numbered version directory.
has_exported_model() {
  local dir
  for dir in "$REPO"/*/[0-9]*/; do
    [ -d "$dir" ] && [ -f "$(dirname "$dir")/config.pbtxt" ] && return 0
  done
  return 1
}

need_python() {
  [ -x "$PYTHON" ] || die "no Python at $PYTHON: run 'python3 scripts/bootstrap.py' first (or set RESNEXT_TRITON_PYTHON)"
}

server() {
  run "$PYTHON" -m resnext_triton.triton.server --state-dir "$STATE_DIR" "$@"
}

export_if_needed() {
  if has_exported_model; then
    return 0
  fi
  echo "deploy.sh: $REPO holds no exported model; exporting TorchScript and ONNX (weights: $weights)"
  run "$PYTHON" "$ROOT/export/export.py" --weights "$weights" --formats torchscript,onnx --out "$REPO" ||
    die "the export failed (see above); fix it or pass --weights random for an offline demo"
}

up_local() {
  need_python
  export_if_needed
  echo "deploy.sh: starting the local Triton (CPU, state in $STATE_DIR)"
  server start --model-repository "$REPO" --host "$bind" --http-port "$http_port" \
    --grpc-port "$grpc_port" --metrics-port "$metrics_port" --timeout "${timeout:-180}"
}

# The admin token guarding the model-repository API, shared by local and docker mode.
admin_token() {
  local file="$STATE_DIR/$TOKEN_FILE"
  if [ ! -s "$file" ]; then
    mkdir -p "$STATE_DIR"
    (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$file")
  fi
  tr -d ' \n' <"$file"
}

compose() {
  run docker compose -f "$COMPOSE_FILE" "$@"
}

compose_env() {
  export TRITON_BIND_ADDRESS="$bind" TRITON_HTTP_PORT="$http_port" TRITON_GRPC_PORT="$grpc_port"
  export TRITON_METRICS_PORT="$metrics_port" TRITON_MODEL_REPOSITORY="$REPO" RESNEXT_WEIGHTS="$weights"
  TRITON_ADMIN_TOKEN="$(admin_token)"
  export TRITON_ADMIN_TOKEN
}

url_host() {
  case "$bind" in
    0.0.0.0 | "") echo "127.0.0.1" ;;
    *:*) echo "[$bind]" ;;
    *) echo "$bind" ;;
  esac
}

up_docker() {
  compose_env
  local host deadline
  host="$(url_host)"
  [ "$dry_run" -eq 1 ] || command -v curl >/dev/null 2>&1 || die "docker mode needs curl to wait for readiness"
  echo "deploy.sh: docker compose up (NGC Triton on the GPU; the export job builds missing models first)"
  compose up -d || die "docker compose up failed; see: ./deploy.sh logs --docker"
  [ "$dry_run" -eq 0 ] || return 0
  deadline=$((SECONDS + ${timeout:-1800}))
  until curl -fsS "http://$host:$http_port/v2/health/ready" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "deploy.sh: error: Triton was not ready after ${timeout:-1800} s; last lines of its log:" >&2
      docker compose -f "$COMPOSE_FILE" logs --tail 40 export triton >&2 || true
      exit 1
    fi
    if docker compose -f "$COMPOSE_FILE" ps -a --format '{{.Service}} {{.State}} {{.ExitCode}}' 2>/dev/null |
      grep -Eq '^(export exited [1-9]|triton (exited|restarting))'; then
      echo "deploy.sh: error: a container exited; last lines of its log:" >&2
      docker compose -f "$COMPOSE_FILE" logs --tail 40 export triton >&2 || true
      exit 1
    fi
    sleep 5
  done
  print_docker_endpoints "$host"
}

print_docker_endpoints() {
  local host="$1"
  echo "Triton is ready (docker compose)"
  echo "  HTTP     http://$host:$http_port"
  echo "  gRPC     $host:$grpc_port"
  echo "  metrics  http://$host:$metrics_port/metrics"
  echo "  models   $(curl -fsS -X POST -H "admin-token: $(admin_token)" \
    "http://$host:$http_port/v2/repository/index" 2>/dev/null || echo '(index unavailable)')"
}

main() {
  parse_args "$@"
  resolve_mode
  case "$mode:$command" in
    local:up) up_local ;;
    local:stop) need_python; server stop ;;
    local:status) need_python; server status ;;
    local:logs) need_python; server logs --lines "$lines" ;;
    docker:up) up_docker ;;
    docker:stop) compose_env; compose down ;;
    docker:status) compose_env; compose ps -a ;;
    docker:logs) compose_env; compose logs --tail "$lines" export triton ;;
  esac
}

main "$@"
