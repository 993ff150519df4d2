"""Fixtures: agl-agentops and agl-store binaries on port 0, and the SDK agent runner.

Binaries come from $AGL_AGENTOPS_BIN and $AGL_STORE_BIN (scripts/agentops-compat.sh sets
both). Everything listens on 127.0.0.1; every wait is a bounded poll.
"""

import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
AGENTOPS_BIN = os.environ.get("AGL_AGENTOPS_BIN", str(REPO / "target/debug/agl-agentops"))
STORE_BIN = os.environ.get("AGL_STORE_BIN", str(REPO / "target/debug/agl-store"))

sys.path.insert(0, str(REPO / "tests" / "lib"))
from agltest import AgentOps, Process, parse_env_block, wait_for  # noqa: E402,F401

# Talk to loopback directly, whatever proxy the environment names.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method, url, body=None, headers=None, timeout=10):
    """One request; returns (status, headers, body bytes). HTTP errors are answers too."""
    data = body
    hdrs = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, bytearray)):
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def get_json(url):
    status, _, body = http("GET", url)
    return status, json.loads(body) if body else None


class AgentOpsServer(AgentOps):
    """agl-agentops on 127.0.0.1, port 0 (the shared helper), with the inspection calls this
    suite makes."""

    def url(self, path):
        return self.base + path

    def counters(self):
        return self.get("/_agl/counters")[1]["counters"]


@pytest.fixture
def agentops_server():
    servers = []

    def start(*extra):
        server = AgentOpsServer(*extra)
        servers.append(server)
        return server

    yield start
    for server in servers:
        assert server.stop() == 0, server.process.output()


class StoreServer:
    """agl-store on 127.0.0.1, port 0; the port is read from its JSON start-up log line."""

    def __init__(self):
        args = [STORE_BIN, "--port", "0", "--host", "127.0.0.1", "--log-format", "json"]
        self.process = Process(args)

        def listening():
            if self.process.proc.poll() is not None:
                raise AssertionError("agl-store exited:\n" + self.process.output())
            for line in self.process.stderr:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                addr = event.get("addr") or event.get("fields", {}).get("addr")
                if addr and "listening" in json.dumps(event):
                    return addr
            return None

        addr = wait_for(listening, "agl-store to listen")
        self.base = "http://127.0.0.1:" + addr.rsplit(":", 1)[1]
        wait_for(lambda: http("GET", self.base + "/v1/agl/health")[0] == 200, "agl-store health")

    def stop(self):
        return self.process.stop()


@pytest.fixture
def store_server():
    if not Path(STORE_BIN).exists():
        pytest.fail(f"agl-store binary not found at {STORE_BIN} (set AGL_STORE_BIN)")
    server = StoreServer()
    yield server
    server.stop()


def run_agent(env_block, extra_env=None, timeout=120):
    """Runs agent_run.py with this interpreter (the venv's SDK) against env_block."""
    home = tempfile.mkdtemp(prefix="agl-agentops-home-")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "AGENTOPS_LOGGING_TO_FILE": "false",
        "PYTHONUNBUFFERED": "1",
        **env_block,
        **(extra_env or {}),
    }
    done = subprocess.run(
        [sys.executable, str(HERE / "agent_run.py")],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = done.stdout + "\n--- stderr ---\n" + done.stderr
    assert done.returncode == 0, output
    reports = [l for l in done.stdout.splitlines() if l.startswith("AGL-REPORT ")]
    assert reports, output
    return json.loads(reports[-1][len("AGL-REPORT ") :]), output
