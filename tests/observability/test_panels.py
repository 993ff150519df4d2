"""Every panel of the provisioned Grafana dashboard shows data: a real Prometheus (Debian's
package) scrapes the running services with the jobs of docker/observability/prometheus.yml
(targets moved to their loopback ports), traffic comes from the official clients (a
training loop of agentlightning 0.3.0's LightningStoreClient, model calls through the
agl-vllm proxy with the openai SDK, a trace from the AgentOps SDK 0.4.21 forwarded to the
store), and each panel query is evaluated through Prometheus' HTTP API: it must return at
least one series with a finite value.

Run by scripts/observability-test.sh (in the test command).
"""

import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))

from agltest import (  # noqa: E402
    REPO, AgentOps, Llm, Process, Store, free_port, get_json, http, run_sdk_agent, wait_for,
)

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
    port = free_port()
    prometheus = Process([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={data}/tsdb",
                          f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"])
    api = f"http://127.0.0.1:{port}/api/v1"

    def agl_targets_up():
        status, body = get_json(api + "/targets")
        if status != 200:
            return None
        ours = [t for t in body["data"]["activeTargets"] if t["labels"]["job"] != "vllm"]
        return ours if ours and all(t["health"] == "up" for t in ours) else None

    try:
        wait_for(agl_targets_up, "Prometheus to scrape every agl service", timeout=60)
        traffic(store, llm, agentops)
        # Two scrapes after the traffic: every rate has a step to measure.
        time.sleep(3 * SCRAPE_SECONDS)
        yield api
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
    status, body = get_json(stack + "/query?query=" + urllib.parse.quote(expr))
    assert status == 200 and body["status"] == "success", body
    result = body["data"]["result"]
    assert result, f"no series for {expr}"
    values = [float(series["value"][1]) for series in result]
    assert any(math.isfinite(v) for v in values), f"{expr}: only {values}"
