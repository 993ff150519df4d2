"""Raw HTTP against the reference's `/agl/v1/*` API (spec section 5.1, revision c453c41f).

No PyPI release ships that API, so there is no official server to validate these tests
against: with AGL_COMPAT_TARGET=official the module is skipped. The expectations come from
the spec's route table (single-rollout enqueue/dequeue, plain lists, Rollouts without the
`attempt` key where the old response model was `Rollout`, resources without version fields).
"""

from __future__ import annotations

import uuid

import pytest
import requests

from common import IS_OFFICIAL, unique

pytestmark = pytest.mark.skipif(IS_OFFICIAL, reason="no released official server serves /agl/v1")

ROLLOUT_KEYS = {"rollout_id", "input", "start_time", "end_time", "mode", "resources_id", "status", "config", "metadata"}
ATTEMPT_KEYS = {
    "rollout_id",
    "attempt_id",
    "sequence_id",
    "start_time",
    "end_time",
    "status",
    "worker_id",
    "last_heartbeat_time",
    "metadata",
}
P = "/agl/v1"


@pytest.fixture(scope="module")
def call(server_v030):
    session = requests.Session()
    base = server_v030.base_url

    def jcall(method: str, path: str, expect: int = 200, **kwargs):
        resp = session.request(method, base + P + path, timeout=30, **kwargs)
        assert resp.status_code == expect, f"{method} {P}{path}: {resp.status_code} {resp.text[:500]}"
        ctype = resp.headers.get("content-type", "")
        assert ctype.split(";")[0].strip() == "application/json", f"{method} {P}{path}: content-type {ctype!r}"
        return resp.json()

    yield jcall
    session.close()


def drain(call) -> None:
    for _ in range(10000):
        if call("POST", "/queues/rollouts/dequeue") is None:
            return
    raise AssertionError("queue never became empty")


def make_span(rollout_id: str, attempt_id: str, sequence_id: int, name: str) -> dict:
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return {
        "rollout_id": rollout_id,
        "attempt_id": attempt_id,
        "sequence_id": sequence_id,
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_id": None,
        "name": name,
        "status": {"status_code": "OK", "description": None},
        "attributes": {"step": sequence_id},
        "events": [],
        "links": [],
        "start_time": 1700000000.0,
        "end_time": 1700000001.0,
        "context": {"trace_id": trace_id, "span_id": span_id, "is_remote": False, "trace_state": {}},
        "parent": None,
        "resource": {"attributes": {}, "schema_url": ""},
    }


def test_health(call):
    assert call("GET", "/health") == {"status": "ok"}


def test_single_enqueue_and_dequeue(call):
    tag = unique()
    drain(call)
    assert call("POST", "/queues/rollouts/dequeue") is None  # empty queue: JSON null, not []
    first = call("POST", "/queues/rollouts/enqueue", 201, json={"input": {"tag": tag, "i": 0}, "mode": "train"})
    second = call("POST", "/queues/rollouts/enqueue", 201, json={"input": {"tag": tag, "i": 1}, "metadata": {"m": 1}})
    for r in (first, second):
        assert isinstance(r, dict) and set(r) == ROLLOUT_KEYS
        assert r["status"] == "queuing"
    assert first["mode"] == "train" and second["metadata"] == {"m": 1}

    claimed = call("POST", "/queues/rollouts/dequeue")
    assert isinstance(claimed, dict) and set(claimed) == ROLLOUT_KEYS | {"attempt"}
    assert claimed["rollout_id"] == first["rollout_id"]
    assert claimed["status"] == "preparing"
    assert set(claimed["attempt"]) == ATTEMPT_KEYS
    assert claimed["attempt"]["sequence_id"] == 1 and claimed["attempt"]["status"] == "preparing"
    assert call("POST", "/queues/rollouts/dequeue")["rollout_id"] == second["rollout_id"]
    assert call("POST", "/queues/rollouts/dequeue") is None


def test_rollouts_attempts_and_lists(call):
    tag = unique()
    queued = call("POST", "/queues/rollouts/enqueue", 201, json={"input": tag})
    started = call("POST", "/rollouts", 201, json={"input": tag, "config": {"max_attempts": 2}})
    assert set(started) == ROLLOUT_KEYS | {"attempt"}
    assert started["status"] == "preparing" and started["attempt"]["sequence_id"] == 1
    assert started["config"]["max_attempts"] == 2
    rid = started["rollout_id"]

    listing = call("GET", "/rollouts")
    assert isinstance(listing, list), "GET /agl/v1/rollouts is a plain list"
    by_id = {r["rollout_id"]: r for r in listing}
    assert {queued["rollout_id"], rid} <= set(by_id)
    assert all(set(r) == ROLLOUT_KEYS for r in listing), "response_model=List[Rollout] drops attempt"

    preparing = call("POST", "/rollouts/search", json={"status": ["preparing"]})
    assert isinstance(preparing, list) and rid in [r["rollout_id"] for r in preparing]
    assert all(r["status"] == "preparing" for r in preparing)
    picked = call("POST", "/rollouts/search", json={"rollout_ids": [queued["rollout_id"]]})
    assert [r["rollout_id"] for r in picked] == [queued["rollout_id"]]
    both = call("POST", "/rollouts/search", json={"rollout_ids": [queued["rollout_id"], rid], "status": ["preparing"]})
    assert [r["rollout_id"] for r in both] == [rid]

    fetched = call("GET", f"/rollouts/{rid}")
    assert set(fetched) == ROLLOUT_KEYS and fetched["status"] == "preparing"

    second = call("POST", f"/rollouts/{rid}/attempts", 201)
    assert set(second) == ROLLOUT_KEYS | {"attempt"} and second["attempt"]["sequence_id"] == 2
    attempts = call("GET", f"/rollouts/{rid}/attempts")
    assert isinstance(attempts, list) and [a["sequence_id"] for a in attempts] == [1, 2]
    assert all(set(a) == ATTEMPT_KEYS for a in attempts)
    latest = call("GET", f"/rollouts/{rid}/attempts/latest")
    assert latest["attempt_id"] == second["attempt"]["attempt_id"]
    assert call("GET", f"/rollouts/{queued['rollout_id']}/attempts/latest") is None

    done = call("POST", f"/rollouts/{rid}/attempts/{latest['attempt_id']}", json={"status": "succeeded"})
    assert set(done) == ATTEMPT_KEYS and done["status"] == "succeeded" and done["end_time"] is not None
    assert call("GET", f"/rollouts/{rid}")["status"] == "succeeded"
    waited = call("POST", "/waits/rollouts", json={"rollout_ids": [rid, queued["rollout_id"]], "timeout": 0})
    assert [w["rollout_id"] for w in waited] == [rid]

    updated = call("POST", f"/rollouts/{queued['rollout_id']}", json={"status": "cancelled", "metadata": {"x": 1}})
    assert set(updated) == ROLLOUT_KEYS
    assert updated["status"] == "cancelled" and updated["metadata"] == {"x": 1} and updated["end_time"] is not None
    assert call("POST", f"/rollouts/{rid}", 400, json={"status": None}) == {
        "detail": "status is invalid; it cannot be a null value."
    }


def test_resources_have_no_version_fields(call):
    tag = unique()
    created = call(
        "POST",
        "/resources",
        201,
        json={"llm": {"resource_type": "llm", "endpoint": "http://127.0.0.1:9/v1", "model": tag}},
    )
    assert set(created) == {"resources_id", "resources"}
    assert created["resources"]["llm"]["model"] == tag
    latest = call("GET", "/resources/latest")
    assert latest == created
    updated = call(
        "POST",
        f"/resources/{created['resources_id']}",
        json={"prompt": {"resource_type": "prompt_template", "template": "t", "engine": "f-string"}},
    )
    assert set(updated) == {"resources_id", "resources"} and set(updated["resources"]) == {"prompt"}
    assert call("GET", f"/resources/{created['resources_id']}") == updated
    assert call("GET", f"/resources/rs-missing-{tag}") is None


def test_spans(call):
    tag = unique()
    started = call("POST", "/rollouts", 201, json={"input": tag})
    rid, aid = started["rollout_id"], started["attempt"]["attempt_id"]
    assert call("POST", "/spans/next", json={"rollout_id": rid, "attempt_id": aid}) == {"sequence_id": 1}
    span = make_span(rid, aid, 1, "a1-span")
    stored = call("POST", "/spans", 201, json=span)
    assert stored == span
    call("POST", "/spans", 201, json=make_span(rid, aid, 2, "a1-span-2"))
    listed = call("GET", f"/spans?rollout_id={rid}&attempt_id={aid}")
    assert isinstance(listed, list) and [s["name"] for s in listed] == ["a1-span", "a1-span-2"]
    assert [s["name"] for s in call("GET", f"/spans?rollout_id={rid}")] == ["a1-span", "a1-span-2"]
    assert call("GET", f"/rollouts/{rid}")["status"] == "running"
    assert call("POST", "/spans/next", json={"rollout_id": rid, "attempt_id": aid}) == {"sequence_id": 3}
