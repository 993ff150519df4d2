"""How `docker compose --profile observability up` is wired, checked from the files: its
images (the OpenTelemetry collector, Jaeger, Prometheus, Grafana) cannot be pulled on the
machine the project is built on, so what can be checked without them is checked here.
Every address one service gives for another names a service of the stack on a port that
service listens on; every file mounted exists; the collector's pipelines use only the
components it defines and end in Jaeger; Grafana's provisioning finds the dashboards where
compose mounts them, and every panel's datasource is one it provisions; the endpoint the
README tells services to export to is the collector's receiver.

Run by scripts/observability-test.sh (in the test command).
"""

import json
import re
import sys
from pathlib import Path, PurePosixPath

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))

from agltest import REPO  # noqa: E402

COMPOSE = yaml.safe_load((REPO / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
PROFILE = sorted(n for n, s in SERVICES.items() if "observability" in s.get("profiles", []))

# The ports the profile's images listen on inside the network (their documentation:
# Jaeger all-in-one's OTLP gRPC/HTTP receivers and UI, the collector as configured below).
LISTENS = {"jaeger": {4317, 4318, 16686}, "prometheus": {9090}, "grafana": {3000}}


def mounts(service):
    """Container path -> the repository path bind-mounted there."""
    found = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[PurePosixPath(target)] = REPO / source
    return found


def host_file(service, container_path):
    """The repository file a service sees at container_path, through its bind mounts."""
    path = PurePosixPath(container_path)
    for target, source in mounts(service).items():
        if path == target or target in path.parents:
            return source / path.relative_to(target)
    raise AssertionError(f"{service} mounts nothing at {container_path}")


def flag(service, name):
    """The value of `--name=VALUE` in the service's command."""
    for argument in SERVICES[service].get("command", []):
        if argument.startswith(f"--{name}="):
            return argument.split("=", 1)[1]
    raise AssertionError(f"{service} has no --{name}")


def collector():
    return yaml.safe_load(host_file("otel-collector", flag("otel-collector", "config")).read_text())


def collector_ports():
    receivers = collector()["receivers"]["otlp"]["protocols"]
    return {int(p["endpoint"].rsplit(":", 1)[1]) for p in receivers.values()}


def assert_reachable(address, what):
    """address (`host:port` or a URL) names a service of the stack that listens there."""
    match = re.match(r"^(?:\w+://)?([\w.-]+):(\d+)", address)
    assert match, f"{what}: {address!r} names no host and port"
    host, port = match.group(1), int(match.group(2))
    assert host in SERVICES, f"{what}: {host} is not a compose service"
    listens = collector_ports() if host == "otel-collector" else LISTENS.get(host, set())
    assert port in listens, f"{what}: {host} does not listen on {port} (it does on {sorted(listens)})"


def test_the_profile_is_the_four_services():
    assert PROFILE == ["grafana", "jaeger", "otel-collector", "prometheus"]


def test_every_mounted_file_exists():
    for service in PROFILE:
        for target, source in mounts(service).items():
            assert source.exists(), f"{service} mounts {source} at {target}: missing"


def test_the_collector_pipes_traces_into_jaeger():
    config = collector()
    pipelines = config["service"]["pipelines"]
    assert "traces" in pipelines
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config.get(kind, {}), f"pipeline {name}: {kind[:-1]} {component} undefined"
    exporters = [config["exporters"][e] for e in pipelines["traces"]["exporters"]]
    to_jaeger = [e for e in exporters if e.get("endpoint", "").split(":")[0] == "jaeger"]
    assert to_jaeger, "the traces pipeline does not export to jaeger"
    for exporter in to_jaeger:
        assert_reachable(exporter["endpoint"], "the collector's exporter")
    assert "jaeger" in SERVICES["otel-collector"].get("depends_on", [])
    assert str(SERVICES["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"]).lower() == "true"


def test_services_are_told_to_export_to_the_collectors_receiver():
    readme = (REPO / "README.md").read_text()
    told = set(re.findall(r"OTEL_EXPORTER_OTLP_ENDPOINT=(http://[\w.-]+:\d+)", readme))
    assert told, "the README names no OTLP endpoint"
    for endpoint in told:
        assert_reachable(endpoint, "the README's OTEL_EXPORTER_OTLP_ENDPOINT")
    published = {int(str(p).rsplit(":", 1)[1]) for p in SERVICES["otel-collector"]["ports"]}
    assert published <= collector_ports(), f"published {published}, listening {collector_ports()}"


def test_grafana_finds_its_datasources_and_dashboards():
    grafana = SERVICES["grafana"]
    provisioning = host_file("grafana", "/etc/grafana/provisioning")
    sources = [s for f in sorted((provisioning / "datasources").glob("*.y*ml"))
               for s in yaml.safe_load(f.read_text())["datasources"]]
    for source in sources:
        assert_reachable(source["url"], f"datasource {source['name']}")
        assert source["url"].split("//")[1].split(":")[0] in grafana.get("depends_on", [])
    providers = [p for f in sorted((provisioning / "dashboards").glob("*.y*ml"))
                 for p in yaml.safe_load(f.read_text())["providers"]]
    assert providers, "no dashboard provider"
    dashboards = []
    for provider in providers:
        folder = host_file("grafana", provider["options"]["path"])
        dashboards += sorted(folder.glob("*.json"))
    assert dashboards, "the providers find no dashboard"
    home = host_file("grafana", grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home in dashboards, f"the home dashboard {home} is not provisioned"
    provisioned = {s["uid"]: s["type"] for s in sources}
    for path in dashboards:
        for panel in json.loads(path.read_text())["panels"]:
            for source in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]:
                if source is None:
                    continue
                assert provisioned.get(source["uid"]) == source["type"], (
                    f"{path.name}: panel {panel['title']!r} uses {source}, provisioned: {provisioned}")
