"""Helpers shared by the Python suites (tests/vllm, tests/browser): bounded polls, child
processes with collected output, and the servers under test on 127.0.0.1, port 0:

* `Store("agl-store")`: the agl-store binary ($AGL_STORE_BIN), its port read from its JSON
  start-up log; `Store("official")`: the official Python server of agentlightning 0.3.0
  (needs a venv with agentlightning);
* `Llm("sidecar" | "launcher", store)`: the agl-vllm proxy ($AGL_VLLM_BIN_PATH) in front of
  the vLLM test double, exporting its spans to the store;
* `AgentOps()`: agl-agentops ($AGL_AGENTOPS_BIN), its port read from the environment block
  it prints.

Binaries default to target/debug/. A suite's conftest puts this directory on sys.path and
imports what it needs. Importing this module makes loopback bypass any HTTP proxy the
environment names (urllib, httpx and the openai SDK read NO_PROXY).
"""

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VLLM_BIN = os.environ.get("AGL_VLLM_BIN_PATH", str(REPO / "target/debug/agl-vllm"))
STORE_BIN = os.environ.get("AGL_STORE_BIN", str(REPO / "target/debug/agl-store"))
AGENTOPS_BIN = os.environ.get("AGL_AGENTOPS_BIN", str(REPO / "target/debug/agl-agentops"))

# Loopback only, whatever proxy the environment names (urllib, httpx and the openai SDK).
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# `agl store` of 0.3.0 (agentlightning/cli/store.py), bound to loopback.
OFFICIAL_STORE = """
import asyncio, sys
from agentlightning.store.client_server import LightningStoreServer
from agentlightning.store.memory import InMemoryLightningStore
store = InMemoryLightningStore(thread_safe=True, scan_debounce_seconds=0)
server = LightningStoreServer(store, host="127.0.0.1", port=int(sys.argv[1]), launch_mode="asyncio")
asyncio.run(server.run_forever())
"""


class Missing(Exception):
    """A binary the fixtures need is not there (the conftest turns it into a test failure)."""


def request(method, url, body=None, headers=None, timeout=10):
    """One request (a JSON body unless bytes); returns (status, response headers as a dict,
    body bytes). HTTP errors are answers too."""
    data = body
    hdrs = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, bytearray)):
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with _OPENER.open(req, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def http(method, url, body=None, headers=None, timeout=10):
    """One request; returns (status, body bytes). HTTP errors are answers too."""
    status, _, data = request(method, url, body, headers, timeout)
    return status, data


def run_sdk_agent(script, env_block, extra_env=None, timeout=120):
    """Runs an agent script with this interpreter (the venv's SDKs) in a fresh home, with
    only PATH and `env_block` (what `agl agentops --print-env` exports) in its environment;
    asserts it succeeded and returns its stdout and stderr joined."""
    home = tempfile.mkdtemp(prefix="agl-sdk-agent-")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "AGENTOPS_LOGGING_TO_FILE": "false",
        "PYTHONUNBUFFERED": "1",
        **env_block,
        **(extra_env or {}),
    }
    done = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=home, capture_output=True, text=True, timeout=timeout
    )
    output = done.stdout + "\n--- stderr ---\n" + done.stderr
    assert done.returncode == 0, output
    return output


def get_json(url):
    """GET url; returns (status, parsed JSON body or None)."""
    status, body = http("GET", url)
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, None


def wait_for(predicate, what, timeout=30.0, interval=0.05):
    """Polls predicate() until it returns a truthy value (returned); fails after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, urllib.error.URLError):
            last = None
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A child process whose output lines are collected by threads."""

    def __init__(self, args, env=None):
        self.args = args
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.stdout, self.stderr = [], []
        for stream, sink in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _pump(stream, sink):
        for line in stream:
            sink.append(line.rstrip("\n"))

    def output(self):
        return "\n".join(self.stdout) + "\n--- stderr ---\n" + "\n".join(self.stderr)

    def announced(self, prefix):
        """The rest of the first stdout line starting with prefix (waits for it)."""

        def find():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.args[0]} exited:\n" + self.output())
            for line in self.stdout:
                if line.startswith(prefix):
                    return line[len(prefix):]
            return None

        return wait_for(find, f"{prefix!r} from {self.args[:2]}")

    def stop(self, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


def _quiet_env(**extra):
    """This environment without what would redirect a server or its telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    for key in ("AGL_STORE_URL", "AGL_SERVER_HOST", "AGL_SERVER_PORT"):
        env.pop(key, None)
    env.update(extra)
    return env


def require(path, variable):
    if not Path(path).exists():
        raise Missing(f"binary not found at {path} (set {variable})")


class Store:
    """agl-store (`kind="agl-store"`, extra flags in `args`) or the official Python server
    (`kind="official"`); `base` is its URL."""

    def __init__(self, kind="agl-store", args=()):
        self.kind = kind
        if kind == "agl-store":
            require(STORE_BIN, "AGL_STORE_BIN")
            self.process = Process(
                [STORE_BIN, "--port", "0", "--host", "127.0.0.1", "--log-format", "json", *args],
                env=_quiet_env(),
            )

            def listening():
                for line in self.process.stderr:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if "listening" in json.dumps(event) and event.get("addr"):
                        return event["addr"]
                if self.process.proc.poll() is not None:
                    raise AssertionError("agl-store exited:\n" + self.process.output())
                return None

            addr = wait_for(listening, "agl-store to listen")
            self.base = "http://127.0.0.1:" + addr.rsplit(":", 1)[1]
        else:
            port = free_port()
            self.process = Process([sys.executable, "-c", OFFICIAL_STORE, str(port)], env=_quiet_env())
            self.base = f"http://127.0.0.1:{port}"
        wait_for(lambda: http("GET", self.base + "/v1/agl/health")[0] == 200, f"{kind} health", timeout=60)

    def stop(self):
        return self.process.stop()


class Llm:
    """The proxy in front of the double; `base` is the proxy's URL."""

    def __init__(self, mode, store):
        require(VLLM_BIN, "AGL_VLLM_BIN_PATH")
        self.mode = mode
        self.processes = []
        self.tmp = tempfile.mkdtemp(prefix="agl-vllm-py-")
        env = _quiet_env(AGL_STORE_URL=store.base, AGL_LOG_FORMAT="json")
        common = ["--host", "127.0.0.1", "--port", "0", "--export-interval-seconds", "0.05"]
        if mode == "sidecar":
            double = Process(
                [VLLM_BIN, "fake-vllm", "serve", "agl/double-model", "--host", "127.0.0.1",
                 "--port", "0", "--served-model-name", "agl-model"],
                env=_quiet_env(),
            )
            self.processes.append(double)
            upstream = "http://" + double.announced("fake-vllm listening on ")
            proxy = Process([VLLM_BIN, "proxy", "--upstream", upstream, *common], env=env)
        else:
            script = Path(self.tmp) / "vllm"
            script.write_text(f"#!/bin/sh\nexec '{VLLM_BIN}' fake-vllm \"$@\"\n")
            script.chmod(script.stat().st_mode | stat.S_IEXEC)
            env["PATH"] = f"{self.tmp}:{env.get('PATH', '')}"
            agl = [f"--agl-{flag.lstrip('-')}" if flag.startswith("--") else flag for flag in common]
            proxy = Process(
                [VLLM_BIN, *agl, "serve", "agl/double-model", "--served-model-name", "agl-model",
                 "--host", "127.0.0.1", "--port", str(free_port())],
                env=env,
            )
        self.processes.append(proxy)
        self.proxy = proxy
        self.base = proxy.announced("agl-vllm: proxy listening on ").split(",")[0]
        wait_for(lambda: http("GET", self.base + "/readyz")[0] == 200, "the proxy to be ready")

    def stop(self):
        codes = [p.stop() for p in reversed(self.processes)]
        assert codes[0] == 0, self.proxy.output()


def parse_env_block(text):
    """The `export NAME=VALUE` lines agl-agentops prints, as a dict."""
    return dict(re.findall(r"^export ([A-Za-z_]+)=(.*)$", text, re.M))


class AgentOps:
    """agl-agentops on 127.0.0.1, port 0; `env` is the environment block it printed (what
    an SDK run exports), `base` its URL."""

    def __init__(self, *extra):
        require(AGENTOPS_BIN, "AGL_AGENTOPS_BIN")
        args = [AGENTOPS_BIN, "--port", "0", "--host", "127.0.0.1", "--drain-seconds", "0", *extra]
        self.process = Process(args, env=_quiet_env())

        def announced():
            if self.process.proc.poll() is not None:
                raise AssertionError("agl-agentops exited:\n" + self.process.output())
            env = parse_env_block("\n".join(self.process.stdout))
            return env if "NO_PROXY" in env and "no_proxy" in env else None

        self.env = wait_for(announced, "the environment block of agl-agentops")
        self.base = self.env["AGENTOPS_API_ENDPOINT"]
        wait_for(lambda: http("GET", self.base + "/health")[0] == 200, "agl-agentops /health")

    def get(self, path):
        return get_json(self.base + path)

    def stop(self):
        return self.process.stop()


def reward_span(rollout_id, attempt_id, sequence_id, value):
    """A reward in the AgentOps form agentlightning's adapters understand, as a plain REST
    span (POST it to /v1/agl/spans)."""
    span_id = uuid.uuid4().hex[:16]
    trace_id = uuid.uuid4().hex
    now = time.time()
    return {
        "rollout_id": rollout_id, "attempt_id": attempt_id, "sequence_id": sequence_id,
        "trace_id": trace_id, "span_id": span_id, "parent_id": None, "name": "agentops.task",
        "status": {"status_code": "OK", "description": None},
        "attributes": {"agentops.task.output": json.dumps({"type": "reward", "value": value})},
        "events": [], "links": [], "start_time": now, "end_time": now,
        "context": {"trace_id": trace_id, "span_id": span_id, "is_remote": False, "trace_state": {}},
        "parent": None, "resource": {"attributes": {}, "schema_url": ""},
    }
