"""The chart README lists every value (generated table kept in sync) and walks through an
install on a GPU cluster."""

from __future__ import annotations

import json

import yaml

import values_doc
from chartlib import CHART

README = (CHART / "README.md").read_text()


def test_values_table_is_up_to_date():
    assert values_doc.readme_with_table(README) == README, (
        "helm/agl/README.md is out of date: run python tests/helm/values_doc.py --write"
    )


def test_every_value_is_listed_and_described():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    docs = values_doc.descriptions((CHART / "values.yaml").read_text())
    rows = values_doc.leaves(schema, values)
    assert len(rows) > 150
    for path, node, _ in rows:
        assert f"| `{path}` |" in README, f"{path} missing from the README"
        assert docs.get(path), f"{path} has no '# --' description in values.yaml"
        assert node, f"{path} is not in values.schema.json"


def test_install_walkthrough():
    for text in (
        "helm install agl ./helm/agl",
        "nvidia.com/gpu",
        "create secret generic hf-token",
        "kubectl -n agl rollout status",
        "port-forward",
        "AGL_SERVER_HOST",
        "AGENTOPS_EXPORTER_ENDPOINT",
        "/rollout/$ROLLOUT_ID/attempt/$ATTEMPT_ID/v1",
        "helm uninstall",
    ):
        assert text in README, text


def test_ci_value_sets_are_described():
    for path in sorted(CHART.glob("ci/*-values.yaml")):
        assert f"ci/{path.name}" in README, path.name
        assert path.read_text().startswith("#"), f"{path.name} starts with a comment saying what it covers"
