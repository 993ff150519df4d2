"""Shared helpers of the Helm chart tests: the chart rendered by the real Helm engine
(helm-python-sdk, Helm v4 as a library, offline), the value sets in helm/agl/ci/, and
lookups into the rendered objects. Run through ./scripts/helm-test.sh.

(A module of its own rather than conftest.py, so that `from chartlib import ...` never
picks up another suite's conftest.)"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import helm_python as helm
import yaml
from kubernetes_validate import utils as kv_utils

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "agl"
RELEASE = "agl"
NAMESPACE = "agl-test"
CI_FILES = sorted(CHART.glob("ci/*-values.yaml"))
CI_IDS = [p.name.removesuffix("-values.yaml") for p in CI_FILES]


@functools.lru_cache(maxsize=None)
def ci_values(name: str) -> dict:
    """The values of helm/agl/ci/<name>-values.yaml ({} for an empty file)."""
    return yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text()) or {}


@functools.lru_cache(maxsize=1)
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render_raw(values: dict | None, *, name: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, str]:
    """template path -> rendered text (what `helm template` prints), schema checked."""
    return chart().render(values, name=name, namespace=namespace, is_install=True)


def objects_of(rendered: dict[str, str]) -> list[dict]:
    out = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        out.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return out


@functools.lru_cache(maxsize=None)
def _rendered(name: str) -> dict[str, str]:
    return render_raw(ci_values(name))


def rendered_objects(name: str) -> list[dict]:
    return objects_of(_rendered(name))


def notes(name: str) -> str:
    return next(text for path, text in _rendered(name).items() if path.endswith("NOTES.txt"))


def merged_values(name: str) -> dict:
    """Defaults coalesced with the ci file, as an install would use them."""
    return chart().merge_values(ci_values(name))


# ---------------------------------------------------------------- lookups ----------


def find(objs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def by_component(objs: list[dict], kind: str, component: str) -> list[dict]:
    return [
        o
        for o in objs
        if o["kind"] == kind and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]


WORKLOADS = ("Deployment", "StatefulSet")


def workload(objs: list[dict], component: str) -> dict:
    found = [o for kind in WORKLOADS for o in by_component(objs, kind, component)]
    assert len(found) == 1, f"expected one workload for {component}, found {len(found)}"
    return found[0]


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def container(obj: dict, name: str) -> dict:
    spec = pod_spec(obj)
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name} in {obj['metadata']['name']}")


def all_containers(obj: dict) -> list[dict]:
    spec = pod_spec(obj)
    return spec.get("initContainers", []) + spec.get("containers", [])


def env(c: dict) -> dict[str, dict]:
    """name -> EnvVar; a later entry with the same name wins, as in Kubernetes."""
    return {e["name"]: e for e in c.get("env", [])}


def env_value(c: dict, name: str) -> str | None:
    e = env(c).get(name)
    return None if e is None else e.get("value")


def arg_after(args: list[str], flag: str) -> str | None:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def service_url(svc: dict, port_name: str = "http") -> str:
    port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == port_name)
    return f"http://{svc['metadata']['name']}.{NAMESPACE}.svc.cluster.local:{port}"


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------- versions ---------


def _semver(v: str) -> tuple[int, int, int]:
    nums = re.findall(r"\d+", v.split("-")[0])
    return tuple(int(n) for n in (nums + ["0", "0", "0"])[:3])  # type: ignore[return-value]


def satisfies(version: str, constraint: str) -> bool:
    """Helm kubeVersion constraints of the forms used here: space/comma separated
    comparisons (>=, >, <=, <, =) joined by AND."""
    v = _semver(version)
    for part in re.split(r"[\s,]+", constraint.strip()):
        if not part:
            continue
        m = re.match(r"^(>=|<=|>|<|=)?v?(.+)$", part)
        assert m, f"cannot read kubeVersion part {part!r}"
        op, bound = m.group(1) or "=", _semver(m.group(2))
        ok = {
            ">=": v >= bound,
            ">": v > bound,
            "<=": v <= bound,
            "<": v < bound,
            "=": v == bound,
        }[op]
        if not ok:
            return False
    return True


@functools.lru_cache(maxsize=1)
def kube_versions() -> list[str]:
    """Every Kubernetes minor that kubernetes-validate ships schemas for and Chart.yaml's
    kubeVersion admits: the versions the chart claims and is validated against."""
    constraint = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    shipped = sorted(set(kv_utils.all_versions()), key=_semver)
    return [v for v in shipped if satisfies(v, constraint)]
