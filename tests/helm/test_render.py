"""The chart renders with the real Helm engine, lints clean in strict mode and every object
is valid Kubernetes for every minor version the chart claims."""

from __future__ import annotations

import json
import re
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from chartlib import (
    CHART,
    CI_FILES,
    CI_IDS,
    NAMESPACE,
    ROOT,
    ci_values,
    kube_versions,
    rendered_objects,
)

CRD_SCHEMAS = Path(__file__).parent / "crds"


def test_chart_version_follows_the_workspace():
    cargo = (ROOT / "Cargo.toml").read_text()
    section = cargo.split("[workspace.package]", 1)[1].split("\n[", 1)[0]
    workspace = re.search(r'^version\s*=\s*"([^"]+)"', section, re.M).group(1)
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["version"] == workspace, "Chart.yaml version must equal [workspace.package] version"
    assert str(meta["appVersion"]) == workspace, "Chart.yaml appVersion must equal [workspace.package] version"
    assert meta["apiVersion"] == "v2"


def test_the_chart_claims_at_least_three_validated_minors():
    versions = kube_versions()
    assert len(versions) >= 3, f"kubeVersion admits only {versions} of kubernetes-validate's schemas"
    # native sidecars and the preStop sleep action are on by default from 1.30
    assert all(tuple(map(int, v.split(".")[:2])) >= (1, 30) for v in versions)


def test_every_value_set_is_a_ci_file():
    assert len(CI_FILES) >= 5
    assert {"defaults", "gpu-launcher", "sidecar", "observability", "existing-resources"} <= set(CI_IDS)


def test_helm_lint_strict(ci):
    for version in (kube_versions()[0], kube_versions()[-1]):
        report = helm.lint(CHART, ci_values(ci), strict=True, namespace=NAMESPACE, kube_version=f"v{version}")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not problems and not report["errors"], f"helm lint --strict ({version}): {problems or report['errors']}"


def test_renders_objects(ci):
    objs = rendered_objects(ci)
    kinds = {o["kind"] for o in objs}
    assert "Service" in kinds and ({"Deployment", "StatefulSet"} & kinds)
    names = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(names) == len(set(names)), f"duplicate objects: {names}"


def _validate_crd(obj: dict) -> None:
    group = obj["apiVersion"].split("/")[0].split(".")[0]
    path = CRD_SCHEMAS / f"{obj['kind'].lower()}-{group}-{obj['apiVersion'].split('/')[1]}.json"
    assert path.exists(), f"no schema for {obj['apiVersion']} {obj['kind']}"
    jsonschema.validate(obj, json.loads(path.read_text()))


@pytest.mark.parametrize("version", kube_versions())
def test_kubernetes_validate_strict(ci, version):
    failures = []
    for obj in rendered_objects(ci):
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            # A CRD (ServiceMonitor): kubernetes-validate ships only the core schemas.
            _validate_crd(obj)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {e.message}")
    assert not failures, "\n".join(failures)


def test_recommended_labels(ci):
    for obj in rendered_objects(ci):
        labels = obj["metadata"].get("labels", {})
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "app.kubernetes.io/part-of",
            "helm.sh/chart",
        ):
            assert key in labels, f"{obj['kind']}/{obj['metadata']['name']} lacks {key}"
        if obj["kind"] != "ServiceAccount":
            assert "app.kubernetes.io/component" in labels, obj["metadata"]["name"]
        if obj["kind"] in ("Deployment", "StatefulSet"):
            tmpl = obj["spec"]["template"]["metadata"]["labels"]
            for k, v in obj["spec"]["selector"]["matchLabels"].items():
                assert tmpl.get(k) == v, f"{obj['metadata']['name']}: selector {k} not on the pod"


def test_images_default_to_the_app_version(ci):
    app_version = str(yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])
    for obj in rendered_objects(ci):
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        spec = obj["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            image = c["image"]
            if image.startswith("ghcr.io/agl-project/"):
                assert image.endswith(f":{app_version}"), image
            assert c["imagePullPolicy"] in ("IfNotPresent", "Always", "Never")


def test_kubernetes_validate_cli(ci, tmp_path):
    """The same check through the `kubernetes-validate --strict` command, on the rendered
    manifests as one file (newest claimed version; the loop above covers every version)."""
    import subprocess
    import sys

    manifest = tmp_path / f"{ci}.yaml"
    manifest.write_text(yaml.safe_dump_all(rendered_objects(ci)))
    exe = Path(sys.executable).with_name("kubernetes-validate")
    run = subprocess.run(
        [str(exe), "--strict", "--quiet", "-k", kube_versions()[-1], str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ERROR" not in run.stdout, run.stdout


# Combinations the ci files do not cover, rendered and validated the same way.
VARIANTS = {
    "model-cache-emptydir": {"vllm": {"modelCache": {"enabled": False, "emptyDirSizeLimit": "100Gi"}}},
    "model-cache-emptydir-unbounded": {"vllm": {"modelCache": {"enabled": False}}},
    "store-deployment-created-claim": {"store": {"workload": "Deployment", "persistence": {"storageClass": "fast"}}},
    "store-prestop": {"store": {"preStopSleepSeconds": 5, "terminationGracePeriodSeconds": 30}},
    "no-pdb-no-sa": {"vllm": {"pdb": {"enabled": False}}, "serviceAccount": {"create": False}},
    "sidecar-with-everything": {
        "vllm": {"mode": "sidecar", "ingress": {"enabled": True}, "hfToken": {"existingSecret": "hf"}},
        "metrics": {"serviceMonitor": {"enabled": True}},
        "networkPolicy": {"enabled": True},
    },
    "digests-and-names": {
        "fullnameOverride": "lightning",
        "store": {"image": {"digest": "sha256:" + "a" * 64}},
        "vllm": {"servedModelName": "policy", "maxModelLen": 8192, "gpuMemoryUtilization": 0.85},
    },
    "old-vllm": {"vllm": {"mode": "sidecar", "official": {"image": {"tag": "v0.10.2"}}, "drain": {"passShutdownTimeoutFlag": False}}},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_validate(variant):
    from chartlib import objects_of, render_raw

    objs = objects_of(render_raw(VARIANTS[variant]))
    for version in (kube_versions()[0], kube_versions()[-1]):
        for obj in objs:
            if obj["kind"] == "ServiceMonitor":
                _validate_crd(obj)
                continue
            kubernetes_validate.validate(obj, version, strict=True)


def test_pull_secrets_and_service_account():
    from chartlib import pod_spec, workload

    objs = rendered_objects("existing-resources")
    assert not [o for o in objs if o["kind"] == "ServiceAccount"]
    for comp in ("store", "agentops", "llm"):
        spec = pod_spec(workload(objs, comp))
        assert spec["serviceAccountName"] == "agl-runner"
        names = [s["name"] for s in spec["imagePullSecrets"]]
        assert names[0] == "ghcr-pull"
        if comp == "store":
            assert names == ["ghcr-pull", "store-registry"]
    digest = objects_of_variant("digests-and-names")
    store = workload(digest, "store")
    assert pod_spec(store)["containers"][0]["image"] == "ghcr.io/agl-project/agl-store@sha256:" + "a" * 64
    assert store["metadata"]["name"] == "lightning-store"


def objects_of_variant(name: str) -> list[dict]:
    from chartlib import objects_of, render_raw

    return objects_of(render_raw(VARIANTS[name]))
