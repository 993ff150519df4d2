"""Fixtures shared by the v030, v022 and v102 compatibility suites.

Async tests are run with ``asyncio.run`` (one fresh event loop per test, so every
``LightningStoreClient`` a test creates lives and dies with it); no pytest plugin needed.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from common import IS_OFFICIAL, TARGET, start_model_server, start_server  # noqa: E402

# No single test may hang the suite.
TEST_TIMEOUT_SECONDS = 120.0


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), TEST_TIMEOUT_SECONDS))
        return True
    return None


def pytest_report_header(config):
    return f"agl compat target: {TARGET}"


def _server_fixture(protocol: str, request, tmp_path_factory, key=None):
    log_dir = tmp_path_factory.mktemp("server-logs")
    server = start_server(protocol, log_dir, key=key)
    request.addfinalizer(server.stop)
    return server


@pytest.fixture(scope="module")
def server_v030(request, tmp_path_factory):
    """A fresh 0.3.0-protocol server for the module (ours, or the official 0.3.0 one)."""
    return _server_fixture("v030", request, tmp_path_factory)


@pytest.fixture(scope="module")
def server_v022(request, tmp_path_factory):
    """A fresh server for the 0.2.2 flat protocol (ours, or the official 0.2.2 one)."""
    return _server_fixture("v022", request, tmp_path_factory)


@pytest.fixture(scope="module")
def server_v102(request, tmp_path_factory):
    """A server for upstream v1's API shared by a module (ours, or 1.0.2's `agl-server`)."""
    return _server_fixture("v102", request, tmp_path_factory)


@pytest.fixture
def fresh_server_v102(request, tmp_path_factory):
    """A server of its own for a test that needs an empty store."""
    return _server_fixture("v102", request, tmp_path_factory)


@pytest.fixture(scope="module")
def model_server(request, tmp_path_factory):
    """The vLLM test double, for v1's proxy to forward to."""
    server = start_model_server(tmp_path_factory.mktemp("model-logs"))
    request.addfinalizer(server.stop)
    return server


# The key the keyed servers require.
TEST_KEY = "test-secret-key"


@pytest.fixture(scope="module")
def keyed_server_v102(request, tmp_path_factory):
    """A v1 server that requires TEST_KEY (ours with --key-file, 1.0.2's with key=...)."""
    return _server_fixture("v102", request, tmp_path_factory, key=TEST_KEY)


@pytest.fixture(scope="module")
def keyed_server_v030(request, tmp_path_factory):
    """Ours, requiring TEST_KEY on the 0.3 protocol (the official 0.3.0 server has no key)."""
    if IS_OFFICIAL:
        pytest.skip("the official 0.3.0 server has no key")
    return _server_fixture("v030", request, tmp_path_factory, key=TEST_KEY)


@pytest.fixture(scope="module")
def keyed_server_v022(request, tmp_path_factory):
    """Ours, requiring TEST_KEY on the 0.2.2 flat routes (the official 0.2.2 server has none)."""
    if IS_OFFICIAL:
        pytest.skip("the official 0.2.2 server has no key")
    return _server_fixture("v022", request, tmp_path_factory, key=TEST_KEY)


official_only_differs = pytest.mark.skipif(IS_OFFICIAL, reason="documented intentional difference of agl-store")
