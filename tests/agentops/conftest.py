"""Fixtures: agl-agentops and agl-store binaries on port 0, and the SDK agent runner.

Binaries come from $AGL_AGENTOPS_BIN and $AGL_STORE_BIN (scripts/agentops-compat.sh sets
both). Everything listens on 127.0.0.1; every wait is a bounded poll.
"""

import json
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
AGENTOPS_BIN = os.environ.get("AGL_AGENTOPS_BIN", str(REPO / "target/debug/agl-agentops"))
STORE_BIN = os.environ.get("AGL_STORE_BIN", str(REPO / "target/debug/agl-store"))

sys.path.insert(0, str(REPO / "tests" / "lib"))
from agltest import AgentOps, Process, get_json, parse_env_block, run_sdk_agent, wait_for  # noqa: E402,F401
from agltest import request as http  # noqa: E402,F401  (status, headers, body)

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
    """Runs agent_run.py with this interpreter (the venv's SDK) against env_block; returns
    its report and its output."""
    output = run_sdk_agent(HERE / "agent_run.py", env_block, extra_env, timeout)
    reports = [l for l in output.splitlines() if l.startswith("AGL-REPORT ")]
    assert reports, output
    return json.loads(reports[-1][len("AGL-REPORT ") :]), output
