"""Fixtures of the real-browser dashboard suite (scripts/browser-test.sh).

Once per session, on 127.0.0.1 and port 0:

* agl-store (memory backend, watchdog scans on every call), filled through the official
  client (`LightningStoreClient` of agentlightning 0.3.0): a resources version, 60 queued
  rollouts (train and val) of which 20 are dequeued by a worker and then succeeded, failed,
  running or left preparing, and one "browser demo" rollout whose attempt makes two model
  calls through the token-capturing proxy (the openai SDK; one plain, one streamed), carries
  a tree of OpenTelemetry spans (agent.run > tool.search > http.fetch, agent.run > llm.plan)
  and a reward span;
* the vLLM test double and `agl-vllm proxy` in front of it, exporting to that store;
* agl-agentops, and one trace recorded by the real AgentOps SDK (agentops_agent.py, in a
  subprocess);
* headless Chromium (tests/lib/aglbrowser.py), whose console and network logs are checked
  after every page load and at the end of every test.

Screenshots go to $AGL_SCREENSHOTS_DIR (default target/screenshots), one per page. With
AGL_README_SCREENSHOTS=1 only the README test writes: its two images, to
$AGL_SCREENSHOTS_DIR or else docs/images.
"""

import asyncio
import json
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))

from agltest import AgentOps, Llm, Missing, Store, http, reward_span, run_sdk_agent, wait_for  # noqa: E402
from aglbrowser import Browser, missing_browser  # noqa: E402

HERE = Path(__file__).resolve().parent

ROLLOUT_STATUSES = ("queuing", "preparing", "running", "failed", "succeeded", "cancelled", "requeuing")
WORKER = "browser-worker-1"
QUEUED = 60  # enqueued rollouts; with the demo rollout, 61: two pages of 50
PROMPTS = ("Plan a browser demo for the dashboard", "Summarise the waterfall view please")
REWARD = 0.5
MARKER = "agl-browser-marker"


# ---- the official client ----------------------------------------------------------------


def with_client(store, action):
    """Runs `await action(client)` with a fresh LightningStoreClient; returns its result."""
    from agentlightning.store.client_server import LightningStoreClient

    async def run():
        client = LightningStoreClient(store.base)
        try:
            return await action(client)
        finally:
            await client.close()

    return asyncio.run(run())


def all_rollouts(store):
    """Every rollout, as the official client lists it."""

    async def query(client):
        return list((await client.query_rollouts()).items)

    return with_client(store, query)


def status_counts(store):
    """{status: count} per rollout status, each from its own filtered query."""

    async def query(client):
        return {s: (await client.query_rollouts(status_in=[s], limit=1)).total for s in ROLLOUT_STATUSES}

    return with_client(store, query)


# ---- servers ----------------------------------------------------------------------------


def _start(factory, *args):
    try:
        return factory(*args)
    except Missing as err:
        pytest.fail(str(err))


@pytest.fixture(scope="session")
def store():
    server = _start(
        Store, "agl-store", ["--storage", "memory", "--scan-debounce-seconds", "0"]
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def llm(store):
    proxy = _start(Llm, "sidecar", store)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def agentops_server():
    server = _start(AgentOps)
    yield server
    assert server.stop() == 0, server.process.output()


# ---- the data ---------------------------------------------------------------------------


def _otel_tree(started, finished):
    """Four finished OpenTelemetry spans with real parent links and staggered times within
    [started, finished] (ns): agent.run > tool.search > http.fetch, and agent.run > llm.plan."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "agl-browser-demo"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("agl-browser-test")
    def at(fraction):
        return started + int((finished - started) * fraction)

    def span(name, parent, start, end, attributes):
        context = trace.set_span_in_context(parent) if parent is not None else None
        return tracer.start_span(name, context=context, start_time=at(start), attributes=attributes), end

    root, root_end = span("agent.run", None, 0.0, 1.0, {"agent.name": "browser-demo"})
    search, search_end = span("tool.search", root, 0.04, 0.3, {"search.query": "rust dashboards"})
    fetch, fetch_end = span("http.fetch", search, 0.08, 0.25, {"http.url": "https://example.invalid/search"})
    plan, plan_end = span("llm.plan", root, 0.32, 0.98, {"plan.steps": 3})
    for s, end in ((fetch, fetch_end), (search, search_end), (plan, plan_end), (root, root_end)):
        s.end(end_time=at(end))
    provider.shutdown()
    return sorted(exporter.get_finished_spans(), key=lambda s: s.start_time)


def _llm_calls(llm, rid, aid):
    """Two model calls through the proxy as the attempt's agent: one plain, one streamed.
    Returns what the openai SDK got for each."""
    import openai

    agent = openai.OpenAI(base_url=f"{llm.base}/rollout/{rid}/attempt/{aid}/v1", api_key="not-needed")
    calls = []
    first = agent.chat.completions.create(
        model="agl-model", messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=32
    ).model_dump()
    calls.append(SimpleNamespace(
        id=first["id"], prompt=PROMPTS[0], completion=first["choices"][0]["message"]["content"],
        prompt_token_ids=first["prompt_token_ids"], completion_token_ids=first["choices"][0]["token_ids"],
        usage=first.get("usage"),
    ))
    call_id, prompt_ids, response_ids, text = None, None, [], ""
    for chunk in agent.chat.completions.create(
        model="agl-model", messages=[{"role": "user", "content": PROMPTS[1]}], max_tokens=32, stream=True
    ):
        data = chunk.model_dump()
        call_id = data["id"]
        prompt_ids = prompt_ids or data.get("prompt_token_ids")
        for choice in data["choices"]:
            response_ids.extend(choice.get("token_ids") or [])
            text += (choice.get("delta") or {}).get("content") or ""
    calls.append(SimpleNamespace(
        id=call_id, prompt=PROMPTS[1], completion=text, prompt_token_ids=prompt_ids,
        completion_token_ids=response_ids, usage=None,
    ))
    for call in calls:
        assert call.completion and call.prompt_token_ids and call.completion_token_ids, call
    return calls


@pytest.fixture(scope="session")
def demo(store, llm):
    """Fills the store through the official client; returns what it was told and answered."""
    from agentlightning.types import LLM, PromptTemplate, RolloutConfig

    async def fill(client):
        resources = await client.add_resources({
            "main_llm": LLM(endpoint=f"{llm.base}/v1", model="agl-model", sampling_parameters={"temperature": 0.0}),
            "system_prompt": PromptTemplate(template="You are a {role}.", engine="f-string"),
        })
        queued = []
        for i in range(QUEUED):
            queued.append(await client.enqueue_rollout(
                input={"task": f"demo task {i:02d}", "n": i}, mode="val" if i % 4 == 3 else "train",
                resources_id=resources.resources_id, metadata={"batch": i // 10},
            ))
        outcome = {}
        for k in range(20):
            attempted = await client.dequeue_rollout(worker_id=WORKER)
            assert attempted is not None, "the queue ran dry"
            rid, aid = attempted.rollout_id, attempted.attempt.attempt_id
            if k < 12:
                await client.update_attempt(rid, aid, status="succeeded")
                outcome[rid] = "succeeded"
            elif k < 17:
                await client.update_rollout(rid, status="failed")
                outcome[rid] = "failed"
            elif k < 19:
                await client.update_attempt(rid, aid, status="running")
                outcome[rid] = "running"
            else:
                outcome[rid] = "preparing"

        rollout = await client.start_rollout(
            input={"task": "browser demo"}, mode="train", resources_id=resources.resources_id,
            config=RolloutConfig(max_attempts=2), metadata={"owner": "browser-suite"}, worker_id=WORKER,
        )
        rid, aid = rollout.rollout_id, rollout.attempt.attempt_id
        # The tree spans the model calls: agent.run from before the first to after the last.
        started = time.time_ns() - 150_000_000
        calls = _llm_calls(llm, rid, aid)
        otel = _otel_tree(started, time.time_ns() + 50_000_000)
        for span in otel:
            await client.add_otel_span(rid, aid, span)
        sequence = await client.get_next_span_sequence_id(rid, aid)
        reward = reward_span(rid, aid, sequence, REWARD)
        status, body = http("POST", f"{store.base}/v1/agl/spans", reward)
        assert status in (200, 201), body

        # Three spans per model call from the proxy, the four of the tree, the reward.
        want = 2 * 3 + len(otel) + 1
        deadline = time.monotonic() + 30
        while True:
            spans = list(await client.query_spans(rid))
            if len(spans) >= want and sum(s.name == "raw_gen_ai_request" for s in spans) == 2:
                break
            assert time.monotonic() < deadline, f"only {len(spans)} of {want} spans: {[s.name for s in spans]}"
            await asyncio.sleep(0.05)
        return SimpleNamespace(
            resources_id=resources.resources_id, queued=queued, outcome=outcome,
            rollout_id=rid, attempt_id=aid, calls=calls, spans=spans,
            otel={s.name: format(s.context.span_id, "016x") for s in otel},
            reward_span_id=reward["span_id"],
        )

    return with_client(store, fill)


def run_agentops_agent(server):
    """agentops_agent.py with this interpreter (the venv's SDK) against server; returns the
    report, the Session Replay URL the SDK logged, and the output."""
    output = run_sdk_agent(HERE / "agentops_agent.py", server.env, {"AGL_TEST_MARKER": MARKER})
    reports = [line for line in output.splitlines() if line.startswith("AGL-REPORT ")]
    assert reports, output
    report = json.loads(reports[-1][len("AGL-REPORT "):])
    links = re.findall(r"Session Replay for [^:]*: (\S+/sessions\?trace_id=[0-9a-f]{32})", output)
    assert links, "the SDK printed no Session Replay link:\n" + output
    return report, links[-1], output


@pytest.fixture(scope="session")
def agentops_trace(agentops_server):
    """One trace recorded by the AgentOps SDK; its spans and logs as agl-agentops keeps them."""
    report, url, output = run_agentops_agent(agentops_server)
    trace_id = report["trace_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id), report
    assert url == f"{agentops_server.env['AGENTOPS_APP_URL']}/sessions?trace_id={trace_id}", output

    def recorded():
        status, trace = agentops_server.get(f"/_agl/traces/{trace_id}")
        return trace if status == 200 and trace.get("span_count", 0) >= 6 and trace.get("logs") else None

    trace = wait_for(recorded, "the SDK's spans and log upload")
    return SimpleNamespace(trace_id=trace_id, url=url, spans=trace["spans"], logs=trace["logs"], output=output)


# ---- the browser ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser():
    missing = missing_browser()
    if missing:
        pytest.fail(missing)
    chrome = Browser()
    yield chrome
    chrome.quit()


@pytest.fixture(autouse=True)
def _browser_logs_clean(request):
    """After a test that used the browser: nothing went wrong in the page since its last
    check (late console errors, failed refresh polls)."""
    if "browser" in request.fixturenames:
        request.getfixturevalue("browser").allowed = []
    yield
    if "browser" in request.fixturenames:
        chrome = request.getfixturevalue("browser")
        chrome.assert_clean(f"after {request.node.name}")
