#!/usr/bin/env bash
# Compatibility suites: the official agentlightning clients from PyPI (0.3.0 and 0.2.2) against
# a LightningStore server, and agentlightning 1.0.2's clients and controller against upstream
# v1's API (with Python 3.12, which 1.0 needs; skipped, saying so, where none is found).
#
#   ./scripts/compat.sh [pytest args...]
#
# AGL_STORE_BIN       server binary under test (default: target/debug/agl-store)
# AGL_COMPAT_TARGET   ours (default) | official: run the same tests against the official Python
#                     servers of each release, which validates the tests themselves
# AGL_COMPAT_STORAGE  memory (default) | sqlite | postgres: the backend our server runs on
# AGL_COMPAT_PG       with postgres: the libpq connection string of a server to create databases on
#
# AGL_VLLM_BIN        agl-vllm, whose vLLM double (`fake-vllm`) serves the 1.0.2 suite's proxy
#                     calls (default: target/debug/agl-vllm)
# AGL_PYTHON312       the Python 3.12 interpreter for the 1.0.2 suite (default: python3.12 on
#                     PATH, else the newest 3.12 that pyenv has)
#
# Each suite gets its own virtualenv at the repo root (.venv-compat-030, .venv-compat-022,
# .venv-compat-102), created on first use and re-created when its pinned requirements change.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

export LITELLM_LOCAL_MODEL_COST_MAP=True
export PYTHONDONTWRITEBYTECODE=1
export PIP_DISABLE_PIP_VERSION_CHECK=1
TARGET="${AGL_COMPAT_TARGET:-ours}"
export AGL_COMPAT_TARGET="$TARGET"

case "$TARGET" in
  ours)
    BIN="${AGL_STORE_BIN:-target/debug/agl-store}"
    case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
    if [ ! -x "$BIN" ]; then
      echo "compat: server binary not found or not executable: $BIN" >&2
      echo "compat: build it (cargo build -p agl-store) or set AGL_STORE_BIN" >&2
      exit 2
    fi
    export AGL_STORE_BIN="$BIN"
    ;;
  official) ;;
  *)
    echo "compat: AGL_COMPAT_TARGET must be 'ours' or 'official', not '$TARGET'" >&2
    exit 2
    ;;
esac

VLLM_BIN="${AGL_VLLM_BIN:-target/debug/agl-vllm}"
case "$VLLM_BIN" in /*) ;; *) VLLM_BIN="$ROOT/$VLLM_BIN" ;; esac
export AGL_VLLM_BIN="$VLLM_BIN"

PYTHON="${PYTHON:-python3}"

# ensure_venv DIR REQUIREMENTS [PYTHON]: (re)create DIR unless its stamp matches the
# requirements and the interpreter.
ensure_venv() {
  local venv="$1" req="$2" python="${3:-$PYTHON}" stamp want
  stamp="$venv/.compat-stamp"
  want="$(sha256sum "$req" | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.version.split()[0])')"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c '' 2>/dev/null; then
    return 0
  fi
  echo "compat: creating $(basename "$venv") from $(basename "$req") (takes a few minutes)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet --progress-bar off -r "$req"
  echo "$want" >"$stamp"
}

# shellcheck source=lib/python312.sh
source "$ROOT/scripts/lib/python312.sh"

ensure_venv "$ROOT/.venv-compat-030" "$ROOT/tests/compat/requirements-030.txt"
ensure_venv "$ROOT/.venv-compat-022" "$ROOT/tests/compat/requirements-022.txt"
PYTHON312=""
if PYTHON312="$(find_python312)"; then
  ensure_venv "$ROOT/.venv-compat-102" "$ROOT/tests/compat/requirements-102.txt" "$PYTHON312"
fi

status=0
run_suite() {
  local venv="$1" dir="$2"
  shift 2
  echo "compat: $dir with $(basename "$venv") against target=$TARGET${AGL_STORE_BIN:+ ($AGL_STORE_BIN)}"
  if ! (cd "$ROOT/tests/compat" && "$venv/bin/python" -m pytest "$dir" --rootdir . -p no:cacheprovider -q "$@"); then
    echo "compat: FAILED: $dir" >&2
    status=1
  fi
}

run_suite "$ROOT/.venv-compat-030" v030 "$@"
run_suite "$ROOT/.venv-compat-022" v022 "$@"
if [ -n "$PYTHON312" ]; then
  run_suite "$ROOT/.venv-compat-102" v102 "$@"
else
  echo "compat: SKIPPED v102 (agentlightning 1.0.2): no Python 3.12 found (python3.12 on PATH," \
    "pyenv, or AGL_PYTHON312); install one to run it" >&2
fi

if [ "$status" -ne 0 ]; then
  echo "compat: some suites failed" >&2
fi
exit "$status"
