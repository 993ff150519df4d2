#!/usr/bin/env bash
# Every test of the project, in the order a failure is cheapest to find:
# formatting and lints, Rust unit and integration tests, then the compatibility suites
# that drive agl-store with the official Python clients from PyPI.
# Usage: ./scripts/test.sh            (from anywhere; CI runs it through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tools: promtool and prometheus (Debian package prometheus)"
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
fi
if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
  export AGL_REQUIRE_PROMETHEUS=1
else
  echo "skipped: the Prometheus scrape test (install Debian's prometheus package to run it)"
fi

step "tools: a private Postgres server (Debian's postgresql-15)"
# One server for the suites that want a database each (the API and compatibility suites on
# Postgres); the crash and replica tests start their own, since they stop theirs.
PG_DIR="/tmp/agl-test-pg-$$"
if AGL_TEST_PG="$(./scripts/pg.sh start "$PG_DIR")"; then
  export AGL_TEST_PG AGL_REQUIRE_PG=1
  trap './scripts/pg.sh stop "$PG_DIR" >/dev/null 2>&1 || true; rm -rf "$PG_DIR"' EXIT
  echo "Postgres at $AGL_TEST_PG"
else
  echo "skipped: every Postgres leg (no Postgres server could be started; install Debian's postgresql-15)"
fi

step "cargo test"
# As root the full-disk test mounts a tiny tmpfs; elsewhere it says it skipped.
if [ "$(id -u)" = 0 ]; then export AGL_REQUIRE_TMPFS=1; fi
cargo test --workspace --locked

step "agl-store API suite again, on the SQLite backend (no finished rollout kept in memory)"
# With a cache of 0 every finished rollout leaves memory once durable, so each later read
# and change of it goes through the file.
AGL_TEST_STORAGE=sqlite AGL_TEST_CACHE_MIB=0 cargo test --locked -p agl-store --test api

if [ -n "${AGL_TEST_PG:-}" ]; then
  step "agl-store API suite again, on Postgres (a fresh database per server)"
  AGL_TEST_STORAGE=postgres cargo test --locked -p agl-store --test api
fi

step "hostile input: schemathesis against the store's OpenAPI document (memory, SQLite)"
./scripts/fuzz-api.sh

step "python compatibility (official agentlightning clients)"
# agl-vllm too: its vLLM double is the model server behind the 1.0.2 suite's proxy calls.
cargo build --locked -p agl-store --bin agl-store -p agl-vllm --bin agl-vllm
AGL_STORE_BIN="$PWD/target/debug/agl-store" ./scripts/compat.sh

step "python compatibility on the SQLite backend (no finished rollout kept in memory)"
AGL_CACHE_MIB=0 AGL_COMPAT_STORAGE=sqlite AGL_STORE_BIN="$PWD/target/debug/agl-store" ./scripts/compat.sh

if [ -n "${AGL_TEST_PG:-}" ]; then
  step "python compatibility on Postgres (a fresh database per server)"
  AGL_COMPAT_STORAGE=postgres AGL_COMPAT_PG="$AGL_TEST_PG" AGL_STORE_BIN="$PWD/target/debug/agl-store" ./scripts/compat.sh
fi

step "python compatibility (agentops SDK 0.4.21 and 0.4.13)"
cargo build --locked -p agl-agentops --bin agl-agentops
AGL_AGENTOPS_BIN="$PWD/target/debug/agl-agentops" AGL_STORE_BIN="$PWD/target/debug/agl-store" ./scripts/agentops-compat.sh

step "agl-vllm against the official consumer (LlmProxyTraceToTriplet, agentlightning 0.3.0)"
cargo build --locked -p agl-vllm --bin agl-vllm -p agl-store --bin agl-store
AGL_VLLM_BIN_PATH="$PWD/target/debug/agl-vllm" AGL_STORE_BIN="$PWD/target/debug/agl-store" ./scripts/vllm-compat.sh

step "the dashboards in a real browser (Debian's headless Chromium through Selenium)"
cargo build --locked -p agl-store --bin agl-store -p agl-vllm --bin agl-vllm -p agl-agentops --bin agl-agentops
# As root the script installs Chromium when missing; then a missing browser is a failure.
if [ "$(id -u)" = 0 ]; then export AGL_REQUIRE_BROWSER=1; fi
./scripts/browser-test.sh

step "every Grafana panel's query against a real Prometheus scraping the services (Debian's prometheus)"
./scripts/observability-test.sh

step "release workflow: GitHub's workflow schema (check-jsonschema), actionlint when installed"
./scripts/lint-workflows.sh

step "helm chart: render, lint, validate (helm-python-sdk, kubernetes-validate)"
./scripts/helm-test.sh

step "container images and compose (skipped without a Docker engine)"
./scripts/docker-test.sh

step "all tests passed"
