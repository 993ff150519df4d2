#!/usr/bin/env bash
# End-to-end test of the container images and compose.yaml, on this machine's Docker engine.
#
#   ./scripts/docker-test.sh          (the test command runs it; skips plainly without Docker)
#
# Builds the images from docker/Dockerfile (base images supplied locally when they cannot be
# pulled, see scripts/docker-bases.sh), brings the default profile up on spare host ports,
# and drives it through those ports with the official agentlightning client and the real
# agentops SDK (tests/docker/test_stack.py). Prints image sizes and the time from `up` to
# healthy and of `down`; AGL_RECORD_DOCS=1 also writes them to docs/docker.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
  echo "skipped: docker tests (no Docker engine on this machine)"
  exit 0
fi
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
  COMPOSE=(docker-compose)
else
  echo "skipped: docker tests (neither 'docker compose' nor 'docker-compose' is installed)"
  exit 0
fi

export COMPOSE_PROJECT_NAME=agl-e2e
export AGL_STORE_PORT=14747 AGL_AGENTOPS_PORT=18002
export AGL_AGENTOPS_PUBLIC_URL=http://127.0.0.1:18002
export AGL_GIT_COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
FILES=(-f compose.yaml -f tests/docker/compose.test.yaml)
dc() { "${COMPOSE[@]}" "${FILES[@]}" "$@"; }
cleanup() { dc down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "==> compose files are valid"
"${COMPOSE[@]}" -f compose.yaml config -q
"${COMPOSE[@]}" -f compose.yaml --profile gpu --profile observability config -q

echo "==> base images"
./scripts/docker-bases.sh

echo "==> build"
build_start=$(date +%s)
docker build -q -f docker/Dockerfile --target agl-store --build-arg AGL_GIT_COMMIT="$AGL_GIT_COMMIT" \
  -t ghcr.io/agl-project/agl-store:0.1.0 . >/dev/null
docker build -q -f docker/Dockerfile --target agl-agentops --build-arg AGL_GIT_COMMIT="$AGL_GIT_COMMIT" \
  -t ghcr.io/agl-project/agl-agentops:0.1.0 . >/dev/null
echo "built in $(( $(date +%s) - build_start )) s"

size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.1f", $1/1000000}'; }
store_mb=$(size ghcr.io/agl-project/agl-store:0.1.0)
agentops_mb=$(size ghcr.io/agl-project/agl-agentops:0.1.0)
echo "image sizes: agl-store ${store_mb} MB, agl-agentops ${agentops_mb} MB"
for mb in "$store_mb" "$agentops_mb"; do
  awk -v m="$mb" 'BEGIN { exit !(m < 40) }' || { echo "an image is over 40 MB" >&2; exit 1; }
done

echo "==> up"
cleanup
up_start=$(python3 -c 'import time; print(time.time())')
dc up -d --no-build
healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$(dc ps -q "$1")" 2>/dev/null)" = healthy ]; }
deadline=$(( $(date +%s) + 120 ))
until healthy store && healthy agentops; do
  [ "$(date +%s)" -lt "$deadline" ] || { dc ps; dc logs --tail 50; exit 1; }
  sleep 0.2
done
up_s=$(python3 -c "import time; print(f'{time.time() - $up_start:.1f}')")
echo "up to all healthy: ${up_s} s"

echo "==> end-to-end tests with the official packages"
VENV="$ROOT/.venv-agentops-0421"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import agentlightning, agentops, pytest' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/agentops/requirements-0421.txt
fi
AGL_E2E_STORE=http://127.0.0.1:14747 AGL_E2E_AGENTOPS=http://127.0.0.1:18002 \
AGL_E2E_COMPOSE="$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "${COMPOSE[@]}" "${FILES[@]}")" \
LITELLM_LOCAL_MODEL_COST_MAP=True \
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/docker

echo "==> down (SIGTERM handled within the grace period)"
down_start=$(python3 -c 'import time; print(time.time())')
dc down -v
down_s=$(python3 -c "import time; print(f'{time.time() - $down_start:.1f}')")
echo "down: ${down_s} s"
awk -v d="$down_s" 'BEGIN { exit !(d < 20) }' || { echo "down took longer than the 20 s grace period" >&2; exit 1; }

if [ "${AGL_RECORD_DOCS:-0}" = 1 ]; then
  cat >docs/docker.md <<DOC
# Container images and compose: measured

Measured by \`AGL_RECORD_DOCS=1 ./scripts/docker-test.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores,
$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Docker $(docker version -f '{{.Server.Version}}'),
$("${COMPOSE[@]}" version --short 2>/dev/null || "${COMPOSE[@]}" version | head -1).

| what | value |
|---|---|
| \`ghcr.io/agl-project/agl-store\` image | ${store_mb} MB |
| \`ghcr.io/agl-project/agl-agentops\` image | ${agentops_mb} MB |
| \`up -d\` to store and AgentOps healthy (images built) | ${up_s} s |
| \`down\` (SIGTERM, drain, exit) | ${down_s} s |

Both images: distroless cc (glibc only), user 65532, read-only root filesystem in compose,
all capabilities dropped, exec-form entrypoint, \`HEALTHCHECK\` through the binary itself.
DOC
  echo "wrote docs/docker.md"
fi
echo "docker tests passed"
