#!/usr/bin/env bash
# Generated hostile input against the store's HTTP API: schemathesis (pinned, from PyPI)
# reads the store's own /openapi.json (every protocol it documents: 0.3, 0.2.2, the
# reference's /agl/v1, upstream v1) and sends what it generates from it: examples,
# boundary and out-of-schema values (coverage), random valid and invalid requests
# (fuzzing), and chains of calls that reuse returned ids (stateful).
#
# Pass: no 5xx, every response matches the document (schema and content type), no answer
# slower than 5 s (a hang), the store alive at the end. Against a keyed store on memory and
# on SQLite.
#
#   ./scripts/fuzz-api.sh                          # CI size (AGL_FUZZ_EXAMPLES=40)
#   AGL_FUZZ_EXAMPLES=1000 ./scripts/fuzz-api.sh   # the long run of docs/security.md
#
# AGL_FUZZ_REPORT=DIR keeps schemathesis' ndjson reports.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

EXAMPLES=${AGL_FUZZ_EXAMPLES:-40}
VENV="$ROOT/.venv-fuzz"
if [ ! -x "$VENV/bin/st" ] || ! "$VENV/bin/pip" freeze 2>/dev/null | grep -qxF -f tests/fuzz/requirements.txt; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/fuzz/requirements.txt
fi

BIN="$ROOT/target/debug/agl-store"
[ -x "$BIN" ] || cargo build --quiet -p agl-store
WORK=$(mktemp -d)
REPORTS=${AGL_FUZZ_REPORT:-$WORK/reports}
mkdir -p "$REPORTS"
PID=""
cleanup() {
  if [ -n "$PID" ]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

KEY="fuzz-$(python3 -c 'import uuid; print(uuid.uuid4().hex)')"
for backend in memory sqlite; do
  storage=memory
  [ "$backend" = sqlite ] && storage="sqlite:$WORK/fuzz.db"
  "$BIN" --host 127.0.0.1 --port 0 --storage "$storage" --key "$KEY" --log-format json \
    --scan-debounce-seconds 0 >"$WORK/$backend.log" 2>&1 &
  PID=$!
  # The bound port, from the line the store logs once it listens.
  port=""
  for _ in $(seq 1 200); do
    port=$(grep -o '"message":"lightning store listening","addr":"127.0.0.1:[0-9]*"' "$WORK/$backend.log" \
      | grep -o '[0-9]*"$' | tr -d '"' || true)
    if [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; then
      break
    fi
    sleep 0.1
  done
  if [ -z "$port" ]; then
    cat "$WORK/$backend.log"
    echo "the store did not start" >&2
    exit 1
  fi

  echo "--> schemathesis against the store on $backend (127.0.0.1:$port), $EXAMPLES examples per operation"
  # /v1/traces takes protobuf (OTLP), which schemathesis cannot generate: its decoder is
  # covered by the randomized tests of agl-common (tests/fuzz.rs).
  # Exit status: schemathesis also exits 1 for its own errors (an internal exception, a
  # request that outlived --request-timeout because it asked the store to wait longer);
  # what fails this step is a failed check, or the store dying.
  (cd "$WORK" && "$VENV/bin/st" run "http://127.0.0.1:$port/openapi.json" \
    -H "Authorization: Bearer $KEY" \
    --checks not_a_server_error,response_schema_conformance,content_type_conformance \
    --max-response-time 5 \
    --exclude-path /v1/traces \
    --max-examples "$EXAMPLES" --workers 2 --request-timeout 10 \
    --report ndjson --report-dir "$REPORTS/$backend" \
    --no-color >"$WORK/st-$backend.out" 2>&1) || true
  grep -E '^  (Selected|Tested):|^  [0-9]+ generated|^  (❌|🚫) |^=+ .* in [0-9.]+s =+' "$WORK/st-$backend.out" || true
  if ! kill -0 "$PID" 2>/dev/null; then
    cat "$WORK/$backend.log"
    echo "the store died under generated input" >&2
    exit 1
  fi
  kill "$PID"
  wait "$PID" 2>/dev/null || true
  PID=""
  if grep -q '^Failures:' "$WORK/st-$backend.out" || ! grep -qE '^  [0-9]+ generated' "$WORK/st-$backend.out"; then
    sed -n '/FAILURES/,$p' "$WORK/st-$backend.out" | head -150
    echo "schemathesis found failures on $backend" >&2
    exit 1
  fi
done
