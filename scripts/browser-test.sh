#!/usr/bin/env bash
# The real-browser suite: tests/browser drives the HTML dashboards of agl-store and
# agl-agentops in Debian's headless Chromium through Selenium and chromedriver, after
# filling the servers with the official clients: agentlightning 0.3.0's LightningStoreClient
# (rollouts, attempts, resources, OpenTelemetry spans, a reward), the openai SDK as an agent
# calling the agl-vllm proxy in front of the vLLM test double (token-capturing spans), and the
# AgentOps SDK 0.4.21 (one trace). Every page load is checked for console errors and failed
# requests, and screenshotted.
# The venv .venv-browser is rebuilt only when the requirements file (or Python) changes.
#
# Usage: ./scripts/browser-test.sh [pytest args]
#   AGL_STORE_BIN          agl-store binary    (default: target/debug/agl-store)
#   AGL_VLLM_BIN_PATH      agl-vllm binary     (default: target/debug/agl-vllm)
#   AGL_AGENTOPS_BIN       agl-agentops binary (default: target/debug/agl-agentops)
#   AGL_CHROMIUM           the browser         (default: /usr/bin/chromium)
#   AGL_CHROMEDRIVER       its driver          (default: /usr/bin/chromedriver)
#   AGL_SCREENSHOTS_DIR    where a screenshot per page goes (default: target/screenshots)
#   AGL_README_SCREENSHOTS=1  write only the README's two images (default dir: docs/images)
#   AGL_REQUIRE_BROWSER=1  fail, instead of skipping, when Chromium cannot be found or installed
#   PYTHON                 interpreter for the venv (default: python3)
# Without Chromium and chromedriver, as root with apt-get, Debian's `chromium` and
# `chromium-driver` are installed first.
#
# The README's images (docs/images/dashboard-overview.png and dashboard-rollout.png,
# 1400x900) are regenerated with:
#   AGL_README_SCREENSHOTS=1 ./scripts/browser-test.sh -k readme
# (the same as AGL_README_SCREENSHOTS=1 AGL_SCREENSHOTS_DIR=docs/images …; with
# AGL_README_SCREENSHOTS=1 no other screenshot is written, so the whole suite may run too).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=lib/binaries.sh
. scripts/lib/binaries.sh
binaries

export AGL_CHROMIUM="${AGL_CHROMIUM:-/usr/bin/chromium}"
export AGL_CHROMEDRIVER="${AGL_CHROMEDRIVER:-/usr/bin/chromedriver}"
have_browser() { [ -x "$AGL_CHROMIUM" ] && [ -x "$AGL_CHROMEDRIVER" ]; }
if ! have_browser && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium and chromium-driver"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
if ! have_browser; then
  if [ "${AGL_REQUIRE_BROWSER:-}" = 1 ]; then
    echo "no browser: $AGL_CHROMIUM and $AGL_CHROMEDRIVER must be executables (AGL_REQUIRE_BROWSER=1)" >&2
    exit 1
  fi
  echo "skipped: the browser suite (no $AGL_CHROMIUM or $AGL_CHROMEDRIVER; install Debian's chromium and chromium-driver)"
  exit 0
fi

# litellm (pulled in by agentlightning) would otherwise fetch its cost map from the internet.
export LITELLM_LOCAL_MODEL_COST_MAP=True
if [ "${AGL_README_SCREENSHOTS:-}" = 1 ]; then
  export AGL_SCREENSHOTS_DIR="${AGL_SCREENSHOTS_DIR:-docs/images}"
else
  export AGL_SCREENSHOTS_DIR="${AGL_SCREENSHOTS_DIR:-target/screenshots}"
fi
PYTHON="${PYTHON:-python3}"

dir=.venv-browser
# shellcheck source=lib/venv.sh
. scripts/lib/venv.sh
venv "$dir" tests/browser/requirements.txt

printf '\n==> %s, selenium %s\n' "$("$AGL_CHROMIUM" --version 2>/dev/null | head -1)" \
  "$("$dir/bin/python" -c 'from importlib.metadata import version; print(version("selenium"))')"
"$dir/bin/python" -m pytest -q -p no:cacheprovider tests/browser "$@"
