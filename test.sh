#!/usr/bin/env bash
# Run every check of the project: ruff, mypy, shellcheck, hadolint, the Compose file, then pytest
# (unit and integration tiers; integration tests start a real Triton on 127.0.0.1).
# Bootstraps .venv first. Extra arguments go to pytest, e.g. ./test.sh -m "not slow" -x
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

python3 scripts/bootstrap.py
venv=.venv/bin

step() { printf '\n== %s\n' "$*"; }

step "ruff"
"$venv/ruff" check .
step "mypy"
"$venv/mypy"
step "shellcheck"
mapfile -t scripts < <(git ls-files '*.sh' deploy.sh .ci/run 2>/dev/null | sort -u)
[ "${#scripts[@]}" -gt 0 ] || scripts=(deploy.sh test.sh quickstart.sh .ci/run)
"$venv/shellcheck" "${scripts[@]}"
step "hadolint (Dockerfiles)"
"$venv/hadolint" --failure-threshold warning export/Dockerfile serve/Dockerfile client/Dockerfile
step "docker-compose.yml (Docker Compose CLI, no daemon needed)"
"$venv/docker-compose" -f docker-compose.yml config -q
echo "docker-compose.yml is valid"
step "pytest"
status=0
"$venv/python" -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests" >&2
fi
exit "$status"
