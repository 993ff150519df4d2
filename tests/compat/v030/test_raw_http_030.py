"""Raw HTTP against the v0.3.0 routes (`/v1/agl/*`, `/v1/traces`): what the client hides.

Status codes (201 on creates), `application/json` on every JSON answer including `null`, the
absence of an `attempt` key on unattempted rollouts, 400/422 error bodies.
"""

from __future__ import annotations

import gzip
import re
import threading
import time
import uuid

import pytest
import requests
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from common import IS_OFFICIAL, unique

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
DEFAULT_CONFIG = {"timeout_seconds": None, "unresponsive_seconds": None, "max_attempts": 1, "retry_condition": []}
PAGE_KEYS = {"items", "limit", "offset", "total"}
ROLLOUT_SORT_FIELDS = "rollout_id, input, start_time, end_time, mode, resources_id, status, config, metadata"


@pytest.fixture(scope="module")
def api(server_v030):
    session = requests.Session()
    base = server_v030.base_url

    def call(method: str, path: str, expect: int, **kwargs):
        resp = session.request(method, base + path, timeout=30, **kwargs)
        assert resp.status_code == expect, f"{method} {path}: {resp.status_code} {resp.text[:500]}"
        return resp

    def jcall(method: str, path: str, expect: int = 200, **kwargs):
        resp = call(method, path, expect, **kwargs)
        ctype = resp.headers.get("content-type", "")
        assert ctype.split(";")[0].strip() == "application/json", f"{method} {path}: content-type {ctype!r}"
        return resp.json()

    call.json = jcall  # type: ignore[attr-defined]
    call.base = base  # type: ignore[attr-defined]
    yield call
    session.close()


def J(api):
    return api.json


def drain(api) -> None:
    for _ in range(1000):
        if J(api)("POST", "/v1/agl/queues/rollouts/dequeue", json={"limit": 100}) == []:
            return
    raise AssertionError("queue never became empty")


def make_span(rollout_id: str, attempt_id: str, sequence_id: int, name: str = "raw-span", **extra) -> dict:
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    span = {
        "rollout_id": rollout_id,
        "attempt_id": attempt_id,
        "sequence_id": sequence_id,
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_id": None,
        "name": name,
        "status": {"status_code": "OK", "description": None},
        "attributes": {"k": "v", "n": 3},
        "events": [],
        "links": [],
        "start_time": 1700000000.0,
        "end_time": 1700000001.0,
        "context": {"trace_id": trace_id, "span_id": span_id, "is_remote": False, "trace_state": {}},
        "parent": None,
        "resource": {"attributes": {}, "schema_url": ""},
    }
    span.update(extra)
    return span


def test_health(api):
    assert J(api)("GET", "/v1/agl/health") == {"status": "ok"}


def test_enqueue_is_201_and_rollouts_have_no_attempt_key(api):
    tag = unique()
    created = J(api)("POST", "/v1/agl/queues/rollouts/enqueue", 201, json={"rollouts": [{"input": {"tag": tag}}]})
    assert isinstance(created, list) and len(created) == 1
    rollout = created[0]
    assert set(rollout) == ROLLOUT_KEYS, "no attempt key (not even null) on a rollout without attempts"
    assert re.fullmatch(r"ro-[0-9a-f]{12}", rollout["rollout_id"])
    assert rollout["input"] == {"tag": tag}
    assert rollout["status"] == "queuing"
    assert rollout["config"] == DEFAULT_CONFIG
    assert rollout["metadata"] == {}
    assert rollout["end_time"] is None and rollout["mode"] is None
    assert isinstance(rollout["start_time"], float)

    fetched = J(api)("GET", f"/v1/agl/rollouts/{rollout['rollout_id']}")
    assert fetched == rollout

    many = J(api)(
        "POST",
        "/v1/agl/queues/rollouts/enqueue",
        201,
        json={"rollouts": [{"input": i, "mode": "val", "metadata": {"i": i}} for i in range(3)]},
    )
    assert [r["input"] for r in many] == [0, 1, 2]
    assert [r["metadata"] for r in many] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert all(r["mode"] == "val" and set(r) == ROLLOUT_KEYS for r in many)

    assert J(api)("POST", "/v1/agl/queues/rollouts/enqueue", 201, json={"rollouts": []}) == []
    missing = J(api)("POST", "/v1/agl/queues/rollouts/enqueue", 422, json={})
    assert missing["detail"][0]["type"] == "missing"
    assert missing["detail"][0]["loc"] == ["body", "rollouts"]


def test_start_rollout_dequeue_and_attempt_shapes(api):
    tag = unique()
    started = J(api)(
        "POST",
        "/v1/agl/rollouts",
        201,
        json={"input": {"tag": tag}, "worker_id": f"w-{tag}", "config": {"timeout_seconds": 100}},
    )
    assert set(started) == ROLLOUT_KEYS | {"attempt"}
    assert started["status"] == "preparing"
    assert started["config"]["timeout_seconds"] == 100.0 and isinstance(started["config"]["timeout_seconds"], float)
    attempt = started["attempt"]
    assert set(attempt) == ATTEMPT_KEYS
    assert re.fullmatch(r"at-[0-9a-f]{8}", attempt["attempt_id"])
    assert attempt["sequence_id"] == 1 and attempt["status"] == "preparing"
    assert attempt["worker_id"] == f"w-{tag}" and attempt["metadata"] is None
    assert attempt["rollout_id"] == started["rollout_id"]

    rid = started["rollout_id"]
    assert J(api)("GET", f"/v1/agl/rollouts/{rid}")["attempt"]["attempt_id"] == attempt["attempt_id"]
    second = J(api)("POST", f"/v1/agl/rollouts/{rid}/attempts", 201)
    assert second["attempt"]["sequence_id"] == 2 and second["attempt"]["worker_id"] is None
    page = J(api)("GET", f"/v1/agl/rollouts/{rid}/attempts")
    assert set(page) == PAGE_KEYS
    assert [a["sequence_id"] for a in page["items"]] == [1, 2] and page["total"] == 2
    searched = J(api)("POST", f"/v1/agl/rollouts/{rid}/attempts/search", json={"sort_order": "desc", "limit": 1})
    assert [a["sequence_id"] for a in searched["items"]] == [2]
    assert (searched["limit"], searched["offset"], searched["total"]) == (1, 0, 2)
    latest = J(api)("GET", f"/v1/agl/rollouts/{rid}/attempts/latest")
    assert latest["attempt_id"] == second["attempt"]["attempt_id"]

    updated = J(api)("POST", f"/v1/agl/rollouts/{rid}/attempts/latest", json={"status": "succeeded"})
    assert set(updated) == ATTEMPT_KEYS and updated["status"] == "succeeded" and updated["end_time"] is not None
    rollout = J(api)("POST", f"/v1/agl/rollouts/{rid}", json={})
    assert set(rollout) == ROLLOUT_KEYS, "rollout update answers a Rollout without attempt"
    assert rollout["status"] == "succeeded"

    drain(api)
    queued = J(api)("POST", "/v1/agl/queues/rollouts/enqueue", 201, json={"rollouts": [{"input": tag}]})[0]
    assert J(api)("POST", "/v1/agl/queues/rollouts/dequeue", json={"limit": 0}) == []
    claimed = J(api)("POST", "/v1/agl/queues/rollouts/dequeue")  # no body: limit 1
    assert [c["rollout_id"] for c in claimed] == [queued["rollout_id"]]
    assert set(claimed[0]) == ROLLOUT_KEYS | {"attempt"} and claimed[0]["status"] == "preparing"
    assert J(api)("POST", "/v1/agl/queues/rollouts/dequeue", json={"limit": 5, "worker_id": f"w-{tag}"}) == []


def test_null_json_bodies_are_application_json(api):
    tag = unique()
    queued = J(api)("POST", "/v1/agl/queues/rollouts/enqueue", 201, json={"rollouts": [{"input": tag}]})[0]
    assert J(api)("GET", f"/v1/agl/rollouts/{queued['rollout_id']}/attempts/latest") is None
    assert J(api)("GET", f"/v1/agl/workers/missing-{tag}") is None
    assert J(api)("GET", f"/v1/agl/resources/rs-missing-{tag}") is None

    started = J(api)("POST", "/v1/agl/rollouts", 201, json={"input": tag})
    span = make_span(started["rollout_id"], started["attempt"]["attempt_id"], 1, custom_extra_field={"kept": True})
    stored = J(api)("POST", "/v1/agl/spans", 201, json=span)
    assert stored == span, "a stored span is echoed verbatim, extra fields included"
    assert J(api)("POST", "/v1/agl/spans", 201, json=span) is None  # duplicate


def test_null_fields_are_400(api):
    tag = unique()
    started = J(api)("POST", "/v1/agl/rollouts", 201, json={"input": tag, "worker_id": f"w-{tag}"})
    rid, aid = started["rollout_id"], started["attempt"]["attempt_id"]
    for field in ("status", "config"):
        body = J(api)("POST", f"/v1/agl/rollouts/{rid}", 400, json={field: None})
        assert body == {"detail": f"{field} is invalid; it cannot be a null value."}
    for field in ("status", "worker_id", "last_heartbeat_time", "metadata"):
        body = J(api)("POST", f"/v1/agl/rollouts/{rid}/attempts/{aid}", 400, json={field: None})
        assert body == {"detail": f"{field} is invalid; it cannot be a null value."}
    body = J(api)("POST", f"/v1/agl/workers/w-{tag}", 400, json={"heartbeat_stats": None})
    assert body == {"detail": "heartbeat_stats is invalid; it cannot be a null value."}

    # These may be nulled.
    nulled = J(api)("POST", f"/v1/agl/rollouts/{rid}", json={"metadata": None, "mode": None, "input": None})
    assert nulled["metadata"] is None and nulled["mode"] is None and nulled["input"] is None
    assert nulled["status"] == "preparing"


def test_validation_errors_are_422(api):
    tag = unique()
    started = J(api)("POST", "/v1/agl/rollouts", 201, json={"input": tag})
    rid, aid = started["rollout_id"], started["attempt"]["attempt_id"]

    bad_json = J(api)(
        "POST", "/v1/agl/rollouts", 422, data=b'{"input": ', headers={"Content-Type": "application/json"}
    )
    assert bad_json["detail"][0]["type"] == "json_invalid"
    too_few = J(api)("POST", "/v1/agl/rollouts", 422, json={"input": 1, "config": {"max_attempts": 0}})
    assert too_few["detail"][0]["loc"][-1] == "max_attempts"
    J(api)("POST", "/v1/agl/rollouts", 422, json={"config": {}})  # input is required
    J(api)("POST", f"/v1/agl/rollouts/{rid}", 422, json={"status": "exploded"})
    J(api)("POST", f"/v1/agl/rollouts/{rid}/attempts/{aid}", 422)  # body required
    bad_resource = J(api)("POST", "/v1/agl/resources", 422, json={"x": {"resource_type": "gpu", "count": 1}})
    assert bad_resource["detail"][0]["type"] == "union_tag_invalid"
    J(api)("GET", "/v1/agl/spans", 422)  # rollout_id is required
    J(api)("GET", "/v1/agl/rollouts?sort_order=sideways", 422)
    J(api)("POST", "/v1/agl/rollouts/search", 422, json={"filter_logic": "xor"})
    bad_span = make_span(rid, aid, 1, status={"status_code": "MAYBE"})
    J(api)("POST", "/v1/agl/spans", 422, json=bad_span)


def test_pagination_errors_are_400(api):
    limit_msg = {"detail": "Limit must be greater than 0 or -1 for no limit"}
    offset_msg = {"detail": "Offset must be greater than or equal to 0"}
    assert J(api)("GET", "/v1/agl/rollouts?limit=0", 400) == limit_msg
    assert J(api)("GET", "/v1/agl/rollouts?limit=-2", 400) == limit_msg
    assert J(api)("GET", "/v1/agl/rollouts?offset=-1", 400) == offset_msg
    assert J(api)("POST", "/v1/agl/rollouts/search", 400, json={"limit": 0}) == limit_msg
    assert J(api)("POST", "/v1/agl/workers/search", 400, json={"offset": -3}) == offset_msg
    assert J(api)("GET", "/v1/agl/resources?limit=0", 400) == limit_msg
    assert J(api)("GET", "/v1/agl/rollouts?sort_by=bogus", 400) == {
        "detail": f"Invalid sort_by: bogus, allowed fields are: {ROLLOUT_SORT_FIELDS}"
    }
    assert J(api)("POST", "/v1/agl/rollouts/search", 400, json={"sort_by": "attempt"}) == {
        "detail": f"Invalid sort_by: attempt, allowed fields are: {ROLLOUT_SORT_FIELDS}"
    }
    worker_fields = (
        "worker_id, status, heartbeat_stats, last_heartbeat_time, last_dequeue_time, last_busy_time, "
        "last_idle_time, current_rollout_id, current_attempt_id"
    )
    assert J(api)("GET", "/v1/agl/workers?sort_by=name", 400) == {
        "detail": f"Invalid sort_by: name, allowed fields are: {worker_fields}"
    }
    spans_err = J(api)("POST", "/v1/agl/spans/search", 400, json={"rollout_id": "ro-x", "sort_by": "bogus"})
    assert spans_err["detail"].startswith("Invalid sort_by: bogus, allowed fields are: rollout_id, attempt_id, ")


def test_rollout_queries_over_get_and_post(api):
    tag = unique()
    queued = J(api)("POST", "/v1/agl/queues/rollouts/enqueue", 201, json={"rollouts": [{"input": tag}]})[0]
    started = J(api)("POST", "/v1/agl/rollouts", 201, json={"input": tag})
    ids = [queued["rollout_id"], started["rollout_id"]]
    query = f"rollout_id_in={ids[0]}&rollout_id_in={ids[1]}&status_in=queuing&status_in=preparing&sort_by=start_time"
    page = J(api)("GET", f"/v1/agl/rollouts?{query}")
    assert set(page) == PAGE_KEYS and (page["limit"], page["offset"], page["total"]) == (-1, 0, 2)
    assert [r["rollout_id"] for r in page["items"]] == ids
    assert "attempt" not in page["items"][0]
    assert page["items"][1]["attempt"]["sequence_id"] == 1
    posted = J(api)(
        "POST", "/v1/agl/rollouts/search", json={"rollout_id_in": ids, "sort_by": "start_time", "sort_order": "desc"}
    )
    assert [r["rollout_id"] for r in posted["items"]] == ids[::-1]
    assert J(api)("POST", "/v1/agl/rollouts/search", json={"rollout_id_in": ids, "status_in": []})["total"] == 0


def test_resources_spans_and_waits(api):
    tag = unique()
    res = J(api)(
        "POST",
        "/v1/agl/resources",
        201,
        json={
            "llm": {"resource_type": "llm", "endpoint": "http://127.0.0.1:9/v1", "model": tag},
            "prompt": {"resource_type": "prompt_template", "template": "t", "engine": "jinja"},
        },
    )
    assert set(res) == {"resources_id", "create_time", "update_time", "version", "resources"}
    assert res["version"] == 1
    assert res["resources"]["llm"] == {
        "resource_type": "llm",
        "endpoint": "http://127.0.0.1:9/v1",
        "model": tag,
        "api_key": None,
        "sampling_parameters": {},
    }
    assert J(api)("GET", "/v1/agl/resources/latest")["resources_id"] == res["resources_id"]
    bumped = J(api)("POST", f"/v1/agl/resources/{res['resources_id']}", json={})
    assert bumped["version"] == 2 and bumped["resources"] == {} and bumped["create_time"] == res["create_time"]
    listed = J(api)("GET", f"/v1/agl/resources?resources_id={res['resources_id']}")
    assert [r["version"] for r in listed["items"]] == [2] and listed["total"] == 1

    started = J(api)("POST", "/v1/agl/rollouts", 201, json={"input": tag})
    assert started["resources_id"] == res["resources_id"]
    rid, aid = started["rollout_id"], started["attempt"]["attempt_id"]
    assert J(api)("POST", "/v1/agl/spans/next", json={"rollout_id": rid, "attempt_id": aid}) == {"sequence_id": 1}
    J(api)("POST", "/v1/agl/spans", 201, json=make_span(rid, aid, 1, "first"))
    J(api)("POST", "/v1/agl/spans", 201, json=make_span(rid, aid, 9, "second"))
    assert J(api)("POST", "/v1/agl/spans/next", json={"rollout_id": rid, "attempt_id": aid}) == {"sequence_id": 10}
    spans = J(api)("GET", f"/v1/agl/spans?rollout_id={rid}&attempt_id=latest&sort_order=desc")
    assert [s["name"] for s in spans["items"]] == ["second", "first"] and spans["total"] == 2
    searched = J(api)("POST", "/v1/agl/spans/search", json={"rollout_id": rid, "name_contains": "sec"})
    assert [s["sequence_id"] for s in searched["items"]] == [9]
    assert J(api)("GET", f"/v1/agl/rollouts/{rid}")["status"] == "running"

    other = J(api)("POST", "/v1/agl/rollouts", 201, json={"input": tag})
    J(api)("POST", f"/v1/agl/rollouts/{rid}/attempts/{aid}", json={"status": "succeeded"})
    waited = J(api)("POST", "/v1/agl/waits/rollouts", json={"rollout_ids": [rid, other["rollout_id"]], "timeout": 0})
    assert [w["rollout_id"] for w in waited] == [rid]
    assert set(waited[0]) == ROLLOUT_KEYS and waited[0]["status"] == "succeeded"
    begin = time.monotonic()
    waited = J(api)("POST", "/v1/agl/waits/rollouts", json={"rollout_ids": [other["rollout_id"]], "timeout": 0.3})
    assert waited == [] and time.monotonic() - begin >= 0.25

    stats = J(api)("GET", "/v1/agl/statistics")
    assert stats["total_rollouts"] >= 2 and stats["total_spans"] >= 2


def test_wait_wakes_up_when_a_rollout_finishes(api):
    tag = unique()
    started = J(api)("POST", "/v1/agl/rollouts", 201, json={"input": tag})
    rid, aid = started["rollout_id"], started["attempt"]["attempt_id"]
    result = {}

    def wait() -> None:
        begin = time.monotonic()
        resp = requests.post(
            api.base + "/v1/agl/waits/rollouts", json={"rollout_ids": [rid], "timeout": 20}, timeout=30
        )
        result.update(status=resp.status_code, body=resp.json(), elapsed=time.monotonic() - begin)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)  # let the wait reach the server; nothing observable to poll for
    assert waiter.is_alive(), f"the wait returned before the rollout finished: {result}"
    J(api)("POST", f"/v1/agl/rollouts/{rid}/attempts/{aid}", json={"status": "succeeded"})
    waiter.join(timeout=25)
    assert result["status"] == 200
    assert [(r["rollout_id"], r["status"]) for r in result["body"]] == [(rid, "succeeded")]
    assert result["elapsed"] < 10, "the waiter was not woken when the rollout finished"


def test_workers_routes(api):
    tag = unique()
    worker = J(api)("POST", f"/v1/agl/workers/w-{tag}", json={"heartbeat_stats": {"load": 1}})
    assert worker["worker_id"] == f"w-{tag}" and worker["status"] == "unknown"
    assert worker["heartbeat_stats"] == {"load": 1} and worker["last_heartbeat_time"] is not None
    again = J(api)("POST", f"/v1/agl/workers/w-{tag}")  # no body: heartbeat only
    assert again["heartbeat_stats"] == {"load": 1}
    page = J(api)("GET", f"/v1/agl/workers?worker_id_contains={tag}&status_in=unknown")
    assert [w["worker_id"] for w in page["items"]] == [f"w-{tag}"] and page["total"] == 1
    assert J(api)("GET", f"/v1/agl/workers/w-{tag}")["heartbeat_stats"] == {"load": 1}


def test_store_errors(api):
    missing = f"ro-{unique()}"
    resp = api("POST", f"/v1/agl/rollouts/{missing}/attempts/latest", 500 if IS_OFFICIAL else 404, json={"status": "failed"})
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["error_type"] == "ValueError"
    assert body["detail"] == ("Internal server error" if IS_OFFICIAL else f"Rollout {missing} not found")
    assert J(api)("GET", "/v1/agl/no-such-route", 404) == {"detail": "Not Found"}


def _otlp_request(rollout_id: str, attempt_id: str, names, first_span: int = 1) -> bytes:
    def kv(key, value):
        return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))

    spans = [
        trace_pb2.Span(
            trace_id=bytes.fromhex("ab" * 16),
            span_id=bytes.fromhex(f"{i + first_span:016x}"),
            name=name,
            start_time_unix_nano=1_700_000_000_000_000_000,
            end_time_unix_nano=1_700_000_001_000_000_000,
            attributes=[kv("k", "v")],
            status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR, message="boom"),
        )
        for i, name in enumerate(names)
    ]
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(
                    attributes=[
                        kv("agentlightning.rollout_id", rollout_id),
                        kv("agentlightning.attempt_id", attempt_id),
                        kv("service.name", "compat"),
                    ]
                ),
                scope_spans=[trace_pb2.ScopeSpans(spans=spans)],
            )
        ]
    )
    return request.SerializeToString()


def test_otlp_traces_endpoint(api):
    tag = unique()
    started = J(api)("POST", "/v1/agl/rollouts", 201, json={"input": tag})
    rid, aid = started["rollout_id"], started["attempt"]["attempt_id"]

    wrong = api("POST", "/v1/traces", 400, data=b"{}", headers={"Content-Type": "application/json"})
    assert wrong.headers["content-type"].startswith("application/x-protobuf")
    status = status_pb2.Status()
    status.ParseFromString(wrong.content)
    assert status.message == "Unsupported Content-Type 'application/json', expected 'application/x-protobuf'"

    ok = api(
        "POST",
        "/v1/traces",
        200,
        data=_otlp_request(rid, aid, ["otlp-a", "otlp-b"]),
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert ok.headers["content-type"].startswith("application/x-protobuf")
    response = trace_service_pb2.ExportTraceServiceResponse()
    response.ParseFromString(ok.content)
    assert response.partial_success.rejected_spans == 0

    spans = J(api)("GET", f"/v1/agl/spans?rollout_id={rid}")
    assert [(s["sequence_id"], s["name"]) for s in spans["items"]] == [(1, "otlp-a"), (2, "otlp-b")]
    span = spans["items"][0]
    assert span["trace_id"] == "ab" * 16 and span["span_id"] == "0000000000000001"
    assert span["status"] == {"status_code": "ERROR", "description": "boom"}
    assert span["start_time"] == 1700000000.0 and span["end_time"] == 1700000001.0
    assert span["attributes"]["k"] == "v"
    assert span["resource"]["attributes"]["agentlightning.rollout_id"] == rid
    assert span["context"] == {
        "trace_id": "ab" * 16,
        "span_id": "0000000000000001",
        "is_remote": False,
        "trace_state": {},
    }
    assert J(api)("GET", f"/v1/agl/rollouts/{rid}")["status"] == "running"

    # gzip in, gzip out (requests decodes the gzip answer transparently).
    zipped = api(
        "POST",
        "/v1/traces",
        200,
        data=gzip.compress(_otlp_request(rid, aid, ["otlp-gz"], first_span=3)),
        headers={
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "gzip",
            "Accept-Encoding": "gzip",
        },
    )
    assert zipped.headers.get("content-encoding") == "gzip"
    spans = J(api)("GET", f"/v1/agl/spans?rollout_id={rid}&name=otlp-gz")
    assert [(s["sequence_id"], s["name"]) for s in spans["items"]] == [(3, "otlp-gz")]
    garbage = api("POST", "/v1/traces", 400, data=b"\xff\xff\xff", headers={"Content-Type": "application/x-protobuf"})
    status = status_pb2.Status()
    status.ParseFromString(garbage.content)
    assert status.message.startswith("Unable to parse OTLP traces payload")
    api("POST", "/v1/metrics", 501, data=b"", headers={"Content-Type": "application/x-protobuf"})
