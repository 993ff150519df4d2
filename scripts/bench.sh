#!/usr/bin/env bash
# Side-by-side benchmark (issues 3, 5 and 14): agl-store in memory and on SQLite against the
# official Python LightningStore server (`agl store` of agentlightning==0.3.0) and a bare
# axum write ceiling, the same scenarios with the same settings one server after the other,
# plus start-up time, idle memory, a growth run (with bytes on disk for SQLite) and a SQLite
# history run (finished rollouts to 10 M spans, then restarts on that file); renders
# docs/benchmarks.md from the JSON results.
#
# Usage: ./scripts/bench.sh     (from anywhere; about 15 minutes with BENCH_DURATION=5, and
#                                14 GB of free disk for the history run)
#   BENCH_DURATION=10        measured seconds per scenario (each after 1 s of warm-up)
#   BENCH_CONCURRENCY=32     concurrent clients
#   BENCH_GROW_STEP=2        measured seconds of each span add / span query run while growing
#   BENCH_PYTHON_SPANS=100000  largest store the Python server's growth run fills (it writes
#                            some hundreds of spans per second; a million would take hours)
#   BENCH_SKIP_PYTHON=1      agl-store and the ceiling only (no virtualenv, no PyPI)
#   BENCH_SKIP_SQLITE=1      agl-store in memory only (no agl-store-sqlite runs)
#   BENCH_SKIP_PG=1          no Postgres runs (agl-store-pg with one replica, agl-store-pg2
#                            with two, and pgbench running the same transactions raw)
#   BENCH_ONLY_PG=1          only the Postgres runs, keeping the other results in BENCH_OUT
#                            (from an earlier full run), then the report of them all
#   BENCH_SKIP_V1=1          no upstream v1 runs (agl-store's /api and /proxy routes against
#                            agentlightning 1.0.2's agl-server, which needs Python 3.12)
#   BENCH_ONLY_V1=1          only the v1 runs, keeping the other results, as BENCH_ONLY_PG
#   BENCH_HISTORY_SPANS=10000000  size of the SQLite history run (finished rollouts; about
#                            5 minutes and 14 GB of disk at 10 M), then restarts on that file;
#                            0 skips it
#   BENCH_OUT=target/bench   where the JSON results and server logs go
# Needs a Rust toolchain, python3 with venv, and PyPI for the first run (the virtualenv
# .venv-bench is kept). Only loopback ports are used. Every server is started fresh for
# each scenario and killed on exit, whatever happens. agl-store-sqlite runs with
# `--sqlite-durability full` (every acknowledged write fsynced, group commit) on a new file
# per server start, $BENCH_OUT/agl-store-sqlite-SCENARIO-PORT.db, deleted after the server
# stops.
set -euo pipefail
cd "$(dirname "$0")/.."

# The exact command, for the report: the script plus the settings given to it.
COMMAND="./scripts/bench.sh"
for var in BENCH_HISTORY_SPANS BENCH_ONLY_V1 BENCH_SKIP_V1 BENCH_ONLY_PG BENCH_SKIP_PG BENCH_SKIP_SQLITE BENCH_SKIP_PYTHON BENCH_PYTHON_SPANS BENCH_GROW_STEP BENCH_CONCURRENCY BENCH_DURATION; do
  if [ -n "${!var:-}" ]; then COMMAND="$var=${!var} $COMMAND"; fi
done

DURATION="${BENCH_DURATION:-10}"
CONCURRENCY="${BENCH_CONCURRENCY:-32}"
GROW_STEP="${BENCH_GROW_STEP:-2}"
PYTHON_SPANS="${BENCH_PYTHON_SPANS:-100000}"
SKIP_PYTHON="${BENCH_SKIP_PYTHON:-}"
SKIP_SQLITE="${BENCH_SKIP_SQLITE:-}"
SKIP_PG="${BENCH_SKIP_PG:-}"
ONLY_PG="${BENCH_ONLY_PG:-}"
if [ -n "$ONLY_PG" ]; then
  COMMAND="$COMMAND (the Postgres runs; every other figure from the full run before it)"
fi
SKIP_V1="${BENCH_SKIP_V1:-}"
ONLY_V1="${BENCH_ONLY_V1:-}"
if [ -n "$ONLY_V1" ]; then
  COMMAND="$COMMAND (the upstream v1 runs; every other figure from the full run before it)"
  SKIP_PG=1
fi
VENV_V1=.venv-bench-102
VLLM=target/release/agl-vllm
V1_SCENARIOS=(v1-create v1-patch v1-event v1-events v1-triplets v1-proxy v1-proxy-stream)
HISTORY_SPANS="${BENCH_HISTORY_SPANS:-10000000}"
OUT="${BENCH_OUT:-target/bench}"
VENV=.venv-bench
BENCH=target/release/agl-bench
STORE=target/release/agl-store
SCENARIOS=(health enqueue dequeue-update span-add otlp span-query wait mixed)
WRITES=(enqueue dequeue-update span-add otlp)
# agentlightning imports litellm, which otherwise fetches a price list at import time.
export LITELLM_LOCAL_MODEL_COST_MAP=True

step() { printf '\n==> %s\n' "$*"; }

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
  done
  # The SQLite files of servers that were still running.
  rm -f "$OUT"/agl-store-sqlite-*.db "$OUT"/agl-store-sqlite-*.db-* 2>/dev/null || true
  if [ -n "${PG_SOCK:-}" ]; then
    ./scripts/pg.sh stop "$PG_SOCK" >/dev/null 2>&1 || true
    rm -rf "$PG_SOCK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server LOG CMD...: starts a server in the background; sets SERVER_PID.
start_server() {
  local log="$1"
  shift
  "$@" >"$log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
}

# wait_healthy PORT PID LOG [PATH]: polls the health route (default /v1/agl/health) until it
# answers (readiness, not a fixed sleep); fails at once if the server died.
wait_healthy() {
  local port="$1" pid="$2" log="$3" path="${4:-/v1/agl/health}" tries=0
  until curl -sf -o /dev/null "http://127.0.0.1:$port$path"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "server on port $port exited before it became healthy; its log:" >&2
      tail -n 40 "$log" >&2
      exit 1
    fi
    tries=$((tries + 1))
    if [ "$tries" -gt 3000 ]; then
      echo "server on port $port not healthy after 60 s" >&2
      exit 1
    fi
    sleep 0.02
  done
}

# stop_server PID: SIGTERM, then SIGKILL if it is still there after 15 s.
stop_server() {
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# db_file LABEL TAG PORT: the SQLite file of one server start (a new one every time).
db_file() {
  echo "$OUT/$1-$2-$3.db"
}

# remove_db LABEL TAG PORT: deletes that file and its -wal/-shm/-journal, if any.
remove_db() {
  local db
  db=$(db_file "$@")
  rm -f "$db" "$db-wal" "$db-shm" "$db-journal" "$db-lock"
}

# server_cmd LABEL PORT TAG: the command line that serves LABEL on PORT (TAG names the
# SQLite file: the scenario, startup or grow).
server_cmd() {
  case "$1" in
    agl-store) echo "$STORE --host 127.0.0.1 --port $2 --log-level warn" ;;
    agl-store-sqlite | agl-store-sqlite-history)
      echo "$STORE --host 127.0.0.1 --port $2 --log-level warn" \
        "--storage sqlite:$(db_file "$1" "$3" "$2") --sqlite-durability full"
      ;;
    python) echo "$VENV/bin/agl store --host 127.0.0.1 --port $2 --log-level WARNING" ;;
    ceiling) echo "$BENCH ceiling --host 127.0.0.1 --port $2" ;;
  esac
}

# run_scenarios LABEL SCENARIO...: each scenario against a freshly started server.
run_scenarios() {
  local label="$1" scenario port
  shift
  for scenario in "$@"; do
    port=$(free_port)
    # shellcheck disable=SC2046 # server_cmd is a plain word list
    start_server "$OUT/$label-$scenario.log" $(server_cmd "$label" "$port" "$scenario")
    wait_healthy "$port" "$SERVER_PID" "$OUT/$label-$scenario.log"
    "$BENCH" run --label "$label" --target "http://127.0.0.1:$port" \
      --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup 1 \
      --scenario "$scenario" --server-pid "$SERVER_PID" \
      --json "$OUT/run-$label-$scenario.json"
    stop_server "$SERVER_PID"
    remove_db "$label" "$scenario" "$port"
  done
}

# measure_startup LABEL REPEAT: exec to healthy and idle memory (SQLite: every start on a
# new, empty file).
measure_startup() {
  local label="$1" repeat="$2" port fresh=()
  port=$(free_port)
  if [ "$label" = agl-store-sqlite ]; then
    fresh=(--fresh-file "$(db_file "$label" startup "$port")")
  fi
  # shellcheck disable=SC2046
  "$BENCH" startup --label "$label" --port "$port" --repeat "$repeat" \
    ${fresh[@]+"${fresh[@]}"} \
    --json "$OUT/startup-$label.json" -- $(server_cmd "$label" "$port" startup)
}

# measure_growth LABEL SIZES
# (SQLite: also the bytes on disk, database file and write-ahead log, at every size)
measure_growth() {
  local label="$1" sizes="$2" port disk=()
  port=$(free_port)
  if [ "$label" = agl-store-sqlite ]; then
    disk=(--disk-file "$(db_file "$label" grow "$port")")
  fi
  # shellcheck disable=SC2046
  start_server "$OUT/$label-grow.log" $(server_cmd "$label" "$port" grow)
  wait_healthy "$port" "$SERVER_PID" "$OUT/$label-grow.log"
  "$BENCH" grow --label "$label" --target "http://127.0.0.1:$port" \
    --server-pid "$SERVER_PID" --sizes "$sizes" --rollouts 100000 \
    --concurrency "$CONCURRENCY" --step-duration "$GROW_STEP" \
    ${disk[@]+"${disk[@]}"} \
    --json "$OUT/grow-$label.json"
  stop_server "$SERVER_PID"
  remove_db "$label" grow "$port"
}

step "build agl-store and agl-bench (release)"
cargo build --release --locked -p agl-store -p agl-bench -p agl-vllm

if [ -z "$SKIP_PYTHON" ]; then
  step "virtualenv $VENV with agentlightning==0.3.0"
  if ! "$VENV/bin/python" -c 'import importlib.metadata as m; assert m.version("agentlightning") == "0.3.0"' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q 'agentlightning==0.3.0' 'opentelemetry-exporter-otlp-proto-http<1.45'
  fi
fi

if [ -n "$ONLY_PG" ]; then
  # Keep the other results of an earlier full run; only the Postgres ones are made again.
  mkdir -p "$OUT"
  rm -f "$OUT"/run-agl-store-pg*.json "$OUT"/pgbench-*.json
  rm -rf "$OUT/pg"
elif [ -n "$ONLY_V1" ]; then
  mkdir -p "$OUT"
  rm -f "$OUT"/run-agl-store-v1-*.json "$OUT"/run-agl-server-1.0.2-*.json
else
  rm -rf "$OUT"
  mkdir -p "$OUT"
  LABELS=(agl-store)
  if [ -z "$SKIP_SQLITE" ]; then LABELS+=(agl-store-sqlite); fi
  if [ -z "$SKIP_PYTHON" ]; then LABELS+=(python); fi

  for label in "${LABELS[@]}"; do
    step "$label: ${SCENARIOS[*]} (${DURATION} s each, $CONCURRENCY clients)"
    run_scenarios "$label" "${SCENARIOS[@]}"
  done
  step "ceiling: ${WRITES[*]}"
  run_scenarios ceiling "${WRITES[@]}"

  step "agl-store: exec to healthy, idle memory"
  measure_startup agl-store 5
  if [ -z "$SKIP_SQLITE" ]; then
    step "agl-store-sqlite: exec to healthy on a new file, idle memory"
    measure_startup agl-store-sqlite 5
  fi
  if [ -z "$SKIP_PYTHON" ]; then
    step "python: exec to healthy, idle memory"
    measure_startup python 3
  fi

  step "agl-store: growth to 1 000 000 spans"
  measure_growth agl-store 1000,10000,100000,1000000
  if [ -z "$SKIP_SQLITE" ]; then
    step "agl-store-sqlite: growth to 1 000 000 spans, bytes on disk"
    measure_growth agl-store-sqlite 1000,10000,100000,1000000
  fi
  if [ -z "$SKIP_PYTHON" ]; then
    step "python: growth to $PYTHON_SPANS spans"
    python_sizes=""
    for size in 1000 10000 100000 1000000; do
      if [ "$size" -le "$PYTHON_SPANS" ]; then python_sizes="${python_sizes:+$python_sizes,}$size"; fi
    done
    measure_growth python "$python_sizes"
  fi

  # measure_history SIZES: the SQLite store grown with finished rollouts (history on disk,
  # memory and the old rollouts' span queries at each size), then stopped and restarted on
  # that file (restart to healthy against history size).
  measure_history() {
    local label=agl-store-sqlite-history port db
    port=$(free_port)
    db=$(db_file "$label" history "$port")
    # shellcheck disable=SC2046
    start_server "$OUT/$label-grow.log" $(server_cmd "$label" "$port" history)
    wait_healthy "$port" "$SERVER_PID" "$OUT/$label-grow.log"
    "$BENCH" grow --label "$label" --target "http://127.0.0.1:$port" \
      --server-pid "$SERVER_PID" --sizes "$1" --rollouts 0 --finish \
      --concurrency "$CONCURRENCY" --step-duration "$GROW_STEP" --disk-file "$db" \
      --json "$OUT/grow-$label.json"
    stop_server "$SERVER_PID"
    # shellcheck disable=SC2046
    "$BENCH" startup --label "$label" --port "$port" --repeat 5 \
      --json "$OUT/startup-$label.json" -- $(server_cmd "$label" "$port" history)
    remove_db "$label" history "$port"
  }

  if [ -z "$SKIP_SQLITE" ] && [ "$HISTORY_SPANS" -gt 0 ]; then
    step "agl-store-sqlite-history: finished rollouts to $HISTORY_SPANS spans, then restarts"
    history_sizes=""
    for size in 1000000 10000000 100000000; do
      if [ "$size" -le "$HISTORY_SPANS" ]; then history_sizes="${history_sizes:+$history_sizes,}$size"; fi
    done
    measure_history "${history_sizes:-$HISTORY_SPANS}"
  fi
fi

# ---- Postgres: one and two store replicas, and pgbench on the same server --------------
# A server of its own with fsync on (every acknowledged write durable, as in production),
# listening on a socket in a private directory; a new database per scenario.
pg_url() { echo "postgresql:///$1?host=$PG_SOCK&user=postgres"; }
pg_new_db() { psql "host=$PG_SOCK user=postgres dbname=postgres" -qc "CREATE DATABASE $1"; }

# run_pg LABEL REPLICAS SCENARIO...: each scenario on a new database served by REPLICAS
# store processes, the clients spread over them (CPU and memory are the first one's).
run_pg() {
  local label="$1" replicas="$2" scenario db i port targets pids
  shift 2
  for scenario in "$@"; do
    db="b_${label//-/_}_${scenario//-/_}"
    pg_new_db "$db"
    targets="" pids=()
    for i in $(seq 1 "$replicas"); do
      port=$(free_port)
      start_server "$OUT/$label-$scenario-$i.log" "$STORE" --host 127.0.0.1 --port "$port" \
        --log-level warn --storage "$(pg_url "$db")"
      wait_healthy "$port" "$SERVER_PID" "$OUT/$label-$scenario-$i.log"
      targets="${targets:+$targets,}http://127.0.0.1:$port"
      pids+=("$SERVER_PID")
    done
    "$BENCH" run --label "$label" --target "$targets" \
      --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup 1 \
      --scenario "$scenario" --server-pid "${pids[0]}" \
      --json "$OUT/run-$label-$scenario.json"
    for i in "${pids[@]}"; do stop_server "$i"; done
  done
}

# run_pgbench: the store's transactions for span-add, dequeue-update and enqueue, sent raw
# by pgbench with the same number of clients, on a database the store migrated
# (services/bench/pgbench/).
run_pgbench() {
  local db=b_pgbench port script tps
  pg_new_db "$db"
  port=$(free_port)
  start_server "$OUT/pgbench-migrate.log" "$STORE" --host 127.0.0.1 --port "$port" \
    --log-level warn --storage "$(pg_url "$db")"
  wait_healthy "$port" "$SERVER_PID" "$OUT/pgbench-migrate.log"
  stop_server "$SERVER_PID"
  psql "host=$PG_SOCK user=postgres dbname=$db" -q -f services/bench/pgbench/prefill.sql
  for script in span-add dequeue-update enqueue; do
    tps=$("$PGBIN/pgbench" -n -c "$CONCURRENCY" -j 2 -T "$DURATION" \
      -f "services/bench/pgbench/$script.sql" "host=$PG_SOCK user=postgres dbname=$db" \
      | awk '/^tps = / {print $3}')
    echo "pgbench $script: $tps tx/s"
    printf '{"kind":"pgbench","scenario":"%s","tps":%s,"concurrency":%s,"duration_s":%s}\n' \
      "$script" "$tps" "$CONCURRENCY" "$DURATION" >"$OUT/pgbench-$script.json"
  done
}

if [ -z "$SKIP_PG" ]; then
  PG_SOCK="$PWD/$OUT/pg"
  if PG_FSYNC=on ./scripts/pg.sh start "$PG_SOCK" >/dev/null; then
    PGBIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/pgbench | tail -1)")
    for label in agl-store-pg:1 agl-store-pg2:2; do
      step "${label%%:*} (${label##*:} replica(s) on Postgres, fsync on): ${SCENARIOS[*]}"
      run_pg "${label%%:*}" "${label##*:}" "${SCENARIOS[@]}"
    done
    step "pgbench on the same server: the store's transactions, raw"
    run_pgbench
  else
    echo "skipped: the Postgres runs (no Postgres server could be started)"
  fi
fi

# ---- Upstream v1: agl-store's /api and /proxy routes against agentlightning 1.0.2's own
# agl-server, each scenario on a freshly started server, the proxy in front of the vLLM
# double (agl-vllm fake-vllm) serving test-model.
# shellcheck source=lib/python312.sh
source scripts/lib/python312.sh
run_v1() {
  local python312 model_port scenario port label
  if ! python312="$(find_python312)"; then
    echo "skipped: the upstream v1 runs (no Python 3.12 for agentlightning 1.0.2)"
    return 0
  fi
  if ! "$VENV_V1/bin/python" -c 'import importlib.metadata as m; assert m.version("agentlightning") == "1.0.2"' 2>/dev/null; then
    rm -rf "$VENV_V1"
    "$python312" -m venv "$VENV_V1"
    "$VENV_V1/bin/pip" install -q --upgrade pip
    "$VENV_V1/bin/pip" install -q 'agentlightning==1.0.2'
  fi
  model_port=$(free_port)
  start_server "$OUT/v1-model.log" "$VLLM" fake-vllm serve test-model --host 127.0.0.1 --port "$model_port"
  local model_pid=$SERVER_PID
  wait_healthy "$model_port" "$model_pid" "$OUT/v1-model.log" /health
  for label in agl-store-v1 agl-server-1.0.2; do
    step "$label: ${V1_SCENARIOS[*]} (${DURATION} s each, $CONCURRENCY clients)"
    for scenario in "${V1_SCENARIOS[@]}"; do
      # Upstream refuses streams.
      if [ "$label" = agl-server-1.0.2 ] && [ "$scenario" = v1-proxy-stream ]; then continue; fi
      port=$(free_port)
      if [ "$label" = agl-store-v1 ]; then
        start_server "$OUT/$label-$scenario.log" "$STORE" --host 127.0.0.1 --port "$port" \
          --log-level warn --proxy-model-name test-model
      else
        start_server "$OUT/$label-$scenario.log" "$VENV_V1/bin/agl-server" host=127.0.0.1 \
          "port=$port" default_proxy.model_name=test-model "hydra.run.dir=$OUT/hydra-$port"
      fi
      wait_healthy "$port" "$SERVER_PID" "$OUT/$label-$scenario.log" /healthz
      "$BENCH" run --label "$label" --target "http://127.0.0.1:$port" \
        --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup 1 \
        --scenario "$scenario" --server-pid "$SERVER_PID" \
        --model-url "http://127.0.0.1:$model_port/v1" \
        --json "$OUT/run-$label-$scenario.json"
      stop_server "$SERVER_PID"
    done
  done
  stop_server "$model_pid"
}
if [ -z "$SKIP_V1" ] && [ -z "$ONLY_PG" ]; then
  run_v1
fi

step "docs/benchmarks.md"
"$BENCH" report --command "$COMMAND" --notes docs/benchmarks-notes.md "$OUT"/*.json >docs/benchmarks.md
echo "wrote docs/benchmarks.md (results in $OUT)"
