"""The official agentlightning 0.2.2 ``LightningStoreClient`` (flat routes) against the server."""

from __future__ import annotations

import asyncio
import re
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, List

import aiohttp
import pytest
import requests
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentlightning.store.client_server import LightningStoreClient
from agentlightning.types import LLM, AttemptedRollout, PromptTemplate, Rollout, RolloutConfig, Span

from common import IS_OFFICIAL, unique, wait_until

ROLLOUT_ID = re.compile(r"^ro-[0-9a-f]{12}$")
ATTEMPT_ID = re.compile(r"^at-[0-9a-f]{8}$")
ROLLOUT_KEYS = {"rollout_id", "input", "start_time", "end_time", "mode", "resources_id", "status", "config", "metadata"}


@pytest.fixture(scope="module")
def server(server_v022):
    return server_v022


@asynccontextmanager
async def store_client(server, **kwargs) -> AsyncIterator[LightningStoreClient]:
    client = LightningStoreClient(server.base_url, **kwargs)
    try:
        yield client
    finally:
        await client.close()


async def drain(client: LightningStoreClient) -> None:
    for _ in range(10000):
        if await client.dequeue_rollout() is None:
            return
    raise AssertionError("queue never became empty")


def make_span(rollout_id: str, attempt_id: str, sequence_id: int, name: str, **attributes) -> Span:
    now = time.time()
    return Span.from_attributes(
        attributes=attributes,
        rollout_id=rollout_id,
        attempt_id=attempt_id,
        sequence_id=sequence_id,
        name=name,
        start_time=now,
        end_time=now + 0.01,
    )


async def test_training_loop_with_concurrent_workers(server):
    tag = unique()
    n_rollouts, n_workers = 12, 4
    async with store_client(server) as algo:
        await drain(algo)
        resources = await algo.add_resources(
            {
                "main_llm": LLM(endpoint="http://127.0.0.1:9/v1", model=f"model-{tag}"),
                "prompt": PromptTemplate(template="Solve {task}", engine="f-string"),
            }
        )
        assert re.match(r"^rs-", resources.resources_id)
        latest = await algo.get_latest_resources()
        assert latest is not None and latest.resources_id == resources.resources_id
        assert latest.resources["main_llm"].model == f"model-{tag}"

        config = RolloutConfig(max_attempts=2, retry_condition=["failed"])
        enqueued: List[Rollout] = []
        for i in range(n_rollouts):
            enqueued.append(
                await algo.enqueue_rollout(input={"tag": tag, "task": i}, mode="train", config=config, metadata={"i": i})
            )
        ids = [r.rollout_id for r in enqueued]
        assert len(set(ids)) == n_rollouts
        for i, r in enumerate(enqueued):
            assert ROLLOUT_ID.match(r.rollout_id), r.rollout_id
            assert r.status == "queuing" and r.input == {"tag": tag, "task": i}
            assert r.resources_id == resources.resources_id
            assert r.config == config and r.metadata == {"i": i} and r.mode == "train"

        clients = [LightningStoreClient(server.base_url) for _ in range(n_workers)]
        try:

            async def work(client: LightningStoreClient) -> List[AttemptedRollout]:
                claimed: List[AttemptedRollout] = []
                while True:
                    rollout = await client.dequeue_rollout()
                    if rollout is None:
                        return claimed
                    claimed.append(rollout)

            claims = await asyncio.gather(*(work(c) for c in clients))
        finally:
            for c in clients:
                await c.close()
        all_claimed = [r for claimed in claims for r in claimed]
        claimed_ids = [r.rollout_id for r in all_claimed]
        assert len(claimed_ids) == len(set(claimed_ids)), "a rollout was handed out twice"
        assert sorted(claimed_ids) == sorted(ids)
        for claimed in claims:
            positions = [ids.index(r.rollout_id) for r in claimed]
            assert positions == sorted(positions)  # FIFO
        attempt_of = {}
        for r in all_claimed:
            assert isinstance(r, AttemptedRollout)
            assert r.status == "preparing"
            assert r.attempt.sequence_id == 1 and r.attempt.status == "preparing"
            assert r.attempt.rollout_id == r.rollout_id
            assert ATTEMPT_ID.match(r.attempt.attempt_id), r.attempt.attempt_id
            attempt_of[r.rollout_id] = r.attempt.attempt_id

        async def report(rollout_id: str) -> None:
            attempt_id = attempt_of[rollout_id]
            for step in range(2):
                seq = await algo.get_next_span_sequence_id(rollout_id, attempt_id)
                assert seq == step + 1
                stored = await algo.add_span(make_span(rollout_id, attempt_id, seq, f"step-{step}", step=step))
                assert (stored.rollout_id, stored.attempt_id, stored.sequence_id) == (rollout_id, attempt_id, seq)

        await asyncio.gather(*(report(rid) for rid in ids))
        for rid in ids:
            spans = await algo.query_spans(rid)
            assert [(s.sequence_id, s.name) for s in spans] == [(1, "step-0"), (2, "step-1")]
            assert all(s.attempt_id == attempt_of[rid] for s in spans)
            current = await algo.get_rollout_by_id(rid)
            assert current.status == "running"
            attempt = await algo.get_latest_attempt(rid)
            assert attempt.attempt_id == attempt_of[rid]
            assert attempt.status == "running" and attempt.last_heartbeat_time is not None

        # One rollout fails once and is retried, the rest succeed.
        retried = ids[0]
        failed = await algo.update_attempt(retried, attempt_of[retried], status="failed")
        assert failed.status == "failed" and failed.end_time is not None
        for rid in ids[1:]:
            done = await algo.update_attempt(rid, attempt_of[rid], status="succeeded", worker_id=f"w-{tag}")
            assert done.status == "succeeded" and done.worker_id == f"w-{tag}"
        assert (await algo.get_rollout_by_id(retried)).status == "requeuing"
        requeuing = await algo.query_rollouts(status=["requeuing"], rollout_ids=ids)
        assert [r.rollout_id for r in requeuing] == [retried]

        finished = await algo.wait_for_rollouts(rollout_ids=ids, timeout=0.1)
        assert sorted(r.rollout_id for r in finished) == sorted(ids[1:])
        assert all(r.status == "succeeded" and r.end_time is not None for r in finished)

        again = await algo.dequeue_rollout()
        assert again is not None and again.rollout_id == retried
        assert again.attempt.sequence_id == 2 and again.status == "preparing"
        assert await algo.dequeue_rollout() is None
        seq = await algo.get_next_span_sequence_id(retried, again.attempt.attempt_id)
        assert seq == 3
        await algo.add_span(make_span(retried, again.attempt.attempt_id, seq, "retry-step"))
        latest_spans = await algo.query_spans(retried, "latest")
        assert [s.name for s in latest_spans] == ["retry-step"]
        assert [s.name for s in await algo.query_spans(retried, attempt_of[retried])] == ["step-0", "step-1"]
        await algo.update_attempt(retried, "latest", status="succeeded")

        finished = await algo.wait_for_rollouts(rollout_ids=ids, timeout=0.1)
        assert sorted(r.rollout_id for r in finished) == sorted(ids)
        succeeded = await algo.query_rollouts(status=["succeeded"], rollout_ids=ids)
        assert sorted(r.rollout_id for r in succeeded) == sorted(ids)
        attempts = await algo.query_attempts(retried)
        assert [(a.sequence_id, a.status) for a in attempts] == [(1, "failed"), (2, "succeeded")]


async def test_start_rollout_attempts_and_updates(server):
    tag = unique()
    async with store_client(server) as client:
        started = await client.start_rollout(
            input={"tag": tag}, mode="val", config=RolloutConfig(timeout_seconds=50), metadata={"o": tag}
        )
        assert isinstance(started, AttemptedRollout)
        assert started.status == "preparing" and started.attempt.sequence_id == 1
        assert started.config.timeout_seconds == 50.0 and started.metadata == {"o": tag}
        rid = started.rollout_id
        fetched = await client.get_rollout_by_id(rid)
        assert fetched is not None and fetched.rollout_id == rid and fetched.status == "preparing"

        second = await client.start_attempt(rid)
        assert second.rollout_id == rid and second.attempt.sequence_id == 2
        assert second.status == "preparing"
        assert (await client.get_latest_attempt(rid)).attempt_id == second.attempt.attempt_id
        assert [a.sequence_id for a in await client.query_attempts(rid)] == [1, 2]

        updated = await client.update_rollout(rid, mode="test", metadata={"o": tag, "v": 2})
        assert updated.mode == "test" and updated.metadata == {"o": tag, "v": 2} and updated.status == "preparing"
        cancelled = await client.update_rollout(rid, status="cancelled")
        assert cancelled.status == "cancelled" and cancelled.end_time is not None
        waited = await client.wait_for_rollouts(rollout_ids=[rid], timeout=0)
        assert [(r.rollout_id, r.status) for r in waited] == [(rid, "cancelled")]

        queued = await client.enqueue_rollout(input={"tag": tag})
        assert (await client.query_rollouts(rollout_ids=[queued.rollout_id, rid], status=["queuing"]))[0].rollout_id == queued.rollout_id
        assert await client.get_latest_attempt(queued.rollout_id) is None
        assert await client.query_attempts(queued.rollout_id) == []


async def test_resources_update_and_lookup(server):
    tag = unique()
    async with store_client(server) as client:
        first = await client.add_resources({"p": PromptTemplate(template="a", engine="jinja")})
        updated = await client.update_resources(
            first.resources_id, {"llm": LLM(endpoint="http://127.0.0.1:9/v1", model=tag)}
        )
        assert updated.resources_id == first.resources_id and set(updated.resources) == {"llm"}
        fetched = await client.get_resources_by_id(first.resources_id)
        assert fetched is not None and fetched.resources["llm"].model == tag
        custom = await client.update_resources(f"custom-{tag}", {"p": PromptTemplate(template="b", engine="f-string")})
        assert custom.resources_id == f"custom-{tag}"
        assert (await client.get_latest_resources()).resources_id == f"custom-{tag}"
        assert (await client.enqueue_rollout(input=tag)).resources_id == f"custom-{tag}"
        assert await client.get_resources_by_id(f"rs-missing-{tag}") is None


async def test_otel_spans_and_watchdog(server):
    tag = unique()
    async with store_client(server) as client:
        await drain(client)
        rollout = await client.enqueue_rollout(
            input={"tag": tag}, config=RolloutConfig(timeout_seconds=1.0, max_attempts=2, retry_condition=["timeout"])
        )
        claimed = await client.dequeue_rollout()
        assert claimed is not None and claimed.rollout_id == rollout.rollout_id
        rid, aid = claimed.rollout_id, claimed.attempt.attempt_id

        provider = TracerProvider()
        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        with provider.get_tracer("compat").start_as_current_span("sdk-span") as sdk_span:
            sdk_span.set_attribute("source", "sdk")
        (readable,) = memory.get_finished_spans()
        sent = await client.add_otel_span(rid, aid, readable)
        assert sent.sequence_id == 1
        spans = await client.query_spans(rid, aid)
        assert [(s.sequence_id, s.name, s.span_id) for s in spans] == [
            (1, "sdk-span", format(sdk_span.get_span_context().span_id, "016x"))
        ]
        assert spans[0].attributes == {"source": "sdk"}

        async def timed_out():
            current = await client.get_rollout_by_id(rid)
            return current if current is not None and current.status == "requeuing" else None

        await wait_until(timed_out, timeout=20, interval=0.2, what="the watchdog to time the attempt out")
        attempts = await client.query_attempts(rid)
        assert [(a.attempt_id, a.status) for a in attempts] == [(aid, "timeout")]
        again = await client.dequeue_rollout()
        assert again is not None and again.rollout_id == rid and again.attempt.sequence_id == 2


async def test_unknown_ids(server):
    missing = f"ro-{unique()}"
    async with store_client(server) as client:
        begin = time.monotonic()
        assert await client.get_rollout_by_id(missing) is None
        assert time.monotonic() - begin < 2.0  # 0.2.2 answers a clean null
        assert await client.get_latest_attempt(missing) is None
        assert await client.query_attempts(missing) == []
        assert await client.query_spans(missing) == []
        assert await client.wait_for_rollouts(rollout_ids=[missing], timeout=0) == []
    async with store_client(server, retry_delays=(), health_retry_delays=()) as client:
        with pytest.raises(aiohttp.ClientResponseError) as err:
            await client.update_attempt(missing, "latest", status="succeeded")
        assert err.value.status == 400
        with pytest.raises(aiohttp.ClientResponseError) as err:
            await client.start_attempt(missing)
        assert err.value.status == 400


def test_raw_flat_routes(server):
    """Shapes the 0.2.2 client hides: 200 on creates, bare integers, 400 error bodies."""
    tag = unique()
    base = server.base_url
    with requests.Session() as s:
        def call(method, path, expect=200, **kwargs):
            resp = s.request(method, base + path, timeout=30, **kwargs)
            assert resp.status_code == expect, f"{method} {path}: {resp.status_code} {resp.text[:500]}"
            assert resp.headers["content-type"].split(";")[0] == "application/json"
            return resp.json()

        assert call("GET", "/health") == {"status": "ok"}
        queued = call("POST", "/enqueue_rollout", json={"input": tag})
        assert set(queued) == ROLLOUT_KEYS and queued["status"] == "queuing"
        started = call("POST", "/start_rollout", json={"input": tag})
        assert set(started) == ROLLOUT_KEYS | {"attempt"}
        rid, aid = started["rollout_id"], started["attempt"]["attempt_id"]
        assert call("GET", f"/get_rollout_by_id/{rid}")["rollout_id"] == rid
        assert set(call("GET", f"/get_rollout_by_id/{rid}")) == ROLLOUT_KEYS
        assert call("GET", f"/get_rollout_by_id/ro-missing-{tag}") is None
        assert call("GET", f"/get_next_span_sequence_id/{rid}/{aid}") == 1  # a bare integer
        assert call("GET", f"/get_next_span_sequence_id/{rid}/{aid}") == 2
        span = make_span(rid, aid, 2, "raw").model_dump(mode="json")
        assert call("POST", "/add_span", json=span)["span_id"] == span["span_id"]
        assert [x["name"] for x in call("GET", f"/query_spans/{rid}?attempt_id={aid}")] == ["raw"]
        res = call("POST", "/add_resources", json={"resources": {"p": {"resource_type": "prompt_template", "template": "t", "engine": "jinja"}}})
        assert set(res) == {"resources_id", "resources"}
        assert call("GET", "/get_latest_resources")["resources_id"] == res["resources_id"]
        upd = call("POST", "/update_resources", json={"resources_id": res["resources_id"], "resources": {}})
        assert upd == {"resources_id": res["resources_id"], "resources": {}}
        attempt = call("POST", "/update_attempt", json={"rollout_id": rid, "attempt_id": "latest", "status": "succeeded"})
        assert attempt["status"] == "succeeded" and attempt["attempt_id"] == aid
        assert call("POST", "/query_rollouts", json={"status": ["succeeded"], "rollout_ids": [rid, queued["rollout_id"]]})[0]["rollout_id"] == rid
        rollout = call("POST", "/update_rollout", json={"rollout_id": queued["rollout_id"], "status": "cancelled"})
        assert set(rollout) == ROLLOUT_KEYS and rollout["status"] == "cancelled"
        waited = call("POST", "/wait_for_rollouts", json={"rollout_ids": [rid, queued["rollout_id"]], "timeout": 0})
        assert sorted(w["rollout_id"] for w in waited) == sorted([rid, queued["rollout_id"]])

        # A fresh connection: the official 0.2.2 server drops the connection after an error answer.
        resp = requests.post(
            base + "/start_attempt", json={"rollout_id": f"ro-missing-{tag}"}, headers={"Connection": "close"}, timeout=30
        )
        assert resp.status_code == 400 and resp.headers["content-type"] == "application/json"
        err = resp.json()
        assert err["error_type"] == "ValueError" and f"ro-missing-{tag}" in err["detail"]
        call("POST", "/update_rollout", 422, json={"rollout_id": rid, "status": None})
        call("POST", "/enqueue_rollout", 422, json={"config": {}})


async def test_the_shared_key_in_the_url(keyed_server_v022):
    """The 0.2.2 client (aiohttp too) sends a key given in its URL as HTTP Basic
    credentials; without it every flat route is refused."""
    from conftest import TEST_KEY

    base = keyed_server_v022.base_url
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.post(f"{base}/enqueue_rollout", json={"input": {}}) as refused:
            assert refused.status == 401
    keyed = base.replace("http://", f"http://agl:{TEST_KEY}@")
    client = LightningStoreClient(keyed)
    try:
        rollout = await client.enqueue_rollout(input={"task": "keyed-022"})
        claimed = await client.dequeue_rollout()
        assert claimed is not None and claimed.rollout_id == rollout.rollout_id
        await client.update_attempt(claimed.rollout_id, claimed.attempt.attempt_id, status="succeeded")
        done = await client.wait_for_rollouts(rollout_ids=[rollout.rollout_id], timeout=0.05)
        assert [r.status for r in done] == ["succeeded"]
    finally:
        await client.close()
