"""The real AgentOps SDK (this venv's version) against agl-agentops.

Run by scripts/agentops-compat.sh once per SDK family: agentops 0.4.21 (background auth,
`{"body": …}` uploads) and 0.4.13 (auth inside init(), bare-string uploads).
"""

import asyncio
import gzip
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from conftest import AGENTOPS_BIN, get_json, http, parse_env_block, run_agent, wait_for

SDK_VERSION = tuple(int(p) for p in version("agentops").split(".")[:3])
BACKGROUND_AUTH = SDK_VERSION >= (0, 4, 19)
# 0.4.13 - 0.4.18 have no @agentops.tool; the script falls back to @agentops.operation.
TOOL_SPAN = "add.tool" if BACKGROUND_AUTH else "add.task"
EXPECTED_SPANS = {"agl-compat.session", "Calc.agent", "run.task", TOOL_SPAN}


def spans_by_name(server, trace_id):
    status, trace = server.get(f"/_agl/traces/{trace_id}")
    assert status == 200, trace
    return {span["name"]: span for span in trace["spans"]}, trace


def test_an_sdk_run_is_authenticated_captured_and_uploaded(agentops_server):
    server = agentops_server()
    report, output = run_agent(server.env, {"AGL_TEST_MARKER": "marker-1"})
    assert report["result"] == 42
    assert report["initialized"], output
    if BACKGROUND_AUTH:
        # The background auth got our token.
        assert report["jwt"] and report["jwt"].startswith("agl-agentops-"), output
    trace_id = report["trace_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)

    # end_trace() flushes synchronously, but give the exporter a bounded moment anyway.
    wait_for(
        lambda: server.get(f"/_agl/traces/{trace_id}")[1].get("span_count", 0) >= 4,
        "the four spans of the run",
    )
    spans, trace = spans_by_name(server, trace_id)
    assert EXPECTED_SPANS <= set(spans), sorted(spans)

    root = spans["agl-compat.session"]
    assert root["parent_span_id"] is None
    assert root["attributes"]["agentops.span.kind"] == "session"
    assert root["attributes"]["agentops.session.end_state"] == "Success"
    assert spans["Calc.agent"]["attributes"]["agentops.span.kind"] == "agent"
    assert spans["run.task"]["attributes"]["operation.name"] == "run"
    assert spans[TOOL_SPAN]["parent_span_id"] == spans["run.task"]["span_id"]
    assert root["resource"]["service.name"] == "agentops"
    if not BACKGROUND_AUTH:
        # The sync family puts the project id from our token answer on the resource.
        status, _, auth = http("POST", server.url("/v3/auth/token"), {"api_key": "x"})
        assert root["resource"]["agentops.project.id"] == json.loads(auth)["project_id"]

    # The captured print() output was uploaded under the trace id.
    assert len(trace["logs"]) == 1, trace["logs"]
    log = trace["logs"][0]
    assert "marker-1: adding 1 to 41" in log["text"]
    assert log["body_form"] == ("object" if BACKGROUND_AUTH else "string")
    status, _, text = http("GET", server.url(f"/_agl/logs/{log['id']}"))
    assert status == 200 and b"marker-1" in text

    status, traces = server.get("/_agl/traces")
    listed = {t["trace_id"]: t for t in traces["traces"]}
    assert listed[trace_id]["root_span_name"] == "agl-compat.session"
    assert listed[trace_id]["log_uploads"] == 1

    counters = server.counters()
    assert counters["auth_requests"] >= 1
    # Every span batch carried the token we issued: authentication succeeded.
    assert counters["trace_batches_auth_token"] >= 1
    assert counters["trace_batches_auth_none"] == 0
    assert counters["trace_batches_auth_other"] == 0
    assert counters["log_uploads_accepted"] == 1
    assert counters["otlp_traces_requests_rejected"] == 0
    assert counters["unmatched_requests"] == 0, server.get("/_agl/counters")[1]


def test_gzip_export_is_forwarded_to_a_lightning_store_under_the_attempt(
    agentops_server, store_server
):
    status, _, body = http("POST", store_server.base + "/v1/agl/rollouts", {"input": {"task": 1}})
    assert status == 201, body
    rollout = json.loads(body)
    rollout_id = rollout["rollout_id"]
    attempt_id = rollout["attempt"]["attempt_id"]

    server = agentops_server(
        "--forward-otlp",
        store_server.base + "/v1/traces",
        "--forward-resource-attribute",
        f"agentlightning.rollout_id={rollout_id}",
        "--forward-resource-attribute",
        f"agentlightning.attempt_id={attempt_id}",
    )
    report, output = run_agent(server.env, {"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip"})
    wait_for(lambda: server.counters()["forward_sent"] >= 1, "the batch to be forwarded")
    counters = server.counters()
    assert counters["forward_failed"] == 0 and counters["forward_dropped"] == 0, counters

    # Read the spans back with the official client.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        from agentlightning.store.client_server import LightningStoreClient
    except ImportError:
        LightningStoreClient = None

    def store_spans():
        if LightningStoreClient is None:
            # Without agentlightning in this venv (0.4.13 family): the same route over HTTP.
            status, page = get_json(
                f"{store_server.base}/v1/agl/spans?rollout_id={rollout_id}&attempt_id={attempt_id}"
            )
            assert status == 200, page
            return [(s["name"], s["trace_id"], s["attempt_id"]) for s in page["items"]]

        async def query():
            client = LightningStoreClient(store_server.base)
            try:
                result = await client.query_spans(rollout_id, attempt_id)
                return [(s.name, s.trace_id, s.attempt_id) for s in result]
            finally:
                await client.close()

        return asyncio.run(query())

    spans = wait_for(
        lambda: (lambda got: got if len(got) >= 4 else None)(store_spans()),
        "the forwarded spans in the store",
    )
    assert EXPECTED_SPANS <= {name for name, _, _ in spans}, spans
    assert {trace for _, trace, _ in spans} == {report["trace_id"]}
    assert {attempt for _, _, attempt in spans} == {attempt_id}
    # What agl-agentops keeps itself came in gzip and is intact.
    assert server.get(f"/_agl/traces/{report['trace_id']}")[1]["span_count"] >= 4


def test_bad_input_gets_a_clear_4xx(agentops_server):
    server = agentops_server("--max-body-bytes", "4096")
    status, headers, body = http(
        "POST",
        server.url("/v1/traces"),
        b"\xff\xff\xff\xff",
        {"Content-Type": "application/x-protobuf"},
    )
    assert status == 400
    assert headers["content-type"] == "application/x-protobuf"
    assert b"invalid otlp protobuf payload" in body  # the google.rpc.Status message
    status, _, body = http(
        "POST", server.url("/v1/traces"), b'{"resourceSpans": [', {"Content-Type": "application/json"}
    )
    assert status == 400 and json.loads(body)["code"] == 3
    status, _, body = http(
        "POST",
        server.url("/v1/traces"),
        gzip.compress(b"\0" * 10_000_000),
        {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    assert status == 413 and json.loads(body)["detail"] == "request body exceeds 4096 bytes"
    status, _, body = http(
        "POST", server.url("/v4/logs/upload/"), b"{not json", {"Content-Type": "application/json"}
    )
    assert status == 400 and json.loads(body)["detail"].startswith("invalid json body")
    status, _, body = http("POST", server.url("/v4/logs/upload/"), b"x" * 5000)
    assert status == 413
    status, _, body = http("GET", server.url("/v9/unknown"))
    assert status == 404 and json.loads(body)["detail"] == "no route for GET /v9/unknown"
    counters = server.counters()
    assert counters["unmatched_requests"] == 1
    assert counters["otlp_traces_requests_rejected"] == 2


def test_daemon_starts_healthy_and_stops_by_its_pid_file():
    scratch = Path(tempfile.mkdtemp(prefix="agl-agentops-daemon-"))
    pid_file, log_file = scratch / "agentops.pid", scratch / "agentops.log"
    done = subprocess.run(
        [AGENTOPS_BIN, "--daemon", "--port", "0", "--drain-seconds", "0.2",
         "--pid-file", str(pid_file), "--log-file", str(log_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    pid = int(pid_file.read_text().strip())
    try:
        env = parse_env_block(done.stdout)
        status, health = get_json(env["AGENTOPS_API_ENDPOINT"] + "/health")
        assert status == 200 and health["status"] == "ok"
        # The daemon serves the SDK like the foreground server does.
        report, output = run_agent(env)
        assert report["result"] == 42
    finally:
        os.kill(pid, signal.SIGTERM)

    def gone():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return not pid_file.exists()
        return False

    wait_for(gone, "the daemon to exit and remove its pid file", timeout=30)
    assert "agentops endpoint stopped" in log_file.read_text()


def test_a_keyed_endpoint_authenticates_the_sdk_by_its_api_key(agentops_server):
    """With keys configured, the SDK's AGENTOPS_API_KEY must be one of them: the token is
    handed out for it, every export carries the token, the inspection routes need the
    admin key, and the environment block never prints a key."""
    import uuid

    key, admin = str(uuid.uuid4()), "admin-" + uuid.uuid4().hex
    server = agentops_server("--key", key, "--admin-key", admin)
    assert "AGENTOPS_API_KEY" not in server.env, "the block leaves the key to the agent"
    report, output = run_agent(server.env, {"AGENTOPS_API_KEY": key, "AGL_TEST_MARKER": "keyed"})
    assert report["result"] == 42 and report["initialized"], output
    trace_id = report["trace_id"]
    as_admin = {"Authorization": f"Bearer {admin}"}

    def trace():
        status, _, body = http("GET", server.url(f"/_agl/traces/{trace_id}"), headers=as_admin)
        return json.loads(body) if status == 200 else None

    found = wait_for(lambda: (t := trace()) and t.get("span_count", 0) >= 4 and t, "the spans of the keyed run")
    assert EXPECTED_SPANS <= {s["name"] for s in found["spans"]}
    assert len(found["logs"]) == 1 and "keyed: adding 1 to 41" in found["logs"][0]["text"]
    # Inspection needs the admin key; the SDK's own key does not open it.
    assert http("GET", server.url("/_agl/counters"))[0] == 401
    assert http("GET", server.url("/_agl/counters"), headers={"Authorization": f"Bearer {key}"})[0] == 401
    status, _, body = http("GET", server.url("/_agl/counters"), headers=as_admin)
    counters = json.loads(body)["counters"]
    assert counters["trace_batches_auth_token"] >= 1
    assert counters["trace_batches_auth_none"] == 0
    # A wrong API key gets no token.
    assert http("POST", server.url("/v3/auth/token"), {"api_key": str(uuid.uuid4())})[0] == 401
