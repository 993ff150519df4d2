"""Shared helpers of the compatibility suites: which server to drive, and how to run it.

The suites run inside a virtualenv holding one official ``agentlightning`` release (0.3.0 or
0.2.2). ``AGL_COMPAT_TARGET`` picks the server under test:

* ``ours`` (default): the Rust binary ``$AGL_STORE_BIN`` (default ``target/debug/agl-store``),
  started as ``agl-store --host 127.0.0.1 --port PORT --scan-debounce-seconds 0`` (plus
  ``--storage sqlite:FILE`` with ``AGL_COMPAT_STORAGE=sqlite``);
* ``official``: the official Python server of the installed release, built exactly as
  ``agl store`` builds it but bound to loopback and (0.3.0) with the watchdog debounce at 0,
  as upstream's own test fixture does. This validates the tests themselves.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import List, Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGET = os.environ.get("AGL_COMPAT_TARGET", "ours").strip().lower() or "ours"
if TARGET not in ("ours", "official"):
    raise RuntimeError(f"AGL_COMPAT_TARGET must be 'ours' or 'official', not {TARGET!r}")
IS_OFFICIAL = TARGET == "official"

# `agl store` of 0.3.0 (agentlightning/cli/store.py) with host=127.0.0.1 and debounce 0.
OFFICIAL_030_SERVER = """
import asyncio, sys
from agentlightning.store.client_server import LightningStoreServer
from agentlightning.store.memory import InMemoryLightningStore
store = InMemoryLightningStore(thread_safe=True, scan_debounce_seconds=0)
server = LightningStoreServer(store, host="127.0.0.1", port=int(sys.argv[1]), launch_mode="asyncio")
asyncio.run(server.run_forever())
"""

# `agl store` of 0.2.2 builds LightningStoreServer(InMemoryLightningStore(), "0.0.0.0", port); its
# uvicorn config hard-codes 0.0.0.0, so serve the very same FastAPI app on loopback instead.
OFFICIAL_022_SERVER = """
import sys, uvicorn
from agentlightning.store.client_server import LightningStoreServer
from agentlightning.store.memory import InMemoryLightningStore
port = int(sys.argv[1])
server = LightningStoreServer(InMemoryLightningStore(), host="127.0.0.1", port=port)
uvicorn.run(server.app, host="127.0.0.1", port=port, log_level="warning")
"""


def unique(prefix: str = "") -> str:
    """A short id that no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def repo_binary(variable: str, default: str) -> Path:
    """A binary the environment names (relative paths from the repo root), or ``default``."""
    path = Path(os.environ.get(variable, default))
    return path if path.is_absolute() else REPO_ROOT / path


def store_bin() -> Path:
    return repo_binary("AGL_STORE_BIN", "target/debug/agl-store")


def _server_env() -> dict:
    env = dict(os.environ)
    # Never let a developer's telemetry settings make the server export anywhere.
    for key in list(env):
        if key.startswith("OTEL_"):
            del env[key]
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    return env


class ServerProcess:
    """One server process on a free loopback port, ready once its health route answers 200."""

    def __init__(self, argv: List[str], base_url: str, health_path: str, log_path: Path, ready_timeout: float):
        self.argv = argv
        self.base_url = base_url
        self.health_path = health_path
        self.log_path = log_path
        self.ready_timeout = ready_timeout
        self.proc: Optional[subprocess.Popen] = None
        self._log = None

    def start(self) -> "ServerProcess":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_server_env(),
            cwd=str(REPO_ROOT),
            start_new_session=True,
        )
        deadline = time.monotonic() + self.ready_timeout
        url = self.base_url + self.health_path
        last_error: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"server exited with {self.proc.returncode} before becoming healthy: {self.argv}\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return self
                    last_error = resp.status
            except (urllib.error.URLError, OSError) as exc:
                last_error = exc
            time.sleep(0.05)  # poll interval of the readiness probe
        self.stop()
        raise RuntimeError(
            f"server not healthy at {url} within {self.ready_timeout}s (last: {last_error!r})\n{self.log_tail()}"
        )

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None


def fresh_database(name: str) -> str:
    """Create an empty database on the server AGL_COMPAT_PG names; its connection string."""
    base = os.environ["AGL_COMPAT_PG"]
    subprocess.run(["psql", base, "-q", "-c", f"CREATE DATABASE {name}"], check=True)
    return f"{base} dbname={name}"


# The model v1's proxy serves in the tests (the vLLM double serves it under this name).
PROXY_MODEL = "test-model"


def start_server(protocol: str, log_dir: Path, key: Optional[str] = None) -> ServerProcess:
    """Start the server under test for ``protocol`` ('v030', 'v022' or 'v102'), requiring
    ``key`` on every route but health when one is given. A v102 server's proxy serves
    PROXY_MODEL."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    health_path = {"v030": "/v1/agl/health", "v022": "/health", "v102": "/healthz"}[protocol]
    log_path = log_dir / f"server-{protocol}-{port}.log"
    if IS_OFFICIAL and protocol == "v102":
        # `agl-server` of 1.0.2, a Hydra app: its overrides, and its run directory kept out
        # of the repository.
        argv = [
            sys.executable,
            "-m",
            "agentlightning.server",
            "host=127.0.0.1",
            f"port={port}",
            f"hydra.run.dir={log_dir / f'hydra-{port}'}",
            f"default_proxy.model_name={PROXY_MODEL}",
        ]
        if key:
            argv.append(f"key={key}")
        ready_timeout = 90.0
    elif IS_OFFICIAL:
        if key:
            raise RuntimeError(f"the official {protocol} server has no key")
        script = {"v030": OFFICIAL_030_SERVER, "v022": OFFICIAL_022_SERVER}[protocol]
        argv = [sys.executable, "-c", script, str(port)]
        ready_timeout = 90.0  # importing agentlightning takes ~10 s on a small machine
    else:
        binary = store_bin()
        if not binary.exists():
            raise RuntimeError(f"agl-store binary not found at {binary} (set AGL_STORE_BIN)")
        argv = [str(binary), "--host", "127.0.0.1", "--port", str(port), "--scan-debounce-seconds", "0"]
        if key and protocol == "v102":
            # Started as a 1.0 deployment starts agl-server: upstream's overrides.
            argv = [
                str(binary),
                "host=127.0.0.1",
                f"port={port}",
                f"key={key}",
                f"default_proxy.model_name={PROXY_MODEL}",
                "--scan-debounce-seconds",
                "0",
            ]
        elif protocol == "v102":
            argv += ["--proxy-model-name", PROXY_MODEL]
        if key and protocol != "v102":
            key_file = log_dir / f"key-{port}"
            key_file.write_text(key + "\n")
            argv.append(f"--key-file={key_file}")
        # AGL_COMPAT_STORAGE=sqlite runs the same suite on a fresh SQLite file per server;
        # =postgres on a fresh database per server of the Postgres server AGL_COMPAT_PG
        # names (a libpq connection string, as scripts/pg.sh prints it).
        storage = os.environ.get("AGL_COMPAT_STORAGE")
        if storage == "sqlite":
            argv.append(f"--storage=sqlite:{log_dir / f'store-{protocol}-{port}.db'}")
        elif storage == "postgres":
            argv.append(f"--storage={fresh_database(f'agl_compat_{protocol}_{port}')}")
        ready_timeout = 30.0
    return ServerProcess(argv, base_url, health_path, log_path, ready_timeout).start()


async def wait_until(predicate, *, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll the async ``predicate`` until it returns a truthy value; return that value."""
    import asyncio

    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = await predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
        await asyncio.sleep(interval)


def vllm_bin() -> Path:
    return repo_binary("AGL_VLLM_BIN", "target/debug/agl-vllm")


def start_model_server(log_dir: Path) -> ServerProcess:
    """The vLLM test double (`agl-vllm fake-vllm`), serving PROXY_MODEL with token ids."""
    binary = vllm_bin()
    if not binary.exists():
        raise RuntimeError(f"agl-vllm binary not found at {binary} (set AGL_VLLM_BIN)")
    port = free_port()
    argv = [str(binary), "fake-vllm", "serve", PROXY_MODEL, "--host", "127.0.0.1", "--port", str(port)]
    return ServerProcess(argv, f"http://127.0.0.1:{port}", "/health", log_dir / f"model-{port}.log", 30.0).start()


@contextlib.contextmanager
def local_controller(store_url: str, run_dir: Path, agents: Path, poll_interval: float = 0.2):
    """Upstream 1.0's `agl-controller runner_type=local` against `store_url` while the block
    runs, importing agent classes from `agents` (put on its PYTHONPATH); yields the path of
    its log. SIGTERM on the way out (it then kills its live agents and marks them failed)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(agents), os.environ.get("PYTHONPATH", "")]))
    log_path = run_dir / "controller.log"
    with open(log_path, "wb") as log:
        controller = subprocess.Popen(
            [
                sys.executable, "-m", "agentlightning.controller", "runner_type=local",
                f"agl_server.url={store_url}", f"local_runner.poll_interval={poll_interval}",
                f"hydra.run.dir={run_dir / 'hydra'}",
            ],
            stdout=log, stderr=subprocess.STDOUT, cwd=str(run_dir), env=env, start_new_session=True,
        )
    try:
        yield log_path
    finally:
        controller.send_signal(signal.SIGTERM)
        try:
            controller.wait(timeout=20)
        except subprocess.TimeoutExpired:
            controller.kill()
            controller.wait()
