#!/usr/bin/env bash
# The agl-vllm compatibility suite: tests/vllm run with the official agentlightning 0.3.0
# (its LlmProxyTraceToTriplet adapter, LightningStoreClient and store server, and the
# openai SDK as the agent) against the agl-vllm proxy in front of the vLLM test double,
# as a sidecar and behind the launcher, recording into agl-store and into the official
# store. No GPU: the double (`agl-vllm fake-vllm`) stands in for vLLM.
# The venv .venv-vllm is rebuilt only when the requirements file (or Python) changes.
#
# Usage: ./scripts/vllm-compat.sh [pytest args]
#   AGL_VLLM_BIN_PATH  agl-vllm binary  (default: target/debug/agl-vllm)
#   AGL_STORE_BIN      agl-store binary (default: target/debug/agl-store)
#   PYTHON             interpreter for the venv (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."

export AGL_VLLM_BIN_PATH="${AGL_VLLM_BIN_PATH:-$PWD/target/debug/agl-vllm}"
export AGL_STORE_BIN="${AGL_STORE_BIN:-$PWD/target/debug/agl-store}"
for bin in "$AGL_VLLM_BIN_PATH" "$AGL_STORE_BIN"; do
  if [ ! -x "$bin" ]; then
    echo "missing binary $bin: run cargo build -p agl-vllm -p agl-store first" >&2
    exit 1
  fi
done
# litellm (pulled in by agentlightning) would otherwise fetch its cost map from the internet.
export LITELLM_LOCAL_MODEL_COST_MAP=True
PYTHON="${PYTHON:-python3}"

dir=.venv-vllm
# shellcheck source=lib/venv.sh
. scripts/lib/venv.sh
venv "$dir" tests/vllm/requirements.txt

printf '\n==> agentlightning %s\n' "$("$dir/bin/python" -c 'from importlib.metadata import version; print(version("agentlightning"))')"
"$dir/bin/python" -m pytest -q -p no:cacheprovider tests/vllm "$@"
