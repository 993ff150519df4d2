"""End to end against the compose stack, through its published ports.

scripts/docker-test.sh builds the images, brings the stack up (with the gpu profile's
`llm-proxy` in front of the vLLM test double) and runs this module with a virtualenv that
holds the official packages (agentlightning 0.3.0 and agentops 0.4.21).

The stack requires a key (AGL_E2E_KEY): the official 0.3.0 client sends it as the password
of its URL, the AgentOps SDK as its API key, the OpenTelemetry exporter from
OTEL_EXPORTER_OTLP_HEADERS, plain requests as `Authorization: Bearer`.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from agentlightning.adapter.triplet import LlmProxyTraceToTriplet  # noqa: E402
from agentlightning.store.client_server import LightningStoreClient  # noqa: E402
from agentlightning.types import Span  # noqa: E402,F401  (the client validates spans with it)

ROOT = Path(__file__).resolve().parents[2]
KEY = os.environ.get("AGL_E2E_KEY", "")
STORE = os.environ.get("AGL_E2E_STORE", "http://127.0.0.1:14747")
AGENTOPS = os.environ.get("AGL_E2E_AGENTOPS", "http://127.0.0.1:18002")
LLM = os.environ.get("AGL_E2E_LLM", "http://127.0.0.1:18000")
LAUNCHER_IMAGE = os.environ.get("AGL_E2E_LAUNCHER_IMAGE", "")
LAUNCHER_CONTAINER = os.environ.get("AGL_E2E_LAUNCHER_CONTAINER", "agl-e2e-launcher")
NETWORK = os.environ.get("AGL_E2E_NETWORK", "agl-e2e_default")
COMPOSE = json.loads(os.environ.get("AGL_E2E_COMPOSE", '["docker-compose"]'))
# The postgres profile's two replicas.
STORE_PG = [
    os.environ.get("AGL_E2E_STORE_PG_1", "http://127.0.0.1:14757"),
    os.environ.get("AGL_E2E_STORE_PG_2", "http://127.0.0.1:14758"),
]


def compose(*args: str, env: dict | None = None) -> str:
    full = dict(os.environ, **(env or {}))
    out = subprocess.run([*COMPOSE, *args], cwd=ROOT, env=full, check=True, capture_output=True, text=True)
    return out.stdout


def container(service: str) -> str:
    return compose("ps", "-q", service).strip()


def inspect(service: str) -> dict:
    out = subprocess.run(["docker", "inspect", container(service)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)[0]


def wait_healthy(service: str, timeout: float = 60.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        cid = container(service)
        if cid:
            state = json.loads(
                subprocess.run(["docker", "inspect", "-f", "{{json .State}}", cid], capture_output=True, text=True).stdout
                or "{}"
            )
            if state.get("Health", {}).get("Status") == "healthy":
                return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"{service} did not turn healthy within {timeout}s")


# Loopback only, whatever proxy the environment names.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def headers(key: str | None = None) -> dict:
    key = KEY if key is None else key
    out = {"Content-Type": "application/json"}
    if key:
        out["Authorization"] = f"Bearer {key}"
    return out


def http(method: str, url: str, body=None, key: str | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers(key))
    with _OPENER.open(req, timeout=10) as resp:
        return resp.status, json.loads(resp.read() or b"null")


def status_of(method: str, url: str, key: str | None = None) -> int:
    try:
        return http(method, url, {} if method == "POST" else None, key=key)[0]
    except urllib.error.HTTPError as err:
        return err.code


def keyed(url: str) -> str:
    """The URL the 0.3.0 client is given: the key as the password (aiohttp sends Basic)."""
    return url.replace("http://", f"http://agl:{KEY}@") if KEY else url


def sse(url: str, body) -> list[dict]:
    """A streamed call: the data events of the response, in order, without [DONE]."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers())
    events = []
    with _OPENER.open(req, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        for line in resp.read().decode().splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[len("data: "):]))
    return events


def proxied_calls_land_in_the_store(llm: str) -> tuple[str, str]:
    """A non-streaming and a streaming chat call under a fresh attempt, through `llm`; the
    official client reads the spans back and the official adapter turns them into triplets
    that carry the token ids the agent received. Returns the rollout id and the first
    call's completion text."""
    status, rollout = http("POST", f"{STORE}/v1/agl/rollouts", {"input": {"llm": llm}})
    assert status == 201
    rid, aid = rollout["rollout_id"], rollout["attempt"]["attempt_id"]
    base = f"{llm}/rollout/{rid}/attempt/{aid}/v1"
    _, first = http("POST", f"{base}/chat/completions", {
        "model": "agl-model", "messages": [{"role": "user", "content": "hello from the e2e test"}], "max_tokens": 16,
    })
    assert first["prompt_token_ids"] and first["choices"][0]["token_ids"], first
    expected = [(first["prompt_token_ids"], first["choices"][0]["token_ids"])]
    events = sse(f"{base}/chat/completions", {
        "model": "agl-model", "messages": [{"role": "user", "content": "stream it please"}], "stream": True,
    })
    prompt_ids = next(e["prompt_token_ids"] for e in events if e.get("prompt_token_ids"))
    response_ids = [t for e in events for c in e["choices"] for t in (c.get("token_ids") or [])]
    assert response_ids
    expected.append((prompt_ids, response_ids))

    async def read(client: LightningStoreClient):
        deadline = time.monotonic() + 30
        while True:
            spans = list(await client.query_spans(rid))
            if sum(s.name == "raw_gen_ai_request" for s in spans) >= 2:
                return spans
            assert time.monotonic() < deadline, f"only {len(spans)} spans recorded"
            await asyncio.sleep(0.1)

    spans = run(with_client(read))
    assert all(s.rollout_id == rid and s.attempt_id == aid for s in spans)
    calls = sorted((s for s in spans if s.name == "raw_gen_ai_request"), key=lambda s: s.sequence_id)
    assert [s.sequence_id for s in calls] == [1, 2]
    triplets = LlmProxyTraceToTriplet().adapt(spans)
    assert [(t.prompt["token_ids"], t.response["token_ids"]) for t in triplets] == expected
    return rid, first["choices"][0]["message"]["content"]


def page(url: str) -> str:
    """A dashboard page as a browser gets it once its user typed the key at the prompt
    (Basic, any user name); redirects are followed."""
    hdrs = {}
    if KEY:
        hdrs["Authorization"] = "Basic " + base64.b64encode(f"agl:{KEY}".encode()).decode()
    with _OPENER.open(urllib.request.Request(url, headers=hdrs), timeout=10) as resp:
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8", url
        return resp.read().decode()


def follow_on_the_dashboard(rid: str, completion: str) -> None:
    """From the store's overview to the rollout in the list, to its waterfall and calls."""
    assert 'id="overview"' in page(f"{STORE}/")
    listing = page(f"{STORE}/ui/rollouts?q={rid}")
    assert f'href="/ui/rollouts/{rid}"' in listing
    detail = page(f"{STORE}/ui/rollouts/{rid}")
    assert detail.count('class="llm-call"') == 2
    assert html.escape(completion, quote=False) in detail
    assert 'data-span-id=' in detail and 'class="wf-row llm"' in detail
    if KEY:
        # A browser without the key is asked for it.
        try:
            _OPENER.open(f"{STORE}/", timeout=10)
            raise AssertionError("the dashboard answered without the key")
        except urllib.error.HTTPError as err:
            assert err.code == 401
            assert any(c.startswith("Basic") for c in err.headers.get_all("WWW-Authenticate"))


def run(coro):
    return asyncio.run(coro)


async def with_client(fn):
    client = LightningStoreClient(keyed(STORE))
    try:
        return await fn(client)
    finally:
        await client.close()


def test_official_client_drives_a_training_loop():
    async def loop(client: LightningStoreClient):
        queued = await client.enqueue_many_rollouts([{"input": {"task": i}} for i in range(3)]) if hasattr(
            client, "enqueue_many_rollouts"
        ) else [await client.enqueue_rollout(input={"task": i}) for i in range(3)]
        ids = [r.rollout_id for r in queued]
        for _ in ids:
            claimed = await client.dequeue_rollout(worker_id="e2e-worker")
            assert claimed is not None and claimed.rollout_id in ids
            seq = await client.get_next_span_sequence_id(claimed.rollout_id, claimed.attempt.attempt_id)
            assert seq == 1
            await client.update_attempt(claimed.rollout_id, claimed.attempt.attempt_id, status="succeeded")
        done = await client.wait_for_rollouts(rollout_ids=ids, timeout=0.1)
        assert sorted(r.rollout_id for r in done) == sorted(ids)
        assert all(r.status == "succeeded" for r in done)
        worker = await client.get_worker_by_id("e2e-worker")
        assert worker is not None and worker.status == "idle"
        return ids

    run(with_client(loop))


def test_acknowledged_writes_survive_restart_and_sigkill():
    status, rollout = http("POST", f"{STORE}/v1/agl/rollouts", {"input": {"durable": True}})
    assert status == 201
    rid, aid = rollout["rollout_id"], rollout["attempt"]["attempt_id"]
    acked = []
    for i in range(1, 21):
        span = {
            "rollout_id": rid, "attempt_id": aid, "sequence_id": i, "trace_id": "ab" * 16,
            "span_id": f"{i:016x}", "parent_id": None, "name": f"step-{i}",
            "status": {"status_code": "OK"}, "attributes": {"i": i}, "events": [], "links": [],
            "start_time": 1.0, "end_time": 2.0, "context": None, "parent": None,
            "resource": {"attributes": {}, "schema_url": ""},
        }
        status, _ = http("POST", f"{STORE}/v1/agl/spans", span)
        assert status == 201
        acked.append(f"{i:016x}")

    def spans_now():
        _, page = http("GET", f"{STORE}/v1/agl/spans?rollout_id={rid}")
        return sorted(s["span_id"] for s in page["items"])

    compose("restart", "store")
    wait_healthy("store")
    assert spans_now() == sorted(acked)

    subprocess.run(["docker", "kill", "-s", "KILL", container("store")], check=True, capture_output=True)
    compose("up", "-d", "--no-deps", "store")
    wait_healthy("store")
    assert spans_now() == sorted(acked), "every acknowledged span survived SIGKILL"
    _, nxt = http("POST", f"{STORE}/v1/agl/spans/next", {"rollout_id": rid, "attempt_id": aid})
    assert nxt["sequence_id"] == 21, "the sequence counter continues past the crash"


def test_two_replicas_on_postgres_carry_a_training_loop_through_a_replica_kill():
    """The postgres profile: what one replica does, the other serves; one replica is killed
    midway and the loop goes on through the other; the killed one comes back with it all."""

    async def loop():
        one, two = LightningStoreClient(keyed(STORE_PG[0])), LightningStoreClient(keyed(STORE_PG[1]))
        try:
            assert (await one.statistics())["backend"] == "postgres"
            first = [await one.enqueue_rollout(input={"task": i}) for i in range(4)]
            ids = [r.rollout_id for r in first]
            # Claimed and finished through the other replica.
            for _ in range(2):
                claimed = await two.dequeue_rollout(worker_id="pg-worker")
                assert claimed is not None and claimed.rollout_id in ids
                await two.update_attempt(claimed.rollout_id, claimed.attempt.attempt_id, status="succeeded")
            done = await one.wait_for_rollouts(rollout_ids=ids[:2], timeout=0.1)
            assert sorted(r.rollout_id for r in done) == sorted(ids[:2])
        finally:
            await two.close()
        # Replica two dies; the loop goes on through replica one.
        subprocess.run(["docker", "kill", "-s", "KILL", container("store-pg-2")], check=True, capture_output=True)
        try:
            for _ in range(2):
                claimed = await one.dequeue_rollout(worker_id="pg-worker")
                assert claimed is not None and claimed.rollout_id in ids[2:]
                await one.update_attempt(claimed.rollout_id, claimed.attempt.attempt_id, status="succeeded")
            done = await one.wait_for_rollouts(rollout_ids=ids, timeout=0.1)
            assert sorted(r.rollout_id for r in done) == sorted(ids), "every rollout finished"
        finally:
            await one.close()
        compose("up", "-d", "--no-deps", "store-pg-2")
        wait_healthy("store-pg-2")
        two = LightningStoreClient(keyed(STORE_PG[1]))
        try:
            back = await two.query_rollouts(rollout_id_in=ids)
            seen = {r.rollout_id: r.status for r in back.items}
            assert seen == {rid: "succeeded" for rid in ids}, seen
        finally:
            await two.close()

    wait_healthy("store-pg-1")
    wait_healthy("store-pg-2")
    run(loop())


def test_agentops_sdk_spans_reach_the_store():
    status, rollout = http("POST", f"{STORE}/v1/agl/rollouts", {"input": {"agent": True}})
    assert status == 201
    rid, aid = rollout["rollout_id"], rollout["attempt"]["attempt_id"]
    # Forward this agent's spans under that attempt: recreate the AgentOps container with it.
    compose(
        "up", "-d", "--no-deps", "agentops",
        env={"AGL_AGENTOPS_FORWARD_RESOURCE_ATTRIBUTES": f"agentlightning.rollout_id={rid},agentlightning.attempt_id={aid}"},
    )
    wait_healthy("agentops")
    env = dict(
        os.environ,
        AGENTOPS_API_KEY=KEY or "00000000-0000-0000-0000-000000000000",
        AGENTOPS_API_ENDPOINT=AGENTOPS,
        AGENTOPS_EXPORTER_ENDPOINT=f"{AGENTOPS}/v1/traces",
        AGENTOPS_APP_URL=AGENTOPS,
        AGENTOPS_LOGGING_TO_FILE="false",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    agent = subprocess.run(
        [sys.executable, str(ROOT / "tests/agentops/agent_run.py")], env=env, capture_output=True, text=True, timeout=120
    )
    assert agent.returncode == 0, agent.stderr[-2000:]

    async def spans(client: LightningStoreClient):
        return await client.query_spans(rid, aid)

    deadline = time.monotonic() + 30
    found = []
    while time.monotonic() < deadline and not found:
        found = run(with_client(spans))
        time.sleep(0.2)
    assert found, "agent spans forwarded by AgentOps reached the store under the attempt"
    assert all(s.attempt_id == aid for s in found)
    _, counters = http("GET", f"{AGENTOPS}/_agl/counters")
    assert counters["unmatched"] == 0 if "unmatched" in counters else True
    # The "Session Replay" link the SDK printed opens the trace's page on the dashboard.
    _, held = http("GET", f"{AGENTOPS}/_agl/traces")
    trace = held["traces"][-1]
    replay = page(f"{AGENTOPS}/sessions?trace_id={trace['trace_id']}")
    assert 'id="waterfall"' in replay
    assert replay.count('class="wf-row') == trace["span_count"]


@pytest.mark.parametrize("base", [STORE, AGENTOPS])
def test_the_images_report_the_commit_they_were_built_from(base):
    """`agl_build_info{commit}` is the checkout's HEAD (the build reads it from the context's
    .git files), not "unknown"."""
    head = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    if head.returncode != 0:
        pytest.skip("not a git checkout: the images cannot know their commit")
    req = urllib.request.Request(f"{base}/metrics", headers=headers())
    with _OPENER.open(req, timeout=10) as resp:
        metrics = resp.read().decode()
    info = next(l for l in metrics.splitlines() if l.startswith("agl_build_info{"))
    assert f'commit="{head.stdout.strip()}"' in info, info


def test_the_readmes_agentops_block_evaluates_cleanly():
    """The README's `eval "$(docker compose exec -T agentops … --print-env)"`, run as written
    (with this run's compose command): every line is an export a shell takes, and no value
    ends in a carriage return (Compose adds one per line when it allocates a terminal,
    which `-T` stops)."""
    readme = (ROOT / "README.md").read_text()
    line = next(l for l in readme.splitlines() if "--print-env)" in l and "docker compose exec" in l)
    inner = line.split('"$(', 1)[1].split(')"', 1)[0]
    assert inner.startswith("docker compose exec -T "), inner
    args = inner[len("docker compose "):].split()
    block = compose(*args)
    assert "\r" not in block, repr(block)
    exports = [l for l in block.splitlines() if l and not l.startswith("#")]
    assert exports and all(l.startswith("export ") for l in exports), block
    shell = subprocess.run(
        ["sh", "-c", f'eval "$(cat)"; printf %s "$AGENTOPS_API_ENDPOINT"'],
        input=block, capture_output=True, text=True, check=True,
    )
    endpoint = shell.stdout
    assert endpoint.startswith("http://") and endpoint == endpoint.strip(), repr(endpoint)


@pytest.mark.parametrize("service", ["store", "agentops"])
def test_containers_run_hardened(service):
    info = inspect(service)
    assert info["Config"]["User"] == "65532:65532"
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert "ALL" in (info["HostConfig"]["CapDrop"] or [])
    # The process itself, as the kernel sees it from the host: real and effective uid.
    pid = info["State"]["Pid"]
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uids) == {"65532"}, uids


def test_llm_proxy_records_token_ids_into_the_store():
    # /v1/models passes through to the double; plain /v1 calls are served untracked.
    _, models = http("GET", f"{LLM}/v1/models")
    assert [m["id"] for m in models["data"]] == ["agl-model"]
    follow_on_the_dashboard(*proxied_calls_land_in_the_store(LLM))


def test_llm_proxy_runs_hardened():
    info = inspect("llm-proxy")
    assert info["Config"]["User"] == "65532:65532"
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert "ALL" in (info["HostConfig"]["CapDrop"] or [])
    assert info["State"]["Health"]["Status"] == "healthy"


@pytest.mark.skipif(not LAUNCHER_IMAGE, reason="no launcher image was built (AGL_E2E_LAUNCHER_IMAGE)")
def test_launcher_image_serves_records_and_drains():
    """The agl-vllm launcher image (built here on a stand-in for vllm/vllm-openai whose
    `vllm` is the test double): vLLM's arguments pass through, the healthcheck turns
    healthy, calls are recorded, and `docker stop` drains it to exit status 0."""
    subprocess.run(["docker", "rm", "-f", LAUNCHER_CONTAINER], capture_output=True)
    subprocess.run([
        "docker", "run", "-d", "--name", LAUNCHER_CONTAINER, "--network", NETWORK,
        "-p", "127.0.0.1:18010:8000", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges:true", "--health-interval", "1s",
        "-e", "AGL_STORE_URL=http://store:4747", "-e", f"AGL_STORE_KEY={KEY}", "-e", f"AGL_KEY={KEY}",
        LAUNCHER_IMAGE, "agl/double-model", "--host", "127.0.0.1", "--port", "8001",
        "--served-model-name", "agl-model",
    ], check=True, capture_output=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            state = json.loads(subprocess.run(
                ["docker", "inspect", "-f", "{{json .State}}", LAUNCHER_CONTAINER], capture_output=True, text=True
            ).stdout)
            if state.get("Health", {}).get("Status") == "healthy":
                break
            assert state["Running"], subprocess.run(["docker", "logs", LAUNCHER_CONTAINER], capture_output=True, text=True).stderr
            assert time.monotonic() < deadline, "the launcher did not turn healthy"
            time.sleep(0.2)
        pid = state["Pid"]
        uids = next(line.split()[1:] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("Uid:"))
        assert set(uids) == {"65532"}, uids
        proxied_calls_land_in_the_store("http://127.0.0.1:18010")
        started = time.monotonic()
        subprocess.run(["docker", "stop", "-t", "20", LAUNCHER_CONTAINER], check=True, capture_output=True)
        assert time.monotonic() - started < 20, "the launcher drained within the grace period"
        code = subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}}", LAUNCHER_CONTAINER],
                              capture_output=True, text=True).stdout.strip()
        assert code == "0", "vLLM drained on SIGTERM and the launcher exited with its status"
    finally:
        subprocess.run(["docker", "rm", "-f", LAUNCHER_CONTAINER], capture_output=True)


@pytest.mark.skipif(not KEY, reason="the stack runs without a key (AGL_E2E_KEY)")
def test_every_service_refuses_a_request_without_the_key():
    for url in (f"{STORE}/v1/agl/rollouts", f"{STORE}/api/rollouts?state_in=queuing", f"{AGENTOPS}/_agl/counters",
                f"{LLM}/v1/models", f"{STORE_PG[0]}/v1/agl/rollouts"):
        assert status_of("GET", url, key="") == 401, url
        assert status_of("GET", url, key="not-the-key") == 401, url
        assert status_of("GET", url) == 200, url
    for url in (f"{STORE}/v1/traces", f"{AGENTOPS}/v1/traces", f"{STORE}/admin/backup"):
        assert status_of("POST", url, key="") == 401, url
    # Health stays open: the images' healthchecks and Kubernetes probes carry no key.
    for url in (f"{STORE}/healthz", f"{STORE}/readyz", f"{AGENTOPS}/health", f"{LLM}/readyz"):
        assert status_of("GET", url, key="") == 200, url
    # The AgentOps endpoint hands its token out only for the key.
    assert status_of("POST", f"{AGENTOPS}/v3/auth/token", key="") == 401


@pytest.mark.skipif(not KEY, reason="the stack runs without a key (AGL_E2E_KEY)")
def test_an_opentelemetry_exporter_sends_the_key_from_its_environment():
    """The official OTLP/HTTP exporter, configured only by the standard variables, exports a
    span into the keyed store; without the header it is refused."""
    status, rollout = http("POST", f"{STORE}/v1/agl/rollouts", {"input": {"otlp": True}})
    assert status == 201
    rid, aid = rollout["rollout_id"], rollout["attempt"]["attempt_id"]
    script = (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.resources import Resource\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter\n"
        "import os, sys\n"
        "provider = TracerProvider(resource=Resource.create({'agentlightning.rollout_id': os.environ['RID'],"
        " 'agentlightning.attempt_id': os.environ['AID'], 'agentlightning.span_sequence_id': 1}))\n"
        "exporter = OTLPSpanExporter()\n"
        "provider.add_span_processor(SimpleSpanProcessor(exporter))\n"
        "with provider.get_tracer('e2e').start_as_current_span('exported-with-a-key'):\n"
        "    pass\n"
        "provider.shutdown()\n"
    )

    def export(header_value: str | None) -> None:
        env = dict(os.environ, RID=rid, AID=aid, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{STORE}/v1/traces",
                   NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
        env.pop("OTEL_EXPORTER_OTLP_HEADERS", None)
        if header_value is not None:
            env["OTEL_EXPORTER_OTLP_HEADERS"] = header_value
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]

    def names() -> list[str]:
        _, page = http("GET", f"{STORE}/v1/agl/spans?rollout_id={rid}")
        return [s["name"] for s in page["items"]]

    export(None)  # refused: the exporter logs the 401 and drops the batch
    assert names() == []
    export(f"Authorization=Bearer%20{KEY}")
    assert names() == ["exported-with-a-key"]


@pytest.mark.skipif(not KEY, reason="the stack runs without a key (AGL_E2E_KEY)")
def test_the_022_client_drives_the_keyed_stack():
    """The official agentlightning 0.2.2 client (its own venv, made by scripts/compat.sh)
    with the key in its URL, against the compose store."""
    python = ROOT / ".venv-compat-022/bin/python"
    if not python.exists():
        pytest.skip("no .venv-compat-022 (scripts/compat.sh creates it)")
    script = (
        "import asyncio, os, sys\n"
        "from agentlightning.store.client_server import LightningStoreClient\n"
        "async def main():\n"
        "    client = LightningStoreClient(os.environ['URL'])\n"
        "    try:\n"
        "        queued = await client.enqueue_rollout(input={'from': '0.2.2'})\n"
        "        claimed = await client.dequeue_rollout()\n"
        "        assert claimed is not None\n"
        "        await client.update_attempt(claimed.rollout_id, claimed.attempt.attempt_id, status='succeeded')\n"
        "        print(queued.rollout_id, claimed.rollout_id)\n"
        "    finally:\n"
        "        await client.close()\n"
        "asyncio.run(main())\n"
    )
    env = dict(os.environ, URL=keyed(STORE), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               LITELLM_LOCAL_MODEL_COST_MAP="True")
    done = subprocess.run([str(python), "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    queued, claimed = done.stdout.strip().splitlines()[-1].split()
    _, rollout = http("GET", f"{STORE}/v1/agl/rollouts/{queued}")
    assert rollout["input"] == {"from": "0.2.2"}
    _, rollout = http("GET", f"{STORE}/v1/agl/rollouts/{claimed}")
    assert rollout["status"] == "succeeded"
