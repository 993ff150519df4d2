"""The dashboards of agl-store and agl-agentops in a real browser (headless Chromium).

Every page load is checked for console errors and failed requests (conftest.Browser.open),
and every value the pages show is compared with what the official client
(`LightningStoreClient` of agentlightning 0.3.0), the openai SDK or the AgentOps SDK
reported. The DOM contract the pages follow:

store `/`                 #overview, #queue-depth (integer), #status-counts with
                          tr[data-status=S] > td.count (integer), #throughput, #workers,
                          #latest-resources, #storage (names the backend); refreshes itself
`/ui/rollouts`            form#filters (GET): select status ("" = any), select mode ("",
                          train, val, test), text q (id contains), datetime-local from/to
                          (UTC), select sort (created, start_time, end_time, status,
                          rollout_id), select order (desc, asc), button #apply; #total
                          (integer); table #rollouts, rows tr.rollout[data-rollout-id] with
                          a.rollout-link -> /ui/rollouts/{id}, td.status, td.mode; 50 a page
                          (`limit`), newest first; #pager with a.next / a.prev (absent or
                          .disabled when there is no such page)
`/ui/rollouts/{id}`       pre#rollout-input (the input as JSON), #rollout-config,
                          #rollout-metadata, #attempts tr.attempt[data-attempt-id],
                          #waterfall .wf-row[data-span-id][data-parent-id][data-depth] with
                          .wf-name and .wf-bar, depth-first; a click on a row fills
                          #span-detail; reward spans' rows have class `reward`; #rewards;
                          #llm-calls .llm-call with .llm-prompt, .llm-completion, .llm-tokens,
                          details.llm-token-ids; past 600 rows the waterfall shows its first
                          levels, a folded row has button.wf-more ("+N") that loads its rows
                          below it; past 50 calls, #llm-calls [data-more] loads the next 50
`/ui/resources`           #resources     `/ui/workers`  #workers-table tr.worker[data-worker-id]
`/ui/api`                 #api .api-op[data-method][data-path], one per operation of
                          /openapi.json
agentops `/`              #traces tr.trace[data-trace-id] with a.trace-link -> /ui/traces/{id}
`/sessions?trace_id=`     ends on /ui/traces/{id}: #waterfall (as above), #logs
"""

import json
import re
import time
from datetime import datetime, timezone
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import pytest

from conftest import (
    MARKER,
    QUEUED,
    REWARD,
    ROLLOUT_STATUSES,
    WORKER,
    all_rollouts,
    status_counts,
    with_client,
)
from agltest import free_port, get_json
from aglbrowser import README_MODE, WINDOW, png_size

PAGE = 50


# ---- helpers ----------------------------------------------------------------------------


def by_css():
    from selenium.webdriver.common.by import By

    return By.CSS_SELECTOR


def integer(text, what):
    text = text.strip()
    assert re.fullmatch(r"\d+", text), f"{what} should be an integer, not {text!r}"
    return int(text)


def integers(text):
    return [int(n) for n in re.findall(r"-?\d+", text)]


def contains_run(haystack, needle):
    """True when needle occurs in haystack as a contiguous run."""
    n = len(needle)
    return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def text_of(element):
    """The element's whole text, shown or not (a closed <details>, a hidden cell)."""
    return element.get_attribute("textContent") or ""


def listed(browser):
    """The rows of #rollouts: [(id, status, mode)]; checks each row's link."""
    css = by_css()
    rows = []
    for row in browser.find_all("#rollouts tr.rollout[data-rollout-id]"):
        rid = row.get_attribute("data-rollout-id")
        link = row.find_element(css, "a.rollout-link").get_attribute("href")
        assert urlparse(link).path == f"/ui/rollouts/{rid}", link
        rows.append((rid, row.find_element(css, "td.status").text.strip(),
                     row.find_element(css, "td.mode").text.strip()))
    return rows


def total(browser):
    return integer(browser.find("#total").text, "#total")


def pager_link(browser, which):
    """The pager's a.next / a.prev when it leads somewhere, else None."""
    links = browser.find_all(f"#pager a.{which}")
    assert len(links) <= 1, f"{len(links)} a.{which} links"
    if not links or "disabled" in (links[0].get_attribute("class") or "").split():
        return None
    return links[0]


def follow(browser, element, name):
    """Clicks a link or submit button and waits for the next page (a full load)."""
    from selenium.webdriver.support import expected_conditions as EC

    old = browser.find("html")
    element.click()
    browser.wait(EC.staleness_of(old), f"the page after clicking towards {name}")
    browser.wait(lambda d: d.execute_script("return document.readyState") == "complete", "the load")
    browser.shot(name)
    browser.assert_clean(f"opening {browser.driver.current_url}")


def filter_rollouts(browser, store, name, *, status=None, mode=None, q=None, sort=None, order=None,
                    from_=None, to=None):
    """Opens /ui/rollouts, fills form#filters as a user would, clicks #apply."""
    from selenium.webdriver.support.ui import Select

    css = by_css()
    browser.open(store.base + "/ui/rollouts", None)
    form = browser.find("form#filters")
    for field, value in (("status", status), ("mode", mode), ("sort", sort), ("order", order)):
        if value is not None:
            select = form.find_element(css, f"select[name='{field}']")
            Select(select).select_by_value(value)
    if q is not None:
        box = form.find_element(css, "input[name='q']")
        box.clear()
        box.send_keys(q)
    for field, value in (("from", from_), ("to", to)):
        if value is not None:
            box = form.find_element(css, f"input[name='{field}']")
            assert box.get_attribute("type") == "datetime-local", f"{field} is not datetime-local"
            # Typing into a datetime-local field depends on the locale's format: set the
            # value the way the picker does, and tell the page.
            browser.driver.execute_script(
                "arguments[0].value = arguments[1];"
                "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));"
                "arguments[0].dispatchEvent(new Event('change', {bubbles: true}));",
                box, value,
            )
            assert box.get_attribute("value") == value
    follow(browser, browser.find("#apply"), name)
    query = parse_qs(urlparse(browser.driver.current_url).query)
    for field, value in (("status", status), ("mode", mode), ("q", q), ("sort", sort), ("order", order),
                         ("from", from_), ("to", to)):
        if value:
            assert query.get(field) == [value], f"{field}={value!r} not in {browser.driver.current_url}"


def all_pages(browser, first_name):
    """The rows of this page and every next one (following a.next)."""
    rows = listed(browser)
    page = 1
    while (link := pager_link(browser, "next")) is not None:
        page += 1
        assert page < 10, "the pager does not end"
        follow(browser, link, f"{first_name}-page{page}")
        rows += listed(browser)
    return rows


def local(ts):
    """A datetime-local value (UTC) for a Unix time."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M")


def waterfall(browser):
    css = by_css()
    rows = []
    for row in browser.find_all("#waterfall .wf-row"):
        depth = row.get_attribute("data-depth")
        assert depth is not None and re.fullmatch(r"\d+", depth), f"data-depth {depth!r}"
        assert row.find_elements(css, ".wf-bar"), "a .wf-row without .wf-bar"
        rows.append(SimpleNamespace(
            element=row, id=row.get_attribute("data-span-id"), parent=row.get_attribute("data-parent-id") or "",
            depth=int(depth), name=text_of(row.find_element(css, ".wf-name")).strip(),
            classes=(row.get_attribute("class") or "").split(),
        ))
    assert rows, "no .wf-row in #waterfall"
    return rows


def assert_depth_first(rows):
    """Tree order: each row follows its parent's subtree start, at the parent's depth + 1;
    a row whose parent is not shown is a root (depth 0)."""
    shown = {r.id for r in rows}
    assert len(shown) == len(rows), "a span shown twice"
    stack = []
    for row in rows:
        if row.parent and row.parent in shown:
            open_ids = [r.id for r in stack]
            assert row.parent in open_ids, (
                f"{row.name} ({row.id}) is not inside its parent's subtree: "
                f"rows in order {[(r.name, r.depth) for r in rows]}"
            )
            while stack[-1].id != row.parent:
                stack.pop()
            assert row.depth == stack[-1].depth + 1, f"{row.name}: depth {row.depth}, parent {stack[-1].depth}"
        else:
            stack = []
            assert row.depth == 0, f"{row.name} has no parent shown but depth {row.depth}"
        stack.append(row)


# ---- the harness (works without the dashboard) ------------------------------------------


def test_the_store_is_filled_through_the_official_client(store, demo):
    from agentlightning.emitter.reward import find_final_reward

    counts = status_counts(store)
    # 60 queued, 20 of them dequeued; the demo rollout runs.
    assert counts["succeeded"] == 12 and counts["failed"] == 5, counts
    assert counts["running"] >= 3 and counts["preparing"] >= 1 and counts["queuing"] >= QUEUED - 20, counts
    rollouts = all_rollouts(store)
    assert len(rollouts) >= QUEUED + 1
    assert {r.rollout_id: r.status for r in rollouts if r.rollout_id in demo.outcome} == demo.outcome
    assert sum(r.mode == "val" for r in rollouts if r.rollout_id != demo.rollout_id) == QUEUED // 4

    spans = {s.span_id: s for s in demo.spans}
    by_name = {s.name: s for s in demo.spans}
    assert by_name["tool.search"].parent_id == by_name["agent.run"].span_id == demo.otel["agent.run"]
    assert by_name["llm.plan"].parent_id == by_name["agent.run"].span_id
    assert by_name["http.fetch"].parent_id == by_name["tool.search"].span_id
    assert by_name["agent.run"].parent_id is None
    assert sum(s.name == "raw_gen_ai_request" for s in spans.values()) == 2
    assert find_final_reward(demo.spans) == REWARD


def test_the_agentops_sdk_recorded_a_trace(agentops_trace):
    names = {s["name"] for s in agentops_trace.spans}
    assert {"browser-demo.session", "Researcher.agent", "investigate.task", "search.tool"} <= names, names
    ids = {s["span_id"] for s in agentops_trace.spans}
    assert sum(1 for s in agentops_trace.spans if s["parent_span_id"] in ids) >= 4
    assert any(MARKER in log["text"] for log in agentops_trace.logs), agentops_trace.logs


# A JSON document has no <link rel=icon>, so Chromium asks for /favicon.ico, which the
# JSON APIs need not serve. The dashboard pages get no such allowance.
FAVICON = (r"/favicon\.ico\b",)


def test_chromium_loads_pages_and_screenshots(browser, store, agentops_server):
    browser.open(store.base + "/v1/agl/health", "store-health", allow=FAVICON)
    assert json.loads(browser.find("body").text)["status"] == "ok"
    browser.open(store.base + "/openapi.json", "store-openapi", allow=FAVICON)
    assert "/v1/agl/rollouts" in json.loads(browser.find("body").text)["paths"]
    browser.open(agentops_server.base + "/health", "agentops-health", allow=FAVICON)
    assert json.loads(browser.find("body").text)["status"] == "ok"
    if not README_MODE:
        assert browser.shots and png_size(browser.shots[-1]) == WINDOW


def test_the_page_checks_catch_errors(browser, store):
    browser.driver.get(store.base + "/v1/agl/no-such-route")
    found = browser.problems()
    assert any(p.startswith("HTTP 404 for ") and "no-such-route" in p for p in found), found
    browser.driver.get("data:text/html,<script>throw new Error('agl-browser-check')</script>")
    found = browser.problems()
    assert any("Uncaught" in p and "agl-browser-check" in p for p in found), found
    closed = f"http://127.0.0.1:{free_port()}/x"
    browser.driver.get(f"data:text/html,<script>fetch('{closed}').catch(() => {{}})</script>")
    seen = []
    browser.wait(lambda d: seen.extend(browser.problems()) or any("request failed" in p for p in seen),
                 "the failed fetch in the performance log")


# ---- agl-store: overview ----------------------------------------------------------------


def read_status_counts(browser):
    counts = {}
    for row in browser.find_all("#status-counts tr[data-status]"):
        status = row.get_attribute("data-status")
        assert status in ROLLOUT_STATUSES, f"unknown status row {status!r}"
        assert status not in counts, f"two rows for {status}"
        counts[status] = integer(row.find_element(by_css(), "td.count").text, f"count of {status}")
    return counts


def test_overview(browser, store, demo):
    browser.open(store.base + "/", "store-overview")
    for element in ("#overview", "#throughput", "#workers", "#latest-resources"):
        browser.find(element)
    assert "memory" in browser.find("#storage").text.lower()
    assert demo.resources_id in browser.find("#latest-resources").text
    expected = status_counts(store)
    shown = read_status_counts(browser)
    for status, count in expected.items():
        assert shown.get(status, 0) == count, f"{status}: page {shown.get(status)}, client {count}"
    assert integer(browser.find("#queue-depth").text, "#queue-depth") == expected["queuing"] + expected["requeuing"]


# ---- agl-store: the rollout list --------------------------------------------------------


def test_rollouts_paginate_newest_first(browser, store, demo):
    rollouts = {r.rollout_id: r for r in all_rollouts(store)}
    assert len(rollouts) > PAGE
    browser.open(store.base + "/ui/rollouts", "store-rollouts")
    assert total(browser) == len(rollouts)
    first = listed(browser)
    assert len(first) == PAGE
    assert pager_link(browser, "prev") is None
    rows = all_pages(browser, "store-rollouts")
    assert len(rows) == len(rollouts) and rows[:PAGE] == first
    assert pager_link(browser, "prev") is not None and pager_link(browser, "next") is None
    ids = [rid for rid, _, _ in rows]
    assert len(set(ids)) == len(ids), "a rollout on two pages"
    assert set(ids) == set(rollouts)
    for rid, status, mode in rows:
        assert status == rollouts[rid].status and mode == (rollouts[rid].mode or ""), (rid, status, mode)
    starts = [rollouts[rid].start_time for rid in ids]
    assert starts == sorted(starts, reverse=True), "not newest first"
    follow(browser, pager_link(browser, "prev"), "store-rollouts-back")
    assert listed(browser) == first


def test_rollouts_filter_by_status(browser, store, demo):
    async def succeeded(client):
        return await client.query_rollouts(status_in=["succeeded"])

    expected = with_client(store, succeeded)
    filter_rollouts(browser, store, "store-rollouts-succeeded", status="succeeded")
    rows = listed(browser)
    assert rows and {s for _, s, _ in rows} == {"succeeded"}
    assert {rid for rid, _, _ in rows} == {r.rollout_id for r in expected.items}
    assert total(browser) == expected.total == len(rows)


def test_rollouts_filter_by_mode(browser, store, demo):
    val = {r.rollout_id for r in all_rollouts(store) if r.mode == "val"}
    filter_rollouts(browser, store, "store-rollouts-val", mode="val")
    rows = all_pages(browser, "store-rollouts-val")
    assert {m for _, _, m in rows} == {"val"}
    assert {rid for rid, _, _ in rows} == val
    assert total(browser) == len(val)


def test_rollouts_filter_by_id(browser, store, demo):
    part = demo.rollout_id[-6:]

    async def matching(client):
        return await client.query_rollouts(rollout_id_contains=part)

    expected = with_client(store, matching)
    assert demo.rollout_id in {r.rollout_id for r in expected.items}
    filter_rollouts(browser, store, "store-rollouts-id", q=part)
    rows = listed(browser)
    assert {rid for rid, _, _ in rows} == {r.rollout_id for r in expected.items}
    assert total(browser) == expected.total
    assert browser.find("form#filters input[name='q']").get_attribute("value") == part


def test_rollouts_sort_by_id_ascending(browser, store, demo):
    ids = sorted(r.rollout_id for r in all_rollouts(store))
    filter_rollouts(browser, store, "store-rollouts-by-id", sort="rollout_id", order="asc")
    assert [rid for rid, _, _ in listed(browser)] == ids[:PAGE]
    rows = all_pages(browser, "store-rollouts-by-id")
    assert [rid for rid, _, _ in rows] == ids


def test_rollouts_filter_by_time(browser, store, demo):
    rollouts = all_rollouts(store)
    filter_rollouts(browser, store, "store-rollouts-future", from_="2099-01-01T00:00")
    assert listed(browser) == [] and total(browser) == 0
    starts = [r.start_time for r in rollouts]
    lo, hi = local(min(starts) - 120), local(max(starts) + 120)
    filter_rollouts(browser, store, "store-rollouts-window", from_=lo, to=hi)
    assert total(browser) == len(rollouts)
    filter_rollouts(browser, store, "store-rollouts-past", to=local(min(starts) - 120))
    assert listed(browser) == [] and total(browser) == 0


# ---- agl-store: one rollout -------------------------------------------------------------


def open_demo(browser, store, demo, name):
    browser.open(f"{store.base}/ui/rollouts/{demo.rollout_id}", name)


def test_rollout_page(browser, store, demo):
    open_demo(browser, store, demo, "store-rollout")
    shown = browser.find("pre#rollout-input")
    assert json.loads(text_of(shown)) == {"task": "browser demo"}
    config = text_of(browser.find("#rollout-config"))
    assert "max_attempts" in config and "2" in config, config
    assert "browser-suite" in text_of(browser.find("#rollout-metadata"))

    async def attempts(client):
        return [a.attempt_id for a in (await client.query_attempts(demo.rollout_id)).items]

    rows = browser.find_all("#attempts tr.attempt[data-attempt-id]")
    assert [r.get_attribute("data-attempt-id") for r in rows] == with_client(store, attempts)
    assert demo.attempt_id in text_of(browser.find("#attempts"))


def test_rollout_waterfall(browser, store, demo):
    open_demo(browser, store, demo, "store-rollout-waterfall")
    rows = waterfall(browser)
    spans = {s.span_id: s for s in demo.spans}
    assert {r.id for r in rows} == set(spans)
    for row in rows:
        assert row.name == spans[row.id].name
        assert row.parent == (spans[row.id].parent_id or "")
    assert_depth_first(rows)
    row = {r.name: r for r in rows if r.name in demo.otel}
    assert row["tool.search"].depth == row["agent.run"].depth + 1
    assert row["llm.plan"].depth == row["agent.run"].depth + 1
    assert row["http.fetch"].depth == row["agent.run"].depth + 2
    assert row["tool.search"].parent == row["agent.run"].id and row["http.fetch"].parent == row["tool.search"].id
    order = [r.id for r in rows]
    assert order.index(row["agent.run"].id) < order.index(row["tool.search"].id) < order.index(row["http.fetch"].id)
    # The bars are a waterfall: a child's bar lies within its parent's.
    css = by_css()
    for child, parent in (("tool.search", "agent.run"), ("http.fetch", "tool.search"), ("llm.plan", "agent.run")):
        c = row[child].element.find_element(css, ".wf-bar").rect
        p = row[parent].element.find_element(css, ".wf-bar").rect
        assert p["x"] - 2 <= c["x"] and c["x"] + c["width"] <= p["x"] + p["width"] + 2, (child, c, parent, p)
    assert row["http.fetch"].element.find_element(css, ".wf-bar").rect["width"] > 0


def test_span_detail_on_click(browser, store, demo):
    open_demo(browser, store, demo, "store-rollout")
    target = next(r for r in waterfall(browser) if r.name == "tool.search")
    target.element.click()
    browser.wait(lambda d: "tool.search" in browser.find("#span-detail").text, "#span-detail to show tool.search")
    detail = browser.find("#span-detail").text
    assert "search.query" in detail and "rust dashboards" in detail, detail
    browser.shot("store-rollout-span-detail")
    other = next(r for r in waterfall(browser) if r.name == "llm.plan")
    other.element.click()
    browser.wait(lambda d: "plan.steps" in browser.find("#span-detail").text, "#span-detail to show llm.plan")


def test_rollout_rewards(browser, store, demo):
    from agentlightning.emitter.reward import find_final_reward

    open_demo(browser, store, demo, "store-rollout")
    rewarded = [r for r in waterfall(browser) if "reward" in r.classes]
    assert [r.id for r in rewarded] == [demo.reward_span_id]
    value = find_final_reward(demo.spans)
    assert value == REWARD
    assert value in [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", browser.find("#rewards").text)]


def test_rollout_llm_calls(browser, store, demo):
    open_demo(browser, store, demo, "store-rollout-llm")
    css = by_css()
    calls = browser.find_all("#llm-calls .llm-call")
    assert len(calls) == len(demo.calls) == sum(s.name == "raw_gen_ai_request" for s in demo.spans)
    for shown, sent in zip(calls, demo.calls):
        assert sent.prompt in text_of(shown.find_element(css, ".llm-prompt"))
        assert sent.completion.strip() in text_of(shown.find_element(css, ".llm-completion"))
        counts = integers(text_of(shown.find_element(css, ".llm-tokens")))
        assert len(sent.prompt_token_ids) in counts and len(sent.completion_token_ids) in counts, counts
        if sent.usage:
            assert sent.usage["prompt_tokens"] in counts and sent.usage["completion_tokens"] in counts
        ids = integers(text_of(shown.find_element(css, "details.llm-token-ids")))
        assert contains_run(ids, sent.prompt_token_ids) and contains_run(ids, sent.completion_token_ids), ids


# ---- agl-store: other pages -------------------------------------------------------------


def test_resources_page(browser, store, demo):
    browser.open(store.base + "/ui/resources", "store-resources")
    shown = browser.find("#resources").text
    assert demo.resources_id in shown and "main_llm" in shown


def test_workers_page(browser, store, demo):
    async def workers(client):
        return [w.worker_id for w in (await client.query_workers()).items]

    known = with_client(store, workers)
    browser.open(store.base + "/ui/workers", "store-workers")
    rows = browser.find_all("#workers-table tr.worker[data-worker-id]")
    assert sorted(r.get_attribute("data-worker-id") for r in rows) == sorted(known)
    assert WORKER in known, f"dequeue_rollout(worker_id=...) registered no worker: {known}"


def test_api_page(browser, store):
    status, spec = get_json(store.base + "/openapi.json")
    assert status == 200
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    operations = sorted((m, path) for path, item in spec["paths"].items() for m in item if m in methods)
    browser.open(store.base + "/ui/api", "store-api")
    ops = browser.find_all("#api .api-op[data-path][data-method]")
    shown = sorted((op.get_attribute("data-method").lower(), op.get_attribute("data-path")) for op in ops)
    assert shown == operations
    rollouts = [op for op in ops if op.get_attribute("data-path") == "/v1/agl/rollouts"]
    assert rollouts, "no operation of /v1/agl/rollouts"
    assert all("/v1/agl/rollouts" in text_of(op) for op in rollouts)


def test_overview_refreshes_itself(browser, store, demo):
    browser.open(store.base + "/", "store-overview-live")
    browser.driver.execute_script("window.__agl_marker = 1")
    origin = browser.driver.execute_script("return window.performance.timeOrigin")
    before = read_status_counts(browser).get("queuing", 0)

    async def enqueue(client):
        await client.enqueue_rollout(input={"task": "live refresh"}, mode="test")

    with_client(store, enqueue)
    now = status_counts(store)["queuing"]
    assert now == before + 1
    browser.wait(lambda d: read_status_counts(browser).get("queuing") == now,
                 f"#status-counts to show {now} queuing rollouts without a reload")
    assert browser.driver.execute_script("return window.__agl_marker") == 1, "the page reloaded"
    assert browser.driver.execute_script("return window.performance.timeOrigin") == origin
    browser.shot("store-overview-live-after")


# ---- agl-agentops -----------------------------------------------------------------------


def test_agentops_traces_list(browser, agentops_server, agentops_trace):
    browser.open(agentops_server.base + "/", "agentops-traces")
    css = by_css()
    rows = browser.find_all("#traces tr.trace[data-trace-id]")
    status, listing = agentops_server.get("/_agl/traces")
    assert status == 200
    assert {r.get_attribute("data-trace-id") for r in rows} == {t["trace_id"] for t in listing["traces"]}
    row = next(r for r in rows if r.get_attribute("data-trace-id") == agentops_trace.trace_id)
    link = row.find_element(css, "a.trace-link")
    assert urlparse(link.get_attribute("href")).path == f"/ui/traces/{agentops_trace.trace_id}"
    follow(browser, link, "agentops-trace-from-list")
    assert urlparse(browser.driver.current_url).path == f"/ui/traces/{agentops_trace.trace_id}"


def test_agentops_session_replay_link(browser, agentops_trace):
    browser.open(agentops_trace.url, "agentops-trace")
    assert urlparse(browser.driver.current_url).path == f"/ui/traces/{agentops_trace.trace_id}"
    rows = waterfall(browser)
    spans = {s["span_id"]: s for s in agentops_trace.spans}
    assert {r.id for r in rows} == set(spans)
    for row in rows:
        assert row.name == spans[row.id]["name"]
        assert row.parent == (spans[row.id]["parent_span_id"] or "")
    assert_depth_first(rows)
    logs = browser.find("#logs")
    for log in agentops_trace.logs:
        assert MARKER in log["text"] and MARKER in text_of(logs)


# ---- a long rollout ---------------------------------------------------------------------


def test_a_long_rollout_folds_and_opens_in_place(browser, store):
    """700 spans (a root, 70 turns, each with an LLM call and 8 tools): the page shows the
    root and the turns, a turn's "+9" button loads its rows below it in tree order, and the
    LLM calls past the first 50 come with a button that loads them."""
    from agltest import http

    async def start(client):
        return await client.start_rollout(input={"task": "long"}, worker_id=WORKER)

    rollout = with_client(store, start)
    rid, aid = rollout.rollout_id, rollout.attempt.attempt_id
    t0 = time.time()
    sequence = 0

    def post(span_id, parent, name, start, attributes):
        nonlocal sequence
        sequence += 1
        trace = "0af7651916cd43dd8448eb211c80319c"
        status, body = http("POST", f"{store.base}/v1/agl/spans", {
            "rollout_id": rid, "attempt_id": aid, "sequence_id": sequence, "trace_id": trace,
            "span_id": span_id, "parent_id": parent, "name": name,
            "status": {"status_code": "OK", "description": None}, "attributes": attributes,
            "events": [], "links": [], "start_time": t0 + start, "end_time": t0 + start + 0.5,
            "context": None, "parent": None, "resource": {"attributes": {}, "schema_url": ""},
        })
        assert status in (200, 201), body

    post("root", None, "agent.run", 0.0, {})
    for turn in range(70):
        tid = f"turn{turn:02d}"
        post(tid, "root", "turn", turn, {})
        post(f"{tid}-call", tid, "litellm_request", turn + 0.1, {
            "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": f"question {turn}",
            "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": f"answer {turn}",
        })
        for tool in range(8):
            post(f"{tid}-tool{tool}", tid, "tool", turn + 0.2, {})

    # Finished, so the page holds still (a running rollout's regions refresh every 3 s).
    async def finish(client):
        await client.update_attempt(rid, aid, status="succeeded")

    with_client(store, finish)
    browser.open(f"{store.base}/ui/rollouts/{rid}", "store-rollout-long")
    rows = waterfall(browser)
    assert len(rows) == 71 and {r.depth for r in rows} == {0, 1}, [(r.id, r.depth) for r in rows]
    assert_depth_first(rows)
    button = browser.find('.wf-row[data-span-id="turn07"] .wf-more')
    assert text_of(button).strip() == "+9"
    button.click()
    browser.wait(lambda d: len(browser.find_all("#waterfall .wf-row")) == 80, "turn07's rows")
    rows = waterfall(browser)
    assert_depth_first(rows)
    at = [r.id for r in rows].index("turn07")
    below = rows[at + 1:at + 10]
    assert {r.id for r in below} == {"turn07-call"} | {f"turn07-tool{i}" for i in range(8)}
    assert all(r.depth == 2 and r.parent == "turn07" for r in below)
    assert not browser.find_all('.wf-row[data-span-id="turn07"] .wf-more')
    # A click on an opened row still shows its details.
    below[0].element.click()
    browser.wait(lambda d: below[0].id in browser.find("#span-detail").text, "the opened row's details")

    assert len(browser.find_all("#llm-calls .llm-call")) == 50
    browser.find("#llm-calls [data-more]").click()
    browser.wait(lambda d: len(browser.find_all("#llm-calls .llm-call")) == 70, "the further calls")
    assert "answer 69" in browser.find("#llm-calls").text
    assert not browser.find_all("#llm-calls [data-more]")
    browser.shot("store-rollout-long-opened")


# ---- README images ----------------------------------------------------------------------


@pytest.mark.skipif(not README_MODE, reason="AGL_README_SCREENSHOTS=1 writes the README's images")
def test_readme_screenshots(browser, store, demo):
    """dashboard-overview.png and dashboard-rollout.png, 1400x900, in $AGL_SCREENSHOTS_DIR."""
    browser.open(store.base + "/", None)
    overview = browser.shot("dashboard-overview", force=True)
    browser.open(f"{store.base}/ui/rollouts/{demo.rollout_id}", None)
    target = next(r for r in waterfall(browser) if r.name == "tool.search")
    target.element.click()
    browser.wait(lambda d: "tool.search" in browser.find("#span-detail").text, "#span-detail")
    # The waterfall at the top, below a sticky header and the section's title.
    browser.driver.execute_script(
        "const top = document.querySelector('#waterfall').getBoundingClientRect().top;"
        "window.scrollTo(0, Math.max(0, window.scrollY + top - 110));"
    )
    rollout = browser.shot("dashboard-rollout", force=True)
    for path in (overview, rollout):
        assert png_size(path) == WINDOW, path
