"""Fixtures: a LightningStore (agl-store, or the official Python server of agentlightning
0.3.0), and the token-capturing proxy in front of the vLLM test double, either as a sidecar
(`agl-vllm proxy` beside `agl-vllm fake-vllm`) or through the launcher (`agl-vllm serve …`
with a script named `vllm` on PATH that runs the double).

Binaries come from $AGL_VLLM_BIN_PATH and $AGL_STORE_BIN (scripts/vllm-compat.sh sets both;
defaults target/debug/). Everything listens on 127.0.0.1; every wait is a bounded poll.
The servers and helpers live in tests/lib/agltest.py, shared with tests/browser.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))

from agltest import (  # noqa: E402  (re-exported for the test modules: `from conftest import http`)
    Llm,
    Missing,
    Process,
    Store,
    VLLM_BIN,
    _quiet_env,
    free_port,
    http,
    reward_span,
    wait_for,
)

__all__ = ["Llm", "Process", "Store", "_quiet_env", "free_port", "http", "reward_span", "wait_for"]


@pytest.fixture(params=["agl-store", "official"])
def store(request):
    try:
        server = Store(request.param)
    except Missing as err:
        pytest.fail(f"agl-store {err}")
    yield server
    server.stop()


@pytest.fixture(params=["sidecar", "launcher"])
def llm(request, store):
    if not Path(VLLM_BIN).exists():
        pytest.fail(f"agl-vllm binary not found at {VLLM_BIN} (set AGL_VLLM_BIN_PATH)")
    proxy = Llm(request.param, store)
    yield proxy
    proxy.stop()
