#!/usr/bin/env bash
# The provisioned Grafana dashboards against a real Prometheus: tests/observability starts
# agl-store, agl-agentops (forwarding to the store) and the agl-vllm proxy in front of the
# vLLM test double on loopback, Debian's prometheus scraping them with the jobs of
# docker/observability/prometheus.yml, drives traffic with the official clients
# (agentlightning 0.3.0, the openai SDK, the AgentOps SDK 0.4.21), and evaluates every
# panel's query through Prometheus' API: each must return a finite value. Then each
# dashboard, as a Prometheus console page, in headless Chromium (Debian's chromium and
# chromium-driver; skipped without them unless AGL_REQUIRE_BROWSER=1): every panel must draw.
# And the profile's wiring from the files (tests/observability/test_wiring.py): addresses,
# mounts, the collector's pipeline into Jaeger, Grafana's datasources and dashboards.
# The venv is the browser suite's (.venv-browser, the same pinned packages).
#
# Usage: ./scripts/observability-test.sh [pytest args]
#   AGL_README_SCREENSHOTS=1 ... -k drawn   rewrites docs/images/grafana-agl.png
#   AGL_STORE_BIN, AGL_VLLM_BIN_PATH, AGL_AGENTOPS_BIN   binaries (default: target/debug/)
#   AGL_PROMETHEUS         prometheus (default: from PATH); promtool from PATH
#   AGL_REQUIRE_PROMETHEUS=1  fail, instead of skipping, without Prometheus
#   PYTHON                 interpreter for the venv (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=lib/binaries.sh
. scripts/lib/binaries.sh
binaries
if ! command -v prometheus >/dev/null && [ -z "${AGL_PROMETHEUS:-}" ] || ! command -v promtool >/dev/null; then
  if [ "${AGL_REQUIRE_PROMETHEUS:-}" = 1 ]; then
    echo "no prometheus/promtool (AGL_REQUIRE_PROMETHEUS=1): install Debian's prometheus package" >&2
    exit 1
  fi
  echo "skipped: the dashboard-query suite (install Debian's prometheus package)"
  exit 0
fi
export LITELLM_LOCAL_MODEL_COST_MAP=True
dir=.venv-browser
# shellcheck source=lib/venv.sh
. scripts/lib/venv.sh
venv "$dir" tests/browser/requirements.txt
printf '\n==> %s\n' "$(prometheus --version 2>&1 | head -1)"
"$dir/bin/python" -m pytest -q -p no:cacheprovider tests/observability "$@"
