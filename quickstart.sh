#!/usr/bin/env bash
# The whole job in one command: bootstrap .venv, export the model (when the repository holds
# none), start Triton with ./deploy.sh, and classify a sample photo with client/classify.py.
#
#   ./quickstart.sh [--weights ngc|random|PATH] [any ./deploy.sh up option]
#
# The default, --weights ngc, downloads NVIDIA's pretrained checkpoint; --weights random works
# fully offline (an untrained model: the pipeline runs, the labels are meaningless).
# Stop the server afterwards with ./deploy.sh stop.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

grpc_port=8001
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --grpc-port) grpc_port="${args[i + 1]:-8001}" ;;
    --grpc-port=*) grpc_port="${args[i]#*=}" ;;
  esac
done

python3 scripts/bootstrap.py
./deploy.sh up "$@"
photo="$(.venv/bin/python -c 'from resnext_triton.samples import sample_photos; print(sample_photos()[0])')"
printf '\n$ python client/classify.py %s -u 127.0.0.1:%s\n' "$photo" "$grpc_port"
.venv/bin/python client/classify.py "$photo" -u "127.0.0.1:$grpc_port"
printf '\nTriton keeps running: ./deploy.sh status | logs | stop\n'
