"""End to end against the compose stack, through its published ports.

scripts/docker-test.sh builds the images, brings the stack up and runs this module with a
virtualenv that holds the official packages (agentlightning 0.3.0 and agentops 0.4.21).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from agentlightning.store.client_server import LightningStoreClient  # noqa: E402
from agentlightning.types import Span  # noqa: E402,F401  (the client validates spans with it)

ROOT = Path(__file__).resolve().parents[2]
STORE = os.environ.get("AGL_E2E_STORE", "http://127.0.0.1:14747")
AGENTOPS = os.environ.get("AGL_E2E_AGENTOPS", "http://127.0.0.1:18002")
COMPOSE = json.loads(os.environ.get("AGL_E2E_COMPOSE", '["docker-compose"]'))


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


def http(method: str, url: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, json.loads(resp.read() or b"null")


def run(coro):
    return asyncio.run(coro)


async def with_client(fn):
    client = LightningStoreClient(STORE)
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
        AGENTOPS_API_KEY="00000000-0000-0000-0000-000000000000",
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
