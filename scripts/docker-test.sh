#!/usr/bin/env bash
# End-to-end test of the container images and compose.yaml, on this machine's Docker engine.
#
#   ./scripts/docker-test.sh          (the test command runs it; skips plainly without Docker)
#
# Builds the images from docker/Dockerfile (base images supplied locally when they cannot be
# pulled, see scripts/docker-bases.sh), brings the default profile up on spare host ports,
# and drives it through those ports with the official agentlightning client and the real
# agentops SDK (tests/docker/test_stack.py). The gpu profile's `llm-proxy` runs too, in
# front of the vLLM test double (an image of its own, under the name `vllm`), and the
# launcher image is built on a stand-in for vllm/vllm-openai (a shell image whose `vllm`
# is the double) and run once, since no GPU and no registry are here. Prints image sizes
# and the time from `up` to healthy and of `down`; AGL_RECORD_DOCS=1 also writes them to
# docs/docker.md.
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
export AGL_STORE_PORT=14747 AGL_AGENTOPS_PORT=18002 AGL_LLM_PORT=18000
export AGL_STORE_PG_PORT_1=14757 AGL_STORE_PG_PORT_2=14758
export AGL_AGENTOPS_PUBLIC_URL=http://127.0.0.1:18002
# AGL_GIT_COMMIT is left unset, as a user's `docker compose up` leaves it: the images read
# their commit from the build context (checked by test_the_images_report_the_commit_…).
unset AGL_GIT_COMMIT
# The stack runs keyed, as a shared cluster would: every service requires the key and the
# official clients send it (UUID-shaped: the older AgentOps SDKs accept no other key).
AGL_KEY="$(python3 -c 'import uuid; print(uuid.uuid4())')"
export AGL_KEY
FILES=(-f compose.yaml -f tests/docker/compose.test.yaml)
dc() { "${COMPOSE[@]}" "${FILES[@]}" "$@"; }
LAUNCHER_CONTAINER=agl-e2e-launcher
cleanup() {
  docker rm -f "$LAUNCHER_CONTAINER" >/dev/null 2>&1 || true
  dc --profile gpu --profile postgres down -v --remove-orphans >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "==> compose files are valid"
"${COMPOSE[@]}" -f compose.yaml config -q
"${COMPOSE[@]}" -f compose.yaml --profile gpu --profile observability --profile postgres config -q

echo "==> base images"
./scripts/docker-bases.sh

if [ "${AGL_RECORD_DOCS:-0}" = 1 ]; then
  # What a new user waits for: the first `docker compose build` without any build cache,
  # then the rebuild after a one-line source edit (on a scratch copy of the context).
  echo "==> first build (no cache) and rebuild after an edit, for docs/docker.md"
  # The first image without cache; the second shares its build stages, as it would on a
  # clean machine (--no-cache on both would compile everything twice).
  t=$(date +%s)
  "${COMPOSE[@]}" -f compose.yaml build --no-cache store >/dev/null
  "${COMPOSE[@]}" -f compose.yaml build agentops >/dev/null
  first_build_s=$(( $(date +%s) - t ))
  scratch=$(mktemp -d)
  tar --exclude=./target --exclude='./.venv*' -cf - . | tar -xf - -C "$scratch"
  echo "// edited" >>"$scratch/services/store/src/main.rs"
  t=$(date +%s)
  docker build -q -f "$scratch/docker/Dockerfile" --target agl-store -t agl-test/edited:local "$scratch" >/dev/null
  edit_build_s=$(( $(date +%s) - t ))
  rm -rf "$scratch"
  docker rmi agl-test/edited:local >/dev/null 2>&1 || true
  echo "first build ${first_build_s} s, after an edit ${edit_build_s} s"
fi

echo "==> build"
build_start=$(date +%s)
docker build -q -f docker/Dockerfile --target agl-store \
  -t ghcr.io/agl-project/agl-store:0.1.0 . >/dev/null
docker build -q -f docker/Dockerfile --target agl-agentops \
  -t ghcr.io/agl-project/agl-agentops:0.1.0 . >/dev/null
docker build -q -f docker/Dockerfile --target agl-vllm-proxy \
  -t ghcr.io/agl-project/agl-vllm-proxy:0.1.0 . >/dev/null
docker build -q -f docker/Dockerfile --target vllm-test-double \
  -t agl-test/vllm-test-double:local . >/dev/null
# The launcher image on a stand-in for vllm/vllm-openai (tagged with a name of its own, so
# it is never mistaken for the real one): the real image cannot be pulled here.
LAUNCHER_IMAGE=agl-test/agl-vllm:standin
docker build -q -f tests/docker/vllm-standin.Dockerfile -t agl-test/vllm-openai-standin:local \
  tests/docker >/dev/null
docker build -q -f docker/Dockerfile --target agl-vllm \
  --build-arg VLLM_IMAGE=agl-test/vllm-openai-standin:local -t "$LAUNCHER_IMAGE" . >/dev/null
build_s=$(( $(date +%s) - build_start ))
echo "built in ${build_s} s"

size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.1f", $1/1000000}'; }
store_mb=$(size ghcr.io/agl-project/agl-store:0.1.0)
agentops_mb=$(size ghcr.io/agl-project/agl-agentops:0.1.0)
proxy_mb=$(size ghcr.io/agl-project/agl-vllm-proxy:0.1.0)
launcher_add_mb=$(awk -v a="$(size "$LAUNCHER_IMAGE")" -v b="$(size agl-test/vllm-openai-standin:local)" \
  'BEGIN { printf "%.1f", a - b }')
echo "image sizes: agl-store ${store_mb} MB, agl-agentops ${agentops_mb} MB, agl-vllm-proxy ${proxy_mb} MB," \
  "agl-vllm adds ${launcher_add_mb} MB to its vLLM base"
# The launcher's binary must run on the vLLM images' Ubuntu 22.04 (glibc 2.35).
if command -v objdump >/dev/null; then
  mkdir -p "$ROOT/target"
  probe=$(docker create "$LAUNCHER_IMAGE")
  copied=0
  docker cp "$probe:/usr/local/bin/agl-vllm" "$ROOT/target/agl-vllm-image-probe" >/dev/null || copied=$?
  docker rm "$probe" >/dev/null
  [ "$copied" = 0 ] || { echo "could not copy agl-vllm out of $LAUNCHER_IMAGE" >&2; exit 1; }
  glibc_max=$(objdump -T "$ROOT/target/agl-vllm-image-probe" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
  rm -f "$ROOT/target/agl-vllm-image-probe"
  echo "agl-vllm needs ${glibc_max}"
  printf '%s\nGLIBC_2.35\n' "$glibc_max" | sort -V -C \
    || { echo "agl-vllm needs ${glibc_max}, newer than the glibc 2.35 of vLLM's base images" >&2; exit 1; }
fi
for mb in "$store_mb" "$agentops_mb" "$proxy_mb"; do
  awk -v m="$mb" 'BEGIN { exit !(m < 40) }' || { echo "an image is over 40 MB" >&2; exit 1; }
done

echo "==> up"
cleanup
up_start=$(python3 -c 'import time; print(time.time())')
dc --profile postgres up -d --no-build
healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$(dc ps -q "$1")" 2>/dev/null)" = healthy ]; }
deadline=$(( $(date +%s) + 120 ))
until healthy store && healthy agentops && healthy store-pg-1 && healthy store-pg-2; do
  [ "$(date +%s)" -lt "$deadline" ] || { dc ps; dc logs --tail 50; exit 1; }
  sleep 0.2
done
up_s=$(python3 -c "import time; print(f'{time.time() - $up_start:.1f}')")
echo "up to all healthy (with the postgres profile): ${up_s} s"

echo "==> gpu profile's llm-proxy in front of the vLLM test double"
until healthy vllm-double; do
  [ "$(date +%s)" -lt "$deadline" ] || { dc ps; dc logs --tail 50 vllm-double; exit 1; }
  sleep 0.2
done
proxy_start=$(python3 -c 'import time; print(time.time())')
dc --profile gpu up -d --no-build --no-deps llm-proxy
until healthy llm-proxy; do
  [ "$(date +%s)" -lt "$deadline" ] || { dc ps; dc --profile gpu logs --tail 50 llm-proxy; exit 1; }
  sleep 0.2
done
proxy_up_s=$(python3 -c "import time; print(f'{time.time() - $proxy_start:.1f}')")
echo "llm-proxy up to healthy: ${proxy_up_s} s"

echo "==> end-to-end tests with the official packages"
VENV="$ROOT/.venv-agentops-0421"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import agentlightning, agentops, pytest' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/agentops/requirements-0421.txt
fi
AGL_E2E_KEY="$AGL_KEY" AGL_E2E_STORE=http://127.0.0.1:14747 AGL_E2E_AGENTOPS=http://127.0.0.1:18002 \
AGL_E2E_LLM=http://127.0.0.1:18000 AGL_E2E_LAUNCHER_IMAGE="$LAUNCHER_IMAGE" \
AGL_E2E_LAUNCHER_CONTAINER="$LAUNCHER_CONTAINER" AGL_E2E_NETWORK="${COMPOSE_PROJECT_NAME}_default" \
AGL_E2E_STORE_PG_1=http://127.0.0.1:14757 AGL_E2E_STORE_PG_2=http://127.0.0.1:14758 \
AGL_E2E_COMPOSE="$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "${COMPOSE[@]}" "${FILES[@]}" --profile gpu --profile postgres)" \
LITELLM_LOCAL_MODEL_COST_MAP=True \
  "$VENV/bin/python" -m pytest -q -rs -p no:cacheprovider tests/docker

echo "==> down (SIGTERM handled within the grace period)"
down_start=$(python3 -c 'import time; print(time.time())')
dc --profile gpu --profile postgres down -v
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
| \`ghcr.io/agl-project/agl-vllm-proxy\` image | ${proxy_mb} MB |
| \`ghcr.io/agl-project/agl-vllm\` (launcher) on top of \`vllm/vllm-openai\` | + ${launcher_add_mb} MB (needs ${glibc_max:-?}) |
| \`up -d\` to store and AgentOps healthy (images built) | ${up_s} s |
| \`llm-proxy\` (gpu profile, before the vLLM test double) to healthy | ${proxy_up_s} s |
| \`docker build\` of the five images above (this run, with whatever build cache the machine had) | ${build_s} s |
| \`docker compose build\` of store and AgentOps on a clean machine (no build cache; base images present) | ${first_build_s} s |
| the same after a source edit (the dependency layer cached) | ${edit_build_s} s |
| \`down\` (SIGTERM, drain, exit; AgentOps keeps serving for its drain period, 5 s unless \`AGL_AGENTOPS_DRAIN_SECONDS\` says otherwise, so that exiting agents can flush) | ${down_s} s |

agl-store, agl-agentops and agl-vllm-proxy: distroless cc (glibc only), user 65532,
read-only root filesystem in compose, all capabilities dropped, exec-form entrypoint,
\`HEALTHCHECK\` through the binary itself. agl-vllm adds its one binary (its newest glibc
symbol version is checked against the 2.35 of the Ubuntu 22.04-based vLLM images) and user
65532 to the official image; here it was built on a local stand-in for that image, since
none can be pulled.
DOC
  echo "wrote docs/docker.md"
fi
echo "docker tests passed"
