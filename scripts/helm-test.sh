#!/usr/bin/env bash
# The Helm chart tests: tests/helm renders helm/agl with the real Helm engine
# (helm-python-sdk, Helm v4 as a library: no helm binary, no cluster), lints it in strict
# mode, validates every object with kubernetes-validate --strict for each Kubernetes minor
# the chart claims, checks values.schema.json and the wiring, and keeps the chart README's
# values table in sync.
#
# The virtualenv .venv-helm is (re)created only when tests/helm/requirements.txt or the
# Python version changes.
#
# Usage: ./scripts/helm-test.sh [pytest args]
#   PYTHON   interpreter for the venv (default: python3; 3.10 or newer)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
dir=.venv-helm
# shellcheck source=lib/venv.sh
. scripts/lib/venv.sh
venv "$dir" tests/helm/requirements.txt

printf '==> helm chart tests (Helm %s via helm-python-sdk)\n' \
  "$("$dir/bin/python" -c 'import helm_python as h; print(h.helm_sdk_version())')"
exec "$dir/bin/python" -m pytest -q -p no:cacheprovider tests/helm "$@"
