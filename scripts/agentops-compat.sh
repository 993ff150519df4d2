#!/usr/bin/env bash
# The AgentOps SDK compatibility suite: tests/agentops run with the real `agentops` from
# PyPI against the agl-agentops binary, once per SDK family, each in its own virtualenv:
#   .venv-agentops-0421  agentops==0.4.21 (background auth) + agentlightning==0.3.0
#   .venv-agentops-0413  agentops==0.4.13 (authenticates inside init())
# A venv is rebuilt only when its requirements file (or the Python version) changes.
# The forwarding test also starts an agl-store.
#
# Usage: ./scripts/agentops-compat.sh [pytest args]
#   AGL_AGENTOPS_BIN  agl-agentops binary (default: target/debug/agl-agentops)
#   AGL_STORE_BIN     agl-store binary    (default: target/debug/agl-store)
#   PYTHON            interpreter for the venvs (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."

export AGL_AGENTOPS_BIN="${AGL_AGENTOPS_BIN:-$PWD/target/debug/agl-agentops}"
export AGL_STORE_BIN="${AGL_STORE_BIN:-$PWD/target/debug/agl-store}"
for bin in "$AGL_AGENTOPS_BIN" "$AGL_STORE_BIN"; do
  if [ ! -x "$bin" ]; then
    echo "missing binary $bin: run cargo build -p agl-agentops -p agl-store first" >&2
    exit 1
  fi
done
# litellm (pulled in by agentlightning) would otherwise fetch its cost map from the internet.
export LITELLM_LOCAL_MODEL_COST_MAP=True
PYTHON="${PYTHON:-python3}"

# shellcheck source=lib/venv.sh
. scripts/lib/venv.sh

for family in 0421 0413; do
  dir=".venv-agentops-$family"
  venv "$dir" "tests/agentops/requirements-$family.txt"
  printf '\n==> agentops %s\n' "$("$dir/bin/python" -c 'from importlib.metadata import version; print(version("agentops"))')"
  "$dir/bin/python" -m pytest -q -p no:cacheprovider tests/agentops "$@"
done
