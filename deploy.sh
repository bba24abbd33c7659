#!/usr/bin/env bash
# Launch, stop and inspect Triton Inference Server serving model_repository/.
#
#   ./deploy.sh [up] [--local|--docker] [--weights W] [--http-port N] [--grpc-port N]
#               [--metrics-port N] [--bind ADDR] [--timeout S] [--dry-run]
#   ./deploy.sh stop|status|logs [--local|--docker] [-n LINES]
#
# Docker mode (a Docker engine that can hand out NVIDIA GPUs): the one-shot `export` job of
# docker-compose.yml builds the models (skipped when every model is exported and the plans match)
# within --timeout ($EXPORT_FORMATS picks the formats, default torchscript,onnx,tensorrt),
# then the NGC Triton image starts on the GPU; deploy.sh waits for its health check and fails fast
# when it exits or restarts.
# Local mode (anything else, e.g. a CPU-only host): the pip-installed Triton of .venv through
# `python -m resnext_triton.triton.local`, with CPU stand-ins for the onnxruntime/pytorch backends,
# in poll mode (new exports go live by themselves) under a supervisor that restarts it if it dies.
# If the repository holds no exported model, local mode runs the exporter first.
#
# Environment: RESNEXT_TRITON_MODEL_REPOSITORY (default ./model_repository),
# RESNEXT_TRITON_STATE_DIR (default ./.triton: pids, ports, log, serving view),
# TRITON_BIND_ADDRESS (default 127.0.0.1), RESNEXT_TRITON_PYTHON (default ./.venv/bin/python).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${RESNEXT_TRITON_PYTHON:-$ROOT/.venv/bin/python}"
REPO="${RESNEXT_TRITON_MODEL_REPOSITORY:-$ROOT/model_repository}"
STATE_DIR="${RESNEXT_TRITON_STATE_DIR:-$ROOT/.triton}"
COMPOSE_FILE="$ROOT/docker-compose.yml"

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

Mode (default: docker when the Docker engine can hand out NVIDIA GPUs, else local):
  --local            the pip-installed Triton of .venv on this host (CPU)
  --docker           docker compose with the NGC Triton image on the GPU

Options for up:
  --weights W        weights for the export: 'ngc' (default), 'random' or a checkpoint PATH
                     (docker mode mounts the file read-only into the export job)
  --http-port N      HTTP port (default 8000)
  --grpc-port N      gRPC port (default 8001)
  --metrics-port N   metrics port (default 8002)
  --bind ADDR        address the ports bind to (default \$TRITON_BIND_ADDRESS or 127.0.0.1)
  --timeout S        seconds to wait for readiness (default 180 local, where it also bounds a
                     model's recovery before a restart; 1800 docker, a total limit covering the
                     export job's TensorRT build and Triton's start)
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

need_port() {
  need_number "$1" "$2"
  [ "$((10#$2))" -le 65535 ] || usage_error "option $1 needs a port number (0-65535; 0 picks a free port), got '$2'"
}

need_positive() {
  need_number "$1" "$2"
  [ "$((10#$2))" -ge 1 ] || usage_error "option $1 needs a number of seconds of at least 1, got '$2'"
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
      --http-port) need_value "$@"; need_port "$1" "$2"; http_port="$2"; shift ;;
      --grpc-port) need_value "$@"; need_port "$1" "$2"; grpc_port="$2"; shift ;;
      --metrics-port) need_value "$@"; need_port "$1" "$2"; metrics_port="$2"; shift ;;
      --bind) need_value "$@"; bind="$2"; shift ;;
      --timeout) need_value "$@"; need_positive "$1" "$2"; timeout="$2"; shift ;;
      -n | --lines) need_value "$@"; need_number "$1" "$2"; lines="$2"; shift ;;
      --dry-run) dry_run=1 ;;
      -h | --help) usage; exit 0 ;;
      *) usage_error "unknown argument '$1'" ;;
    esac
    first=0
    shift
  done
}

# True if the Docker engine can hand out NVIDIA GPUs: a registered nvidia runtime, NVIDIA CDI
# devices, or the NVIDIA Container Toolkit's hook, which the engine's built-in `nvidia` device
# driver (compose `deploy.resources.reservations.devices`) uses without any runtime registered.
docker_has_nvidia() {
  command -v docker >/dev/null 2>&1 || return 1
  local info
  info="$(docker info --format '{{json .Runtimes}} {{json .CDISpecDirs}} {{json .DiscoveredDevices}}' 2>/dev/null)" ||
    return 1
  [[ "$info" == *nvidia* ]] && return 0
  command -v nvidia-container-runtime-hook >/dev/null 2>&1
}

resolve_mode() {
  case "$mode" in
    local) ;;
    docker)
      command -v docker >/dev/null 2>&1 || die "--docker: the docker command is not installed"
      docker info >/dev/null 2>&1 || die "--docker: no Docker engine answers (is the daemon running?)"
      docker_has_nvidia || die "--docker: the Docker engine cannot hand out NVIDIA GPUs (no nvidia runtime, CDI device or nvidia-container-runtime-hook: install the NVIDIA Container Toolkit), or use --local"
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

# Fail when the repository exists but cannot be read: it would look empty and be exported over.
check_repo_readable() {
  [ -e "$REPO" ] || return 0
  [ -d "$REPO" ] || die "the model repository $REPO is not a directory"
  local dir
  for dir in "$REPO" "$REPO"/*/; do
    [ -d "$dir" ] || continue
    if [ ! -r "$dir" ] || [ ! -x "$dir" ]; then
      die "cannot read $dir (permission denied): fix its permissions, or point RESNEXT_TRITON_MODEL_REPOSITORY at a repository you can read"
    fi
  done
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
  run "$PYTHON" -m resnext_triton.triton.local --state-dir "$STATE_DIR" "$@"
}

export_if_needed() {
  check_repo_readable
  if has_exported_model; then
    return 0
  fi
  echo "deploy.sh: $REPO holds no exported model; exporting TorchScript and ONNX (weights: $weights)"
  local hint=""
  if [ "$weights" = "ngc" ]; then
    hint="; if NVIDIA's checkpoint cannot be downloaded here, pass --weights PATH (a checkpoint you have) or --weights random (untrained, a demo)"
  fi
  run "$PYTHON" "$ROOT/export/export.py" --weights "$weights" --formats torchscript,onnx --out "$REPO" ||
    die "the export failed (see above)$hint"
}

up_local() {
  need_python
  export_if_needed
  echo "deploy.sh: starting the local Triton (CPU, state in $STATE_DIR)"
  server start --model-repository "$REPO" --host "$bind" --http-port "$http_port" \
    --grpc-port "$grpc_port" --metrics-port "$metrics_port" --timeout "${timeout:-180}"
}

compose() {
  run docker compose -f "$COMPOSE_FILE" "$@"
}

# The variables docker-compose.yml reads: ports, repository, the calling user, the weights.
compose_env() {
  export TRITON_BIND_ADDRESS="$bind" TRITON_HTTP_PORT="$http_port" TRITON_GRPC_PORT="$grpc_port"
  export TRITON_METRICS_PORT="$metrics_port" TRITON_MODEL_REPOSITORY="$REPO"
  RESNEXT_UID="$(id -u)" RESNEXT_GID="$(id -g)"
  RESNEXT_TRITON_CACHE_DIR="${RESNEXT_TRITON_CACHE:-$HOME/.cache/resnext_triton}"
  export RESNEXT_UID RESNEXT_GID RESNEXT_TRITON_CACHE_DIR
  case "$weights" in
    ngc | random) export RESNEXT_WEIGHTS="$weights" ;;
    *)
      [ -f "$weights" ] || die "--weights $weights: no such file (docker mode mounts a checkpoint file into the export job)"
      local file
      file="$(cd "$(dirname "$weights")" && pwd)/$(basename "$weights")"
      export RESNEXT_WEIGHTS_FILE="$file" RESNEXT_WEIGHTS_NAME="${file##*/}" RESNEXT_WEIGHTS="/weights/${file##*/}"
      ;;
  esac
}

url_host() {
  case "$bind" in
    0.0.0.0 | "") echo "127.0.0.1" ;;
    *:*) echo "[$bind]" ;;
    *) echo "$bind" ;;
  esac
}

docker_logs_and_die() {
  echo "deploy.sh: error: $*; last lines of the logs:" >&2
  docker compose -f "$COMPOSE_FILE" logs --tail 40 export triton >&2 || true
  exit 1
}

# The export job, bounded by what is left of --timeout. Directories are made first so that Docker
# does not create them as root.
run_export() {
  local deadline="$1" name status=0
  [ "$dry_run" -eq 1 ] || mkdir -p "$REPO" "$RESNEXT_TRITON_CACHE_DIR"
  name="resnext-triton-export-$$"
  echo "deploy.sh: export job (NGC PyTorch image; skipped when every model is exported and the plans match this GPU and TensorRT)"
  run timeout "$((deadline - SECONDS))" docker compose -f "$COMPOSE_FILE" run --rm --name "$name" export || status=$?
  case "$status" in
    0) ;;
    124)
      docker rm -f "$name" >/dev/null 2>&1 || true
      die "the export job did not finish within --timeout ${timeout:-1800} s (a TensorRT build takes minutes: raise --timeout)"
      ;;
    *) die "the export job failed (exit $status); its output is above" ;;
  esac
}

# Wait for the triton container's health check; fail at once when it exits or restarts.
wait_healthy() {
  local deadline="$1" host="$2" cid state restarts health
  cid="$(docker compose -f "$COMPOSE_FILE" ps -q triton)" || true
  [ -n "$cid" ] || docker_logs_and_die "docker compose started no triton container"
  while :; do
    read -r state restarts health < <(docker inspect --format \
      '{{.State.Status}} {{.RestartCount}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$cid" 2>/dev/null ||
      echo "gone 0 none")
    if [ "$health" = "healthy" ]; then
      return 0
    fi
    case "$state" in
      exited | dead | gone) docker_logs_and_die "the triton container $state" ;;
    esac
    [ "${restarts:-0}" -eq 0 ] || docker_logs_and_die "the triton container restarted $restarts time(s) (crash loop)"
    [ "$SECONDS" -lt "$deadline" ] || docker_logs_and_die "Triton was not healthy after ${timeout:-1800} s"
    sleep 2
  done
}

up_docker() {
  compose_env
  local host deadline
  host="$(url_host)"
  deadline=$((SECONDS + ${timeout:-1800}))
  run_export "$deadline"
  echo "deploy.sh: starting Triton (docker compose, NGC image on the GPU)"
  compose up -d --no-deps triton || docker_logs_and_die "docker compose up failed"
  [ "$dry_run" -eq 0 ] || return 0
  wait_healthy "$deadline" "$host"
  print_docker_endpoints "$host"
}

print_docker_endpoints() {
  local host="$1" models="(curl is not installed)"
  if command -v curl >/dev/null 2>&1; then
    models="$(curl -fsS -X POST "http://$host:$http_port/v2/repository/index" 2>/dev/null || echo '(index unavailable)')"
  fi
  echo "Triton is ready (docker compose; new exports are picked up by repository polling)"
  echo "  HTTP     http://$host:$http_port"
  echo "  gRPC     $host:$grpc_port"
  echo "  metrics  http://$host:$metrics_port/metrics"
  echo "  models   $models"
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
