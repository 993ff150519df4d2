"""The official agentlightning 0.3.0 ``LightningStoreClient`` (and its OTLP exporter) against the server.

Every test builds its own rollouts, workers and resources with unique ids. Tests that use the
shared FIFO queue first drain whatever earlier tests left in it, so the order of tests does not
matter.
"""

from __future__ import annotations

import asyncio
import re
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Dict, List

import aiohttp
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentlightning.store.client_server import LightningStoreClient
from agentlightning.tracer.otel import OtelTracer
from agentlightning.types import (
    LLM,
    AttemptedRollout,
    EnqueueRolloutRequest,
    PromptTemplate,
    Rollout,
    RolloutConfig,
    Span,
)

from common import IS_OFFICIAL, unique, wait_until

ROLLOUT_ID = re.compile(r"^ro-[0-9a-f]{12}$")
ATTEMPT_ID = re.compile(r"^at-[0-9a-f]{8}$")
RESOURCES_ID = re.compile(r"^rs-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def server(server_v030):
    return server_v030


@asynccontextmanager
async def store_client(server, **kwargs) -> AsyncIterator[LightningStoreClient]:
    client = LightningStoreClient(server.base_url, **kwargs)
    try:
        yield client
    finally:
        await client.close()


async def drain(client: LightningStoreClient) -> None:
    """Claim whatever earlier tests left in the shared queue."""
    for _ in range(1000):
        if not await client.dequeue_many_rollouts(limit=100):
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


def is_plain_rollout(obj) -> bool:
    return isinstance(obj, Rollout) and not isinstance(obj, AttemptedRollout)


# --------------------------------------------------------------------------------------------
# 1. A full training loop: resources, many rollouts, concurrent workers, spans, retries, waits
# --------------------------------------------------------------------------------------------


async def test_training_loop_with_concurrent_workers(server):
    tag = unique()
    n_rollouts, n_workers = 16, 4
    async with store_client(server) as algo:
        await drain(algo)
        resources = await algo.add_resources(
            {
                "main_llm": LLM(endpoint="http://127.0.0.1:9/v1", model=f"model-{tag}", sampling_parameters={"t": 0.7}),
                "prompt": PromptTemplate(template="Solve {task}", engine="f-string"),
            }
        )
        retry_config = RolloutConfig(max_attempts=2, retry_condition=["failed"])
        requests_ = [
            EnqueueRolloutRequest(
                input={"tag": tag, "task": i},
                mode="train" if i % 2 else "val",
                config=retry_config,
                metadata={"index": i},
            )
            for i in range(n_rollouts)
        ]
        enqueued = await algo.enqueue_many_rollouts(requests_)
        assert len(enqueued) == n_rollouts
        ids = [r.rollout_id for r in enqueued]
        assert len(set(ids)) == n_rollouts
        for i, r in enumerate(enqueued):
            assert is_plain_rollout(r)
            assert ROLLOUT_ID.match(r.rollout_id), r.rollout_id
            assert r.input == {"tag": tag, "task": i}
            assert r.status == "queuing"
            assert r.mode == ("train" if i % 2 else "val")
            assert r.resources_id == resources.resources_id  # defaults to the latest resources
            assert r.config == retry_config
            assert r.metadata == {"index": i}
            assert r.end_time is None
        index_of = {rid: i for i, rid in enumerate(ids)}

        worker_ids = [f"w{k}-{tag}" for k in range(n_workers)]
        clients = [LightningStoreClient(server.base_url) for _ in worker_ids]
        try:

            async def work(client: LightningStoreClient, worker_id: str) -> List[AttemptedRollout]:
                claimed: List[AttemptedRollout] = []
                while True:
                    rollout = await client.dequeue_rollout(worker_id=worker_id)
                    if rollout is None:
                        return claimed
                    claimed.append(rollout)

            claims = await asyncio.gather(*(work(c, w) for c, w in zip(clients, worker_ids)))
        finally:
            for c in clients:
                await c.close()

        all_claimed = [r for claimed in claims for r in claimed]
        claimed_ids = [r.rollout_id for r in all_claimed]
        assert len(claimed_ids) == len(set(claimed_ids)), "a rollout was handed out twice"
        assert sorted(claimed_ids) == sorted(ids)
        attempt_of: Dict[str, str] = {}
        for worker_id, claimed in zip(worker_ids, claims):
            # The queue is FIFO: one worker's successive claims come in enqueue order.
            positions = [index_of[r.rollout_id] for r in claimed]
            assert positions == sorted(positions)
            for r in claimed:
                assert isinstance(r, AttemptedRollout)
                assert r.status == "preparing"
                assert r.attempt.rollout_id == r.rollout_id
                assert ATTEMPT_ID.match(r.attempt.attempt_id), r.attempt.attempt_id
                assert r.attempt.sequence_id == 1
                assert r.attempt.status == "preparing"
                assert r.attempt.worker_id == worker_id
                assert r.attempt.end_time is None
                attempt_of[r.rollout_id] = r.attempt.attempt_id

        # Each worker ended with an empty dequeue: idle, but its last claim is still recorded.
        for worker_id, claimed in zip(worker_ids, claims):
            worker = await algo.get_worker_by_id(worker_id)
            assert worker is not None and worker.worker_id == worker_id
            assert worker.status == "idle"
            assert worker.last_dequeue_time is not None
            if claimed:
                assert worker.current_rollout_id == claimed[-1].rollout_id
                assert worker.current_attempt_id == claimed[-1].attempt.attempt_id
                assert worker.last_busy_time is not None

        # Runners report two spans per rollout, numbered by the store.
        async def report(rollout_id: str) -> None:
            attempt_id = attempt_of[rollout_id]
            for step in range(2):
                seq = await algo.get_next_span_sequence_id(rollout_id, attempt_id)
                assert seq == step + 1
                stored = await algo.add_span(make_span(rollout_id, attempt_id, seq, f"step-{step}", step=step))
                assert stored is not None
                assert (stored.rollout_id, stored.attempt_id, stored.sequence_id) == (rollout_id, attempt_id, seq)

        await asyncio.gather(*(report(rid) for rid in ids))
        for rid in ids:
            current = await algo.get_rollout_by_id(rid)
            assert isinstance(current, AttemptedRollout)
            assert current.status == "running"
            assert current.attempt.status == "running"
            assert current.attempt.last_heartbeat_time is not None
            spans = await algo.query_spans(rid)
            assert [s.sequence_id for s in spans.items] == [1, 2]
            assert [s.name for s in spans.items] == ["step-0", "step-1"]
            assert spans.total == 2

        # The first rollout fails once and is retried; all others succeed.
        retried = ids[0]
        failed_attempt = await algo.update_attempt(retried, attempt_of[retried], status="failed")
        assert failed_attempt.status == "failed" and failed_attempt.end_time is not None
        for rid in ids[1:]:
            done = await algo.update_attempt(rid, attempt_of[rid], status="succeeded")
            assert done.status == "succeeded" and done.end_time is not None

        requeued = await algo.get_rollout_by_id(retried)
        assert requeued is not None and requeued.status == "requeuing"
        assert requeued.end_time is None

        finished = await algo.wait_for_rollouts(rollout_ids=ids, timeout=0.1)
        assert sorted(r.rollout_id for r in finished) == sorted(ids[1:])
        assert all(r.status == "succeeded" and r.end_time is not None for r in finished)

        again = await algo.dequeue_rollout(worker_id=worker_ids[0])
        assert again is not None
        assert again.rollout_id == retried
        assert again.attempt.sequence_id == 2
        assert again.attempt.status == "preparing"
        assert again.attempt.worker_id == worker_ids[0]
        assert again.attempt.attempt_id != attempt_of[retried]
        assert again.status == "preparing"
        assert await algo.dequeue_rollout(worker_id=worker_ids[0]) is None

        seq = await algo.get_next_span_sequence_id(retried, again.attempt.attempt_id)
        assert seq == 3  # one counter per rollout, shared by its attempts
        await algo.add_span(make_span(retried, again.attempt.attempt_id, seq, "retry-step"))
        assert (await algo.get_rollout_by_id(retried)).status == "running"
        await algo.update_attempt(retried, "latest", status="succeeded")

        finished = await algo.wait_for_rollouts(rollout_ids=ids, timeout=0.1)
        assert sorted(r.rollout_id for r in finished) == sorted(ids)
        assert all(r.status == "succeeded" for r in finished)

        attempts = await algo.query_attempts(retried)
        assert attempts.total == 2
        assert [a.sequence_id for a in attempts.items] == [1, 2]
        assert [a.status for a in attempts.items] == ["failed", "succeeded"]
        latest_spans = await algo.query_spans(retried, "latest")
        assert [s.name for s in latest_spans.items] == ["retry-step"]
        first_spans = await algo.query_spans(retried, attempt_of[retried])
        assert [s.name for s in first_spans.items] == ["step-0", "step-1"]

        workers = await algo.query_workers(worker_id_contains=tag, sort_by="worker_id")
        assert workers.total == n_workers
        assert [w.worker_id for w in workers.items] == sorted(worker_ids)
        for w in workers.items:
            assert w.status == "idle"
            assert w.current_rollout_id is None and w.current_attempt_id is None
            assert w.last_idle_time is not None

        succeeded = await algo.query_rollouts(status_in=["succeeded"], rollout_id_contains=None, rollout_id_in=ids)
        assert succeeded.total == n_rollouts


# --------------------------------------------------------------------------------------------
# 2. One rollout step by step: statuses, spans (direct, OTel SDK and the OTLP exporter)
# --------------------------------------------------------------------------------------------


async def test_rollout_status_transitions_and_spans(server):
    tag = unique()
    async with store_client(server) as client:
        await drain(client)
        queued = await client.enqueue_rollout(input={"tag": tag})
        assert queued.status == "queuing"
        fetched = await client.get_rollout_by_id(queued.rollout_id)
        assert is_plain_rollout(fetched), "a rollout without attempts must come back without an attempt"
        assert fetched.status == "queuing" and fetched.input == {"tag": tag}
        assert await client.get_latest_attempt(queued.rollout_id) is None

        worker_id = f"w-{tag}"
        claimed = await client.dequeue_rollout(worker_id=worker_id)
        assert claimed is not None and claimed.rollout_id == queued.rollout_id
        rid, aid = claimed.rollout_id, claimed.attempt.attempt_id
        assert claimed.status == "preparing"
        latest = await client.get_latest_attempt(rid)
        assert latest is not None and latest.attempt_id == aid and latest.status == "preparing"

        # First span: the attempt and the rollout start running, the heartbeat is recorded.
        seq = await client.get_next_span_sequence_id(rid, aid)
        assert seq == 1
        first = make_span(rid, aid, seq, "agent-step", step=1, label=tag)
        stored = await client.add_span(first)
        assert stored is not None
        assert stored.span_id == first.span_id and stored.trace_id == first.trace_id
        assert stored.sequence_id == 1 and stored.name == "agent-step"
        assert stored.attributes == {"step": 1, "label": tag}
        running = await client.get_rollout_by_id(rid)
        assert isinstance(running, AttemptedRollout)
        assert running.status == "running"
        assert running.attempt.attempt_id == aid
        assert running.attempt.status == "running"
        assert running.attempt.last_heartbeat_time is not None

        # The same span again is a duplicate: not stored, None returned.
        assert await client.add_span(first) is None

        # An explicit sequence id raises the counter.
        assert await client.add_span(make_span(rid, aid, 5, "explicit-five")) is not None
        assert await client.get_next_span_sequence_id(rid, aid) == 6

        # add_otel_span: an OpenTelemetry SDK span, numbered by the store (7).
        provider = TracerProvider()
        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        with provider.get_tracer("compat").start_as_current_span("sdk-span") as sdk_span:
            sdk_span.set_attribute("source", "sdk")
        (readable,) = memory.get_finished_spans()
        via_sdk = await client.add_otel_span(rid, aid, readable)
        assert via_sdk is not None and via_sdk.sequence_id == 7 and via_sdk.name == "sdk-span"

        # The package's own OTLP path: OtelTracer -> LightningStoreOTLPExporter -> POST /v1/traces.
        tracer = OtelTracer()
        tracer.init_worker(0, client)
        async with tracer.trace_context("compat", rollout_id=rid, attempt_id=aid) as otel:
            with otel.start_as_current_span("otlp-parent") as parent:
                parent.set_attribute("agentlightning.span_sequence_id", "42")
                parent.set_attribute("kind", "parent")
                with otel.start_as_current_span("otlp-child") as child:
                    child.set_attribute("kind", "child")
                    child.set_attribute("values", [1, 2, 3])
        parent_ctx, child_ctx = parent.get_span_context(), child.get_span_context()

        spans = await client.query_spans(rid)
        assert spans.total == 5
        assert [(s.sequence_id, s.name) for s in spans.items] == [
            (1, "agent-step"),
            (5, "explicit-five"),
            (7, "sdk-span"),
            (8, "otlp-child"),  # implicit id: next of the rollout's counter
            (42, "otlp-parent"),  # explicit id from the span attribute
        ]
        assert all(s.rollout_id == rid and s.attempt_id == aid for s in spans.items)
        otlp_child, otlp_parent = spans.items[3], spans.items[4]
        assert otlp_child.trace_id == format(child_ctx.trace_id, "032x")
        assert otlp_child.span_id == format(child_ctx.span_id, "016x")
        assert otlp_child.parent_id == format(parent_ctx.span_id, "016x")
        assert otlp_parent.span_id == format(parent_ctx.span_id, "016x")
        assert otlp_parent.parent_id is None
        assert otlp_child.attributes["kind"] == "child"
        assert otlp_child.attributes["values"] == [1, 2, 3]
        assert otlp_child.resource.attributes["agentlightning.rollout_id"] == rid
        assert otlp_child.resource.attributes["agentlightning.attempt_id"] == aid
        assert otlp_child.start_time is not None and otlp_child.end_time >= otlp_child.start_time
        assert await client.get_next_span_sequence_id(rid, aid) == 43

        # Query filters, sorting and pagination.
        latest_spans = await client.query_spans(rid, "latest")
        assert [s.sequence_id for s in latest_spans.items] == [1, 5, 7, 8, 42]
        by_name = await client.query_spans(rid, name="otlp-child")
        assert [s.sequence_id for s in by_name.items] == [8] and by_name.total == 1
        contains = await client.query_spans(rid, name_contains="otlp")
        assert [s.sequence_id for s in contains.items] == [8, 42]
        either = await client.query_spans(rid, name="agent-step", span_id=otlp_parent.span_id, filter_logic="or")
        assert [s.sequence_id for s in either.items] == [1, 42]
        page = await client.query_spans(rid, limit=2, offset=1)
        assert (page.limit, page.offset, page.total) == (2, 1, 5)
        assert [s.sequence_id for s in page.items] == [5, 7]
        desc = await client.query_spans(rid, sort_order="desc")
        assert [s.sequence_id for s in desc.items] == [42, 8, 7, 5, 1]
        assert (await client.query_spans(rid, "at-00000000")).total == 0

        # Success ends the rollout.
        done = await client.update_attempt(rid, aid, status="succeeded")
        assert done.status == "succeeded" and done.end_time is not None
        final = await client.get_rollout_by_id(rid)
        assert final.status == "succeeded" and final.end_time is not None
        waited = await client.wait_for_rollouts(rollout_ids=[rid], timeout=0)
        assert [(r.rollout_id, r.status) for r in waited] == [(rid, "succeeded")]
        worker = await client.get_worker_by_id(worker_id)
        assert worker.status == "idle" and worker.current_rollout_id is None


# --------------------------------------------------------------------------------------------
# 3. Retries, failures, the watchdog
# --------------------------------------------------------------------------------------------


async def test_dequeue_many_concurrently(server):
    tag = unique()
    n_rollouts, n_workers = 60, 6
    async with store_client(server) as client:
        await drain(client)
        enqueued = await client.enqueue_many_rollouts(
            [EnqueueRolloutRequest(input={"tag": tag, "i": i}) for i in range(n_rollouts)]
        )
        assert [r.input["i"] for r in enqueued] == list(range(n_rollouts))
        ids = [r.rollout_id for r in enqueued]
        clients = [LightningStoreClient(server.base_url) for _ in range(n_workers)]
        try:

            async def work(c: LightningStoreClient, worker_id: str):
                got = []
                while True:
                    batch = await c.dequeue_many_rollouts(limit=3, worker_id=worker_id)
                    if not batch:
                        return got
                    assert 1 <= len(batch) <= 3
                    got.extend(batch)

            claims = await asyncio.gather(*(work(c, f"m{k}-{tag}") for k, c in enumerate(clients)))
        finally:
            for c in clients:
                await c.close()
        claimed_ids = [r.rollout_id for got in claims for r in got]
        assert len(claimed_ids) == len(set(claimed_ids)) == n_rollouts
        assert set(claimed_ids) == set(ids)
        for k, got in enumerate(claims):
            assert all(r.attempt.sequence_id == 1 and r.attempt.worker_id == f"m{k}-{tag}" for r in got)
        stats = await client.query_rollouts(rollout_id_in=ids, status_in=["preparing"])
        assert stats.total == n_rollouts


async def test_retry_rules(server):
    tag = unique()
    async with store_client(server) as client:
        await drain(client)
        retry = await client.enqueue_rollout(
            input={"tag": tag, "case": "retry"}, config=RolloutConfig(max_attempts=2, retry_condition=["failed"])
        )
        no_retry = await client.enqueue_rollout(input={"tag": tag, "case": "no-retry"})
        wrong_condition = await client.enqueue_rollout(
            input={"tag": tag, "case": "condition"}, config=RolloutConfig(max_attempts=3, retry_condition=["timeout"])
        )
        claimed = await client.dequeue_many_rollouts(limit=5, worker_id=f"w-{tag}")
        assert [r.rollout_id for r in claimed] == [retry.rollout_id, no_retry.rollout_id, wrong_condition.rollout_id]
        for r in claimed:
            await client.update_attempt(r.rollout_id, r.attempt.attempt_id, status="failed")

        statuses = {r.rollout_id: r.status for r in (await client.query_rollouts(rollout_id_in=[c.rollout_id for c in claimed])).items}
        assert statuses == {
            retry.rollout_id: "requeuing",
            no_retry.rollout_id: "failed",
            wrong_condition.rollout_id: "failed",
        }
        requeuing = await client.query_rollouts(status_in=["requeuing"])
        assert retry.rollout_id in [r.rollout_id for r in requeuing.items]
        finished = await client.wait_for_rollouts(
            rollout_ids=[retry.rollout_id, no_retry.rollout_id, wrong_condition.rollout_id], timeout=0
        )
        assert sorted(r.rollout_id for r in finished) == sorted([no_retry.rollout_id, wrong_condition.rollout_id])

        second = await client.dequeue_rollout()
        assert second is not None and second.rollout_id == retry.rollout_id
        assert second.attempt.sequence_id == 2 and second.attempt.worker_id is None
        assert await client.dequeue_rollout() is None
        # The last allowed attempt fails too: the rollout fails for good.
        await client.update_attempt(retry.rollout_id, "latest", status="failed")
        final = await client.get_rollout_by_id(retry.rollout_id)
        assert final.status == "failed" and final.end_time is not None
        assert await client.dequeue_rollout() is None

        attempts = await client.query_attempts(retry.rollout_id)
        assert attempts.total == 2
        assert [(a.sequence_id, a.status) for a in attempts.items] == [(1, "failed"), (2, "failed")]
        desc = await client.query_attempts(retry.rollout_id, sort_order="desc", limit=1)
        assert (desc.total, desc.limit, [a.sequence_id for a in desc.items]) == (2, 1, [2])


async def test_watchdog_timeout_requeues_then_fails(server):
    tag = unique()
    worker_id = f"w-{tag}"
    async with store_client(server) as client:
        await drain(client)
        retried = await client.enqueue_rollout(
            input={"tag": tag, "case": "retry"},
            config=RolloutConfig(timeout_seconds=1.0, max_attempts=2, retry_condition=["timeout"]),
        )
        final = await client.enqueue_rollout(
            input={"tag": tag, "case": "final"}, config=RolloutConfig(timeout_seconds=1.0)
        )
        claimed = await client.dequeue_many_rollouts(limit=2, worker_id=worker_id)
        assert [r.rollout_id for r in claimed] == [retried.rollout_id, final.rollout_id]
        first_attempt = claimed[0].attempt.attempt_id

        async def both_timed_out():
            page = await client.query_rollouts(rollout_id_in=[retried.rollout_id, final.rollout_id])
            statuses = {r.rollout_id: r.status for r in page.items}
            return statuses if statuses == {retried.rollout_id: "requeuing", final.rollout_id: "failed"} else None

        await wait_until(both_timed_out, timeout=20, interval=0.2, what="the watchdog to time the attempts out")

        attempts = await client.query_attempts(retried.rollout_id)
        assert [(a.attempt_id, a.status) for a in attempts.items] == [(first_attempt, "timeout")]
        assert attempts.items[0].end_time is None  # timeouts do not set end_time
        worker = await client.get_worker_by_id(worker_id)
        assert worker.status == "unknown"
        assert worker.current_rollout_id is None and worker.current_attempt_id is None
        assert worker.last_idle_time is not None

        again = await client.dequeue_rollout(worker_id=worker_id)
        assert again is not None and again.rollout_id == retried.rollout_id
        assert again.attempt.sequence_id == 2 and again.attempt.status == "preparing"
        assert (await client.get_worker_by_id(worker_id)).status == "busy"
        await client.update_attempt(retried.rollout_id, again.attempt.attempt_id, status="succeeded")
        assert (await client.get_rollout_by_id(retried.rollout_id)).status == "succeeded"


async def test_watchdog_unresponsive_then_late_heartbeat(server):
    tag = unique()
    async with store_client(server) as client:
        await drain(client)
        rollout = await client.enqueue_rollout(
            input={"tag": tag},
            config=RolloutConfig(unresponsive_seconds=1.0, max_attempts=2, retry_condition=["unresponsive"]),
        )
        claimed = await client.dequeue_rollout(worker_id=f"w-{tag}")
        assert claimed is not None and claimed.rollout_id == rollout.rollout_id
        rid, aid = rollout.rollout_id, claimed.attempt.attempt_id
        await client.add_span(make_span(rid, aid, await client.get_next_span_sequence_id(rid, aid), "beat-1"))
        assert (await client.get_rollout_by_id(rid)).status == "running"

        async def unresponsive():
            current = await client.get_rollout_by_id(rid)
            return current if current.status == "requeuing" else None

        current = await wait_until(unresponsive, timeout=20, interval=0.2, what="the attempt to become unresponsive")
        assert isinstance(current, AttemptedRollout)
        assert current.attempt.attempt_id == aid and current.attempt.status == "unresponsive"
        assert current.attempt.end_time is None
        assert (await client.get_worker_by_id(f"w-{tag}")).status == "unknown"

        # A late span revives the attempt, and with it the rollout; the stale queue entry is skipped.
        await client.add_span(make_span(rid, aid, await client.get_next_span_sequence_id(rid, aid), "beat-2"))
        revived = await client.get_rollout_by_id(rid)
        assert revived.status == "running"
        assert revived.attempt.attempt_id == aid and revived.attempt.status == "running"
        assert await client.dequeue_rollout() is None
        await client.update_attempt(rid, aid, status="succeeded")
        assert (await client.get_rollout_by_id(rid)).status == "succeeded"
        assert [s.name for s in (await client.query_spans(rid)).items] == ["beat-1", "beat-2"]


# --------------------------------------------------------------------------------------------
# 4. Queries, workers, resources, direct starts, statistics, unknown ids
# --------------------------------------------------------------------------------------------


async def test_query_rollouts_filters_sorting_pagination(server):
    tag = unique()
    async with store_client(server) as client:
        queued = [(await client.enqueue_rollout(input={"tag": tag, "i": i})).rollout_id for i in range(5)]
        started = [(await client.start_rollout(input={"tag": tag, "s": i})).rollout_id for i in range(2)]
        everything = queued + started

        page = await client.query_rollouts(rollout_id_in=everything)
        assert page.total == 7 and (page.limit, page.offset) == (-1, 0)
        assert sorted(r.rollout_id for r in page.items) == sorted(everything)

        only_queued = await client.query_rollouts(rollout_id_in=everything, status_in=["queuing"])
        assert sorted(r.rollout_id for r in only_queued.items) == sorted(queued)
        assert all(is_plain_rollout(r) for r in only_queued.items)
        only_started = await client.query_rollouts(rollout_id_in=everything, status_in=["preparing"])
        assert sorted(r.rollout_id for r in only_started.items) == sorted(started)
        for r in only_started.items:
            assert isinstance(r, AttemptedRollout) and r.attempt.sequence_id == 1

        window = await client.query_rollouts(rollout_id_in=queued, sort_by="start_time", limit=2, offset=1)
        assert (window.total, window.limit, window.offset) == (5, 2, 1)
        assert [r.rollout_id for r in window.items] == queued[1:3]
        desc = await client.query_rollouts(rollout_id_in=queued, sort_by="start_time", sort_order="desc")
        assert [r.rollout_id for r in desc.items] == queued[::-1]
        by_id = await client.query_rollouts(rollout_id_in=queued, sort_by="rollout_id")
        assert [r.rollout_id for r in by_id.items] == sorted(queued)
        beyond = await client.query_rollouts(rollout_id_in=queued, limit=3, offset=10)
        assert beyond.items == [] and beyond.total == 5

        needle = queued[2][3:]
        contains = await client.query_rollouts(rollout_id_contains=needle)
        assert [r.rollout_id for r in contains.items] == [queued[2]]
        either = await client.query_rollouts(rollout_id_in=[queued[0]], rollout_id_contains=started[1][3:], filter_logic="or")
        assert sorted(r.rollout_id for r in either.items) == sorted([queued[0], started[1]])
        none = await client.query_rollouts(rollout_id_in=[])
        assert none.total == 0 and none.items == []


async def test_workers_heartbeats_and_status(server):
    tag = unique()
    worker_id, idle_worker = f"hb-{tag}", f"idle-{tag}"
    async with store_client(server) as client:
        assert await client.get_worker_by_id(f"missing-{tag}") is None
        created = await client.update_worker(worker_id, heartbeat_stats={"gpu_util": 0.5, "node": "n1"})
        assert created.worker_id == worker_id
        assert created.status == "unknown"
        assert created.heartbeat_stats == {"gpu_util": 0.5, "node": "n1"}
        assert created.last_heartbeat_time is not None
        assert created.current_rollout_id is None and created.last_dequeue_time is None

        beat = await client.update_worker(worker_id)
        assert beat.heartbeat_stats == {"gpu_util": 0.5, "node": "n1"}
        assert beat.last_heartbeat_time >= created.last_heartbeat_time
        assert (await client.get_worker_by_id(worker_id)).model_dump() == beat.model_dump()

        await drain(client)
        rollout = await client.enqueue_rollout(input={"tag": tag})
        claimed = await client.dequeue_rollout(worker_id=worker_id)
        assert claimed is not None and claimed.rollout_id == rollout.rollout_id
        busy = await client.get_worker_by_id(worker_id)
        assert busy.status == "busy"
        assert busy.current_rollout_id == rollout.rollout_id
        assert busy.current_attempt_id == claimed.attempt.attempt_id
        assert busy.last_dequeue_time is not None and busy.last_busy_time is not None
        assert busy.heartbeat_stats == {"gpu_util": 0.5, "node": "n1"}
        busy_page = await client.query_workers(status_in=["busy"], worker_id_contains=tag)
        assert [w.worker_id for w in busy_page.items] == [worker_id]

        await client.update_attempt(rollout.rollout_id, claimed.attempt.attempt_id, status="succeeded")
        idle = await client.get_worker_by_id(worker_id)
        assert idle.status == "idle"
        assert idle.current_rollout_id is None and idle.current_attempt_id is None
        assert idle.last_idle_time is not None

        assert await client.dequeue_rollout(worker_id=idle_worker) is None
        empty_handed = await client.get_worker_by_id(idle_worker)
        assert empty_handed.status == "idle" and empty_handed.last_dequeue_time is not None

        mine = await client.query_workers(worker_id_contains=tag, sort_by="worker_id", sort_order="desc")
        assert mine.total == 2
        assert [w.worker_id for w in mine.items] == sorted([worker_id, idle_worker], reverse=True)
        idle_page = await client.query_workers(status_in=["idle"], worker_id_contains=tag)
        assert idle_page.total == 2


async def test_resources_versioning(server):
    tag = unique()
    async with store_client(server) as client:
        first = await client.add_resources(
            {
                "main_llm": LLM(endpoint="http://127.0.0.1:9/v1", model=f"m1-{tag}"),
                "prompt": PromptTemplate(template="Hello {name}", engine="f-string"),
            }
        )
        assert RESOURCES_ID.match(first.resources_id), first.resources_id
        assert first.version == 1
        assert first.create_time == first.update_time
        llm = first.resources["main_llm"]
        assert isinstance(llm, LLM) and llm.model == f"m1-{tag}"
        assert llm.api_key is None and llm.sampling_parameters == {}
        prompt = first.resources["prompt"]
        assert isinstance(prompt, PromptTemplate) and prompt.template == "Hello {name}" and prompt.engine == "f-string"
        latest = await client.get_latest_resources()
        assert latest is not None and latest.resources_id == first.resources_id

        second = await client.update_resources(
            first.resources_id, {"main_llm": LLM(endpoint="http://127.0.0.1:9/v1", model=f"m2-{tag}")}
        )
        assert second.resources_id == first.resources_id
        assert second.version == 2
        assert second.create_time == first.create_time
        assert second.update_time >= first.update_time
        assert set(second.resources) == {"main_llm"} and second.resources["main_llm"].model == f"m2-{tag}"
        fetched = await client.get_resources_by_id(first.resources_id)
        assert fetched is not None and fetched.version == 2

        custom_id = f"my-res-{tag}"
        custom = await client.update_resources(custom_id, {"prompt": PromptTemplate(template="x", engine="jinja")})
        assert custom.resources_id == custom_id and custom.version == 1
        assert (await client.get_latest_resources()).resources_id == custom_id

        defaulted = await client.enqueue_rollout(input={"tag": tag})
        assert defaulted.resources_id == custom_id
        explicit = await client.enqueue_rollout(input={"tag": tag}, resources_id=first.resources_id)
        assert explicit.resources_id == first.resources_id
        started = await client.start_rollout(input={"tag": tag})
        assert started.resources_id == custom_id

        listing = await client.query_resources()
        listed_ids = [r.resources_id for r in listing.items]
        assert listing.total == len(listed_ids) >= 2
        assert listed_ids.index(first.resources_id) < listed_ids.index(custom_id)  # insertion order
        only_custom = await client.query_resources(resources_id_contains=tag)
        assert [r.resources_id for r in only_custom.items] == [custom_id]
        exact = await client.query_resources(resources_id=first.resources_id)
        assert [r.version for r in exact.items] == [2]
        one = await client.query_resources(limit=1, sort_by="resources_id")
        assert len(one.items) == 1 and one.total == listing.total
        assert one.items[0].resources_id == min(listed_ids)
        assert await client.get_resources_by_id(f"rs-missing-{tag}") is None


async def test_start_rollout_start_attempt_and_updates(server):
    tag = unique()
    worker_id = f"w-{tag}"
    async with store_client(server) as client:
        started = await client.start_rollout(
            input={"tag": tag},
            mode="test",
            config=RolloutConfig(timeout_seconds=100),
            metadata={"owner": tag},
            worker_id=worker_id,
        )
        assert isinstance(started, AttemptedRollout)
        assert started.status == "preparing"
        assert started.mode == "test" and started.metadata == {"owner": tag}
        assert started.config.timeout_seconds == 100.0 and started.config.max_attempts == 1
        assert started.attempt.sequence_id == 1 and started.attempt.worker_id == worker_id
        assert started.attempt.start_time == started.start_time
        rid = started.rollout_id
        assert (await client.get_worker_by_id(worker_id)).current_rollout_id == rid

        second = await client.start_attempt(rid, worker_id=worker_id)
        assert second.rollout_id == rid
        assert second.attempt.sequence_id == 2 and second.attempt.status == "preparing"
        assert (await client.get_latest_attempt(rid)).attempt_id == second.attempt.attempt_id
        fetched = await client.get_rollout_by_id(rid)
        assert isinstance(fetched, AttemptedRollout) and fetched.attempt.sequence_id == 2

        # Updating a non-latest attempt leaves the rollout alone.
        old = await client.update_attempt(rid, started.attempt.attempt_id, status="failed", metadata={"why": "x"})
        assert old.status == "failed" and old.metadata == {"why": "x"}
        assert (await client.get_rollout_by_id(rid)).status == "preparing"

        updated = await client.update_rollout(rid, mode="val", metadata={"owner": tag, "v": 2}, resources_id=None)
        assert is_plain_rollout(updated)
        assert updated.mode == "val" and updated.metadata == {"owner": tag, "v": 2} and updated.resources_id is None
        assert updated.status == "preparing" and updated.input == {"tag": tag}
        cancelled = await client.update_rollout(rid, status="cancelled")
        assert cancelled.status == "cancelled" and cancelled.end_time is not None
        waited = await client.wait_for_rollouts(rollout_ids=[rid, f"ro-missing{tag[:4]}"], timeout=0.1)
        assert [(r.rollout_id, r.status) for r in waited] == [(rid, "cancelled")]

        # The latest attempt's success still propagates to the rollout.
        await client.update_attempt(rid, "latest", status="succeeded", last_heartbeat_time=1234.5)
        attempts = await client.query_attempts(rid)
        assert [(a.sequence_id, a.status) for a in attempts.items] == [(1, "failed"), (2, "succeeded")]
        assert attempts.items[1].last_heartbeat_time == 1234.5
        assert (await client.get_rollout_by_id(rid)).status == "succeeded"

        new_config = RolloutConfig(max_attempts=4, retry_condition=["failed", "timeout"], unresponsive_seconds=30)
        reconfigured = await client.update_rollout(rid, config=new_config, input={"tag": tag, "edited": True})
        assert reconfigured.config == new_config and reconfigured.input == {"tag": tag, "edited": True}


async def test_unknown_ids(server):
    missing = f"ro-{unique()}"
    async with store_client(server) as client:
        started = time.monotonic()
        assert await client.get_rollout_by_id(missing) is None
        elapsed = time.monotonic() - started
        if not IS_OFFICIAL:
            # The official server answers 500 and the client retries for ~8 s before giving up.
            assert elapsed < 2.0, f"get_rollout_by_id of an unknown id took {elapsed:.1f}s"
        assert await client.get_latest_attempt(missing) is None
        attempts = await client.query_attempts(missing)
        assert attempts.total == 0 and attempts.items == []
        spans = await client.query_spans(missing)
        assert spans.total == 0 and spans.items == []
        assert (await client.query_spans(missing, "latest")).items == []
        assert await client.wait_for_rollouts(rollout_ids=[missing], timeout=0) == []
        assert await client.get_next_span_sequence_id(missing, "at-whatever") == 1

    # Store errors are raised by the client, not swallowed (no retries here to keep it fast).
    async with store_client(server, retry_delays=(), health_retry_delays=()) as client:
        with pytest.raises(aiohttp.ClientResponseError) as err:
            await client.update_attempt(missing, "latest", status="succeeded")
        assert err.value.status == (500 if IS_OFFICIAL else 404)
        with pytest.raises(aiohttp.ClientResponseError) as err:
            await client.start_attempt(missing)
        assert err.value.status == (500 if IS_OFFICIAL else 404)
        with pytest.raises(aiohttp.ClientResponseError) as err:
            await client.update_rollout(missing, status="cancelled")
        assert err.value.status == (500 if IS_OFFICIAL else 404)


async def test_statistics(server):
    tag = unique()
    async with store_client(server) as client:
        before = await client.statistics()
        for key in ("total_rollouts", "total_attempts", "total_spans", "total_resources", "total_workers"):
            assert isinstance(before[key], int), key
        assert isinstance(before["uptime"], float)
        await client.enqueue_rollout(input={"tag": tag})
        started = await client.start_rollout(input={"tag": tag}, worker_id=f"w-{tag}")
        await client.add_span(make_span(started.rollout_id, started.attempt.attempt_id, 1, "stat-span"))
        await client.add_resources({"p": PromptTemplate(template="t", engine="jinja")})
        after = await client.statistics()
        assert after["total_rollouts"] == before["total_rollouts"] + 2
        assert after["total_attempts"] == before["total_attempts"] + 1
        assert after["total_spans"] == before["total_spans"] + 1
        assert after["total_resources"] == before["total_resources"] + 1
        assert after["total_workers"] == before["total_workers"] + 1
        assert after["uptime"] > before["uptime"]


async def test_the_shared_key_in_the_url(keyed_server_v030):
    """The 0.3.0 client sends a key given in its URL as HTTP Basic credentials (aiohttp does
    that for user info), which agl-store accepts as the key."""
    from conftest import TEST_KEY

    base = keyed_server_v030.base_url
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(f"{base}/v1/agl/statistics") as refused:
            assert refused.status == 401
            assert await refused.json() == {"detail": "Invalid or missing API key"}
    keyed = base.replace("http://", f"http://agl:{TEST_KEY}@")
    client = LightningStoreClient(keyed)
    try:
        rollout = await client.enqueue_rollout(input={"task": "keyed"})
        fetched = await client.get_rollout_by_id(rollout.rollout_id)
        assert fetched is not None and fetched.input == {"task": "keyed"}
        claimed = await client.dequeue_rollout()
        assert claimed is not None and claimed.rollout_id == rollout.rollout_id
    finally:
        await client.close()
