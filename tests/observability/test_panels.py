"""Every panel of the provisioned Grafana dashboard shows data: a real Prometheus (Debian's
package) scrapes the running services with the jobs of docker/observability/prometheus.yml
(targets moved to their loopback ports), traffic comes from the official clients (a
training loop of agentlightning 0.3.0's LightningStoreClient, model calls through the
agl-vllm proxy with the openai SDK, a trace from the AgentOps SDK 0.4.21 forwarded to the
store), and each panel query is evaluated through Prometheus' HTTP API: it must return at
least one series with a finite value.

Grafana itself cannot be installed here (no registry, no Debian package), so the dashboards
are also drawn by what this machine has: each is turned into a Prometheus console page
(its panels in its grid, each a graph of its queries, named by their legends) and opened
in headless Chromium, which must draw a line for every panel. That page's screenshot is the
README's picture of the dashboard (`AGL_README_SCREENSHOTS=1` writes it to docs/images).

Run by scripts/observability-test.sh (in the test command).
"""

import asyncio
import html
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))

from agltest import (  # noqa: E402
    REPO, AgentOps, Llm, Process, Store, free_port, get_json, http, run_sdk_agent, wait_for,
)
from aglbrowser import README_MODE, Browser, missing_browser  # noqa: E402

OBSERVABILITY = REPO / "docker/observability"
DASHBOARDS = sorted((OBSERVABILITY / "grafana/dashboards").glob("*.json"))
PROMETHEUS = os.environ.get("AGL_PROMETHEUS", shutil.which("prometheus") or "/usr/bin/prometheus")
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
SCRAPE_SECONDS = 1
AGENT = REPO / "tests/browser/agentops_agent.py"


def panel_queries():
    queries = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                queries.append(
                    pytest.param(target["expr"], id=f"{path.stem}: {panel['title']} [{target['refId']}]"))
    return queries


def shipped_jobs():
    """job name -> its metrics path and the service it scrapes (the host of its static
    target or DNS name), from the shipped config once promtool has checked it."""
    import yaml

    config = OBSERVABILITY / "prometheus.yml"
    check = subprocess.run([PROMTOOL, "check", "config", "--syntax-only", str(config)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    jobs = {}
    for job in yaml.safe_load(config.read_text())["scrape_configs"]:
        hosts = [t for c in job.get("static_configs", []) for t in c["targets"]]
        hosts += [n for c in job.get("dns_sd_configs", []) for n in c["names"]]
        assert len(hosts) == 1, f"job {job['job_name']}: one service expected, got {hosts}"
        jobs[job["job_name"]] = {"path": job.get("metrics_path", "/metrics"),
                                 "service": hosts[0].split(":")[0]}
    return jobs


@pytest.fixture(scope="module")
def stack():
    if not (os.access(PROMETHEUS, os.X_OK) and os.access(PROMTOOL, os.X_OK)):
        pytest.fail(f"no Prometheus at {PROMETHEUS} (install Debian's prometheus package)")
    store = Store("agl-store", ["--scan-debounce-seconds", "0"])
    agentops = AgentOps("--forward-otlp", store.base + "/v1/traces")
    llm = Llm("sidecar", store)
    double = next(p for p in llm.processes if "fake-vllm" in p.args)
    addresses = {
        "store": store.base,
        "agentops": agentops.base,
        "llm-proxy": llm.base,
        "vllm": "http://" + double.announced("fake-vllm listening on "),
    }
    scrape = []
    for name, job in shipped_jobs().items():
        assert job["service"] in addresses, f"job {name} scrapes {job['service']}, not a service here"
        target = urllib.parse.urlsplit(addresses[job["service"]]).netloc
        scrape.append(f"  - job_name: {name}\n    metrics_path: {job['path']}\n"
                      f"    static_configs:\n      - targets: [\"{target}\"]\n")
    data = tempfile.mkdtemp(prefix="agl-prometheus-")
    config = Path(data) / "prometheus.yml"
    config.write_text(f"global:\n  scrape_interval: {SCRAPE_SECONDS}s\n  scrape_timeout: {SCRAPE_SECONDS}s\n"
                      "scrape_configs:\n" + "".join(scrape))
    # Console pages are read at each request: the drawing test writes them here.
    consoles = Path(data) / "consoles"
    consoles.mkdir()
    port = free_port()
    prometheus = Process([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={data}/tsdb",
                          f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
                          f"--web.console.templates={consoles}", f"--web.console.libraries={consoles}"])
    api = f"http://127.0.0.1:{port}/api/v1"

    def agl_targets_up():
        status, body = get_json(api + "/targets")
        if status != 200:
            return None
        ours = [t for t in body["data"]["activeTargets"] if t["labels"]["job"] != "vllm"]
        return ours if ours and all(t["health"] == "up" for t in ours) else None

    try:
        wait_for(agl_targets_up, "Prometheus to scrape every agl service", timeout=60)
        started = time.time()
        traffic(store, llm, agentops)
        # Two scrapes after the traffic: every rate has a step to measure.
        time.sleep(3 * SCRAPE_SECONDS)
        yield SimpleNamespace(api=api, base=f"http://127.0.0.1:{port}", consoles=consoles, started=started)
    finally:
        prometheus.stop()
        llm.stop()
        agentops.stop()
        store.stop()
        shutil.rmtree(data, ignore_errors=True)


def traffic(store, llm, agentops):
    """A small training run: rollouts enqueued, claimed, called the model through the proxy
    (spans recorded into the store), finished; an AgentOps trace forwarded to the store."""
    import openai
    from agentlightning.store.client_server import LightningStoreClient

    async def run():
        client = LightningStoreClient(store.base)
        try:
            for i in range(4):
                await client.enqueue_rollout(input={"task": i}, mode="train")
            for i in range(3):
                attempted = await client.dequeue_rollout(worker_id="observability-runner")
                rid, aid = attempted.rollout_id, attempted.attempt.attempt_id
                agent = openai.AsyncOpenAI(base_url=f"{llm.base}/rollout/{rid}/attempt/{aid}/v1", api_key="x")
                await agent.chat.completions.create(
                    model="agl-model", messages=[{"role": "user", "content": f"task {i}"}], max_tokens=8)
                stream = await agent.chat.completions.create(
                    model="agl-model", messages=[{"role": "user", "content": f"stream {i}"}], max_tokens=8,
                    stream=True)
                async for _ in stream:
                    pass
                await client.update_attempt(rid, aid, status="succeeded")
            finished = await client.wait_for_rollouts(rollout_ids=[rid], timeout=0)
            assert [r.rollout_id for r in finished] == [rid]
        finally:
            await client.close()

    asyncio.run(run())
    run_sdk_agent(AGENT, agentops.env)

    def forwarded():
        status, text = http("GET", agentops.base + "/metrics")
        sent = [line for line in text.decode().splitlines()
                if line.startswith("agl_agentops_forward_batches_total{") and 'outcome="sent"' in line]
        return status == 200 and any(float(line.rsplit(" ", 1)[1]) > 0 for line in sent)

    wait_for(forwarded, "AgentOps to forward the trace to the store", timeout=30)


def test_the_dashboards_are_found():
    assert DASHBOARDS, "no provisioned dashboard"
    assert len(panel_queries()) >= 20


@pytest.mark.parametrize("expr", panel_queries())
def test_every_panel_query_returns_data(stack, expr):
    status, body = get_json(stack.api + "/query?query=" + urllib.parse.quote(expr))
    assert status == 200 and body["status"] == "success", body
    result = body["data"]["result"]
    assert result, f"no series for {expr}"
    values = [float(series["value"][1]) for series in result]
    assert any(math.isfinite(v) for v in values), f"{expr}: only {values}"


# ---- the dashboards drawn ----------------------------------------------------------------

# Grafana's units, as the console graphs' axis formatters and unit suffixes say them.
UNITS = {
    "bytes": ("PromConsole.NumberFormatter.humanize1024", "B"),
    "s": ("PromConsole.NumberFormatter.humanize", "s"),
    "reqps": ("PromConsole.NumberFormatter.humanize", "/s"),
    "percentunit": ("PromConsole.NumberFormatter.humanize", ""),
}
GRAPH_WIDTH, GRAPH_HEIGHT = 560, 150


def grid_order(dashboard):
    """The panels as Grafana lays them out: row by row, left to right."""
    return sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))


def console_page(dashboard, seconds):
    """A Grafana dashboard as a Prometheus console page: its panels in its grid order (two
    across, as its 12-wide panels sit), each a PromConsole.Graph of its queries over the
    last `seconds`, the series named by the queries' legends (`{{label}}` is the console's
    `[[label]]`). The page is a Go template to Prometheus: nothing in it may read `{{`."""
    cells = []
    for index, panel in enumerate(grid_order(dashboard)):
        exprs = [t["expr"] for t in panel["targets"]]
        names = [re.sub(r"\{\{\s*(\w+)\s*\}\}", r"[[ \1 ]]", t.get("legendFormat") or "") or None
                 for t in panel["targets"]]
        formatter, units = UNITS.get(panel.get("fieldConfig", {}).get("defaults", {}).get("unit"),
                                     ("PromConsole.NumberFormatter.humanize", ""))
        params = (f'{{node: document.getElementById("panel-{index}"), expr: {json.dumps(exprs)}, '
                  f'name: {json.dumps(names)}, width: {GRAPH_WIDTH}, height: {GRAPH_HEIGHT}, '
                  f'duration: {seconds}, min: 0, xTitle: "", yUnits: {json.dumps(units)}, '
                  f'yAxisFormatter: {formatter}}}')
        title = html.escape(panel["title"])
        cells.append(f'<div class="agl-panel"><h2>{title}</h2><div id="panel-{index}"></div>'
                     f"<script>new PromConsole.Graph({params});</script></div>")
    assert "{{" not in "".join(cells)
    static = "/classic/static"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(dashboard["title"])}</title>
<link rel="icon" href="{static}/img/favicon.ico">
<link rel="stylesheet" href="{static}/rickshaw/rickshaw.min.css">
<link rel="stylesheet" href="{static}/css/prom_console.css">
<script src="{static}/d3/d3.min.js"></script>
<script src="{static}/rickshaw/rickshaw.min.js"></script>
<script>var PATH_PREFIX = "";</script>
<script src="{static}/js/prom_console.js"></script>
<style>
body {{ font: 13px sans-serif; margin: 16px; background: #fff; }}
h1 {{ font-size: 18px; margin: 0 0 12px; }}
.agl-grid {{ display: grid; grid-template-columns: 1fr 1fr; gap: 12px 20px; }}
.agl-panel {{ border: 1px solid #ddd; border-radius: 4px; padding: 8px; overflow: hidden; }}
.agl-panel h2 {{ font-size: 13px; margin: 0 0 6px; }}
.prom_graph_link {{ display: none; }}
</style></head>
<body><h1>{html.escape(dashboard["title"])} <small>(the Grafana dashboard's panels drawn by Prometheus' console graphs; the last {seconds} s)</small></h1>
<div class="agl-grid">
{chr(10).join(cells)}
</div></body></html>
"""


def test_every_panel_is_drawn_in_a_browser(stack):
    """Each dashboard as a console page in headless Chromium: every panel draws a graph with
    at least one line (no "No timeseries returned", no load error), the page logs no error;
    its screenshot is the README's image of the dashboard."""
    missing = missing_browser()
    if missing:
        if os.environ.get("AGL_REQUIRE_BROWSER") == "1":
            pytest.fail(missing)
        pytest.skip(missing)
    browser = Browser()
    try:
        for path in DASHBOARDS:
            dashboard = json.loads(path.read_text())
            panels = grid_order(dashboard)
            # From the first scrape on: the whole run, no empty minutes before it.
            seconds = math.ceil(time.time() - stack.started) + 2
            (stack.consoles / f"{path.stem}.html").write_text(console_page(dashboard, seconds))
            browser.open(f"{stack.base}/consoles/{path.stem}.html")
            # Every panel either drew or said why not (each graph fetches on its own).
            settled = ("return [...document.querySelectorAll('.agl-panel')].every(p =>"
                       " p.querySelector('svg path.path, .prom_graph_error'))")
            browser.wait(lambda d: d.execute_script(settled), f"{len(panels)} panels drawn", timeout=30)
            for index, panel in enumerate(panels):
                errors = [e.text for e in browser.find_all(f"#panel-{index} .prom_graph_error")]
                assert not errors, f"panel {panel['title']!r}: {errors}"
                assert browser.find_all(f"#panel-{index} svg path.path"), f"panel {panel['title']!r} drew no line"
            browser.assert_clean(f"drawing {path.name}")
            shot = browser.page_shot(f"grafana-{path.stem}", force=README_MODE)
            assert shot and shot.stat().st_size > 10_000, shot
    finally:
        browser.quit()
