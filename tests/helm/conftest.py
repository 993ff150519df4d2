"""Fixtures of the Helm chart tests; the helpers live in chartlib.py."""

import helm_python as helm
import pytest

from chartlib import CI_IDS


def pytest_configure(config):
    helm.disable_logging()


@pytest.fixture(params=CI_IDS)
def ci(request) -> str:
    """The name of a value set in helm/agl/ci/ (<name>-values.yaml)."""
    return request.param
