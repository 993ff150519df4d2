"""values.schema.json refuses bad values before anything reaches a cluster, with a message
that names the key; the template checks refuse incoherent combinations."""

from __future__ import annotations

import json

import helm_python as helm
import pytest
import yaml

from chartlib import CHART, NAMESPACE, chart, render_raw

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())


def _nested(path: str, value) -> dict:
    out: dict = {}
    cur = out
    keys = path.split(".")
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = value
    return out


# (values path, bad value, text the error must contain)
BAD = [
    ("vllm.gpu.count", "two", "at '/vllm/gpu/count': got string, want integer"),
    ("vllm.gpu.count", 0, "/vllm/gpu/count"),
    ("store.service.port", "4747", "at '/store/service/port': got string, want integer"),
    ("store.service.port", 70000, "/store/service/port"),
    ("vllm.enabled", "yes", "at '/vllm/enabled': got string, want boolean"),
    ("vllm.tolerations", {"key": "nvidia.com/gpu"}, "at '/vllm/tolerations': got object, want array"),
    ("vllm.tolerations", [{"key": "x", "operater": "Exists"}], "additional properties 'operater' not allowed"),
    ("vllm.mode", "daemon", "/vllm/mode"),
    ("store.workload", "ReplicaSet", "/store/workload"),
    ("store.storage.backend", "mongo", "/store/storage/backend"),
    ("vllm.shm.sizeLimit", "lots", "/vllm/shm/sizeLimit"),
    ("vllm.startup.budgetMinutes", 0, "/vllm/startup/budgetMinutes"),
    ("vllm.gpuMemoryUtilization", 1.5, "/vllm/gpuMemoryUtilization"),
    ("vllm.resources", {"limit": {"memory": "1Gi"}}, "additional properties 'limit' not allowed"),
    ("vllm.resources", {"limits": {"memory": "lots"}}, "/vllm/resources/limits/memory"),
    ("store.startupProbe", {"httpGet": {"path": "/livez", "port": "http"}, "periodSecond": 2}, "additional properties 'periodSecond' not allowed"),
    ("agentops.forwardOtlp", ["https://collector:4318/v1/traces"], "/agentops/forwardOtlp/0"),
    ("otel.endpoint", "collector:4318", "/otel/endpoint"),
    ("store.image.digest", "latest", "/store/image/digest"),
    ("logging.format", "xml", "/logging/format"),
    ("metrics.serviceMonitor.interval", 30, "/metrics/serviceMonitor/interval"),
]

UNKNOWN = [
    ("replicaCount", 3, "additional properties 'replicaCount' not allowed"),
    ("store.persistance", {"size": "1Gi"}, "at '/store': additional properties 'persistance' not allowed"),
    ("vllm.gpu.type", "h100", "at '/vllm/gpu': additional properties 'type' not allowed"),
    ("vllm.hfToken.token", "hf_x", "at '/vllm/hfToken': additional properties 'token' not allowed"),
    ("agentops.service.nodePort", 30002, "at '/agentops/service': additional properties 'nodePort' not allowed"),
]


@pytest.mark.parametrize("path,value,message", BAD + UNKNOWN, ids=[f"{p}={v!r}" for p, v, _ in BAD + UNKNOWN])
def test_schema_rejects(path, value, message):
    values = _nested(path, value)
    with pytest.raises(helm.HelmValuesError) as err:
        chart().validate_schema(values)
    assert message in str(err.value), str(err.value)
    # `helm install/template` refuses them too (rendering validates against the schema)
    with pytest.raises(helm.HelmValuesError) as err:
        render_raw(values)
    assert message in str(err.value)


def test_lint_reports_bad_values():
    report = helm.lint(CHART, {"vllm": {"gpu": {"count": "two"}}}, strict=True, namespace=NAMESPACE)
    assert any("/vllm/gpu/count" in e for e in report["errors"]), report


def test_defaults_and_ci_files_pass_the_schema(ci):
    from chartlib import ci_values

    chart().validate_schema(ci_values(ci))


def _schema_keys(node: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, sub in node.get("properties", {}).items():
        out.add(prefix + k)
        if sub.get("additionalProperties") is False and sub.get("properties") and not sub.get("title", "").startswith("io.k8s."):
            out |= _schema_keys(sub, prefix + k + ".")
    return out


def _value_keys(values: dict, schema: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in values.items():
        out.add(prefix + k)
        sub = schema.get("properties", {}).get(k, {})
        if isinstance(v, dict) and sub.get("properties") and not sub.get("title", "").startswith("io.k8s."):
            out |= _value_keys(v, sub, prefix + k + ".")
    return out


def test_schema_and_values_yaml_describe_the_same_keys():
    in_schema, in_values = _schema_keys(SCHEMA), _value_keys(DEFAULTS, SCHEMA)
    assert in_schema - in_values == set(), "in the schema but not in values.yaml"
    assert in_values - in_schema == set(), "in values.yaml but not in the schema"


def test_every_chart_owned_object_in_the_schema_is_closed():
    def walk(node, path):
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path or '<root>'} accepts unknown keys"
            for k, sub in node["properties"].items():
                walk(sub, f"{path}.{k}" if path else k)

    walk(SCHEMA, "")


# ------------------------------------------------------------- template checks -----

INCOHERENT = [
    (
        {"vllm": {"terminationGracePeriodSeconds": 40}},
        "vllm.terminationGracePeriodSeconds (40) must be greater than vllm.drain.preStopSleepSeconds (10) + vllm.drain.shutdownTimeoutSeconds (30) + vllm.proxy.shutdownBudgetSeconds (10) = 50",
    ),
    (
        {"store": {"terminationGracePeriodSeconds": 10}},
        "store.terminationGracePeriodSeconds (10) must be greater than",
    ),
    (
        {"agentops": {"terminationGracePeriodSeconds": 15}},
        "agentops.terminationGracePeriodSeconds (15) must be greater than agentops.drainSeconds (5) + agentops.shutdownGraceSeconds (10)",
    ),
    ({"vllm": {"tensorParallelSize": 4, "gpu": {"count": 2}}}, "vllm.tensorParallelSize (4) is larger than vllm.gpu.count (2)"),
    ({"otel": {"endpoint": "http://agl-store:4747"}}, "points at the store itself"),
    ({"otel": {"endpoint": "http://localhost:4747/v1/traces"}}, "points at the store itself"),
    ({"vllm": {"hfToken": {"existingSecret": "hf", "value": "hf_x"}}}, "set existingSecret or value, not both"),
    ({"vllm": {"pdb": {"minAvailable": 1}}}, "set minAvailable or maxUnavailable, not both"),
    ({"vllm": {"replicas": 2}}, "created model cache claim is ReadWriteOnce"),
    ({"vllm": {"internalPort": 8000}}, "vllm.internalPort must not be 8000"),
    ({"store": {"enabled": False}}, "store.externalUrl is required"),
    ({"store": {"storage": {"backend": "memory"}, "persistence": {"existingClaim": "data"}}}, "choose sqlite"),
    ({"store": {"storage": {"backend": "postgres"}}}, "set exactly one of"),
    (
        {"store": {"storage": {"backend": "postgres"}, "postgres": {"url": "postgres://a@b/c", "existingSecret": {"name": "s"}}}},
        "set exactly one of",
    ),
    (
        {"store": {"storage": {"backend": "postgres"}, "postgres": {"url": "postgres://a@b/c"}, "replicas": 1}},
        "store.pdb.minAvailable (1) must be below store.replicas (1)",
    ),
]


@pytest.mark.parametrize("values,message", INCOHERENT, ids=[m[:40] for _, m in INCOHERENT])
def test_render_refuses_incoherent_values(values, message):
    with pytest.raises(helm.HelmError) as err:
        render_raw(values)
    assert message in str(err.value), str(err.value)


def test_otel_endpoint_may_point_at_a_collector_or_skip_the_store():
    render_raw({"otel": {"endpoint": "http://otel-collector.observability:4318"}})
    # the store's own exporter off: the other components may still export wherever
    render_raw({"otel": {"endpoint": "http://agl-store:4747"}, "store": {"otel": {"enabled": False}}})


def test_external_store():
    from chartlib import arg_after, container, env_value, objects_of, workload  # noqa: F401

    objs = objects_of(render_raw({"store": {"enabled": False, "externalUrl": "http://store.shared:4747/"}}))
    assert not [o for o in objs if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "store"]
    assert env_value(container(workload(objs, "llm"), "vllm"), "AGL_STORE_URL") == "http://store.shared:4747"
    assert env_value(container(workload(objs, "agentops"), "agentops"), "AGL_AGENTOPS_FORWARD_OTLP") == "http://store.shared:4747/v1/traces"


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"vllm": {"gpu": {"count": "two"}}}, "at '/vllm/gpu/count': got string, want integer"),
        ({"store": {"persistance": {"size": "1Gi"}}}, "at '/store': additional properties 'persistance' not allowed"),
    ],
    ids=["wrong-type", "unknown-key"],
)
def test_each_value_set_with_a_mistake_is_refused(ci, bad, message):
    from chartlib import ci_values

    values = _deep_merge(ci_values(ci), bad)
    with pytest.raises(helm.HelmValuesError) as err:
        render_raw(values)
    assert message in str(err.value)
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    assert any(message in e for e in report["errors"]), report["errors"]
