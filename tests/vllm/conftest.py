"""Fixtures: a LightningStore (agl-store, or the official Python server of agentlightning
0.3.0), and the token-capturing proxy in front of the vLLM test double, either as a sidecar
(`agl-vllm proxy` beside `agl-vllm fake-vllm`) or through the launcher (`agl-vllm serve …`
with a script named `vllm` on PATH that runs the double).

Binaries come from $AGL_VLLM_BIN_PATH and $AGL_STORE_BIN (scripts/vllm-compat.sh sets both;
defaults target/debug/). Everything listens on 127.0.0.1; every wait is a bounded poll.
"""

import json
import os
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
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VLLM_BIN = os.environ.get("AGL_VLLM_BIN_PATH", str(REPO / "target/debug/agl-vllm"))
STORE_BIN = os.environ.get("AGL_STORE_BIN", str(REPO / "target/debug/agl-store"))

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


def http(method, url, body=None, headers=None, timeout=10):
    """One request; returns (status, body bytes). HTTP errors are answers too."""
    data = body
    hdrs = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, bytearray)):
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


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
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    for key in ("AGL_STORE_URL", "AGL_SERVER_HOST", "AGL_SERVER_PORT"):
        env.pop(key, None)
    env.update(extra)
    return env


class Store:
    def __init__(self, kind):
        self.kind = kind
        if kind == "agl-store":
            if not Path(STORE_BIN).exists():
                pytest.fail(f"agl-store binary not found at {STORE_BIN} (set AGL_STORE_BIN)")
            self.process = Process(
                [STORE_BIN, "--port", "0", "--host", "127.0.0.1", "--log-format", "json"],
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
        self.process.stop()


class Llm:
    """The proxy in front of the double; `base` is the proxy's URL."""

    def __init__(self, mode, store):
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


@pytest.fixture(params=["agl-store", "official"])
def store(request):
    server = Store(request.param)
    yield server
    server.stop()


@pytest.fixture(params=["sidecar", "launcher"])
def llm(request, store):
    if not Path(VLLM_BIN).exists():
        pytest.fail(f"agl-vllm binary not found at {VLLM_BIN} (set AGL_VLLM_BIN_PATH)")
    proxy = Llm(request.param, store)
    yield proxy
    proxy.stop()
