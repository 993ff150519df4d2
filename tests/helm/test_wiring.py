"""What matters once the objects reach a cluster: GPUs, tolerations and shm on the vLLM
pod, probes and grace periods that fit model loading and draining, the components wired
to each other, locked-down security contexts, one store replica, secrets out of env."""

from __future__ import annotations

import math

import pytest

from chartlib import (
    CI_IDS,
    NAMESPACE,
    all_containers,
    arg_after,
    by_component,
    container,
    env,
    env_value,
    find,
    merged_values,
    notes,
    one,
    pod_spec,
    rendered_objects,
    selects,
    service_url,
    workload,
)

GPU_SETS = [c for c in CI_IDS if merged_values(c)["vllm"]["enabled"]]


def _store_service(objs):
    (svc,) = by_component(objs, "Service", "store")
    return svc


def _vllm_container(objs):
    return container(workload(objs, "llm"), "vllm")


# ------------------------------------------------------------------ GPU pod ---------


@pytest.mark.parametrize("ci", GPU_SETS)
def test_gpu_resources_reach_the_vllm_container(ci):
    v = merged_values(ci)["vllm"]
    c = _vllm_container(rendered_objects(ci))
    res = c["resources"]
    name, count = v["gpu"]["resourceName"], v["gpu"]["count"]
    assert res["limits"][name] == count and res["requests"][name] == count
    # vLLM uses them: tensor parallel size = GPUs (or the value)
    tp = v["tensorParallelSize"] or count
    assert arg_after(c["args"], "--tensor-parallel-size") == str(tp)
    # no other container asks for GPUs
    for other in all_containers(workload(rendered_objects(ci), "llm")):
        if other["name"] != "vllm":
            assert name not in other.get("resources", {}).get("limits", {})


@pytest.mark.parametrize("ci", GPU_SETS)
def test_scheduling_values_reach_the_vllm_pod(ci):
    v = merged_values(ci)["vllm"]
    spec = pod_spec(workload(rendered_objects(ci), "llm"))
    assert spec.get("tolerations", []) == v["tolerations"]
    assert spec.get("nodeSelector", {}) == v["nodeSelector"]
    assert spec.get("affinity", {}) == v["affinity"]
    for key in ("runtimeClassName", "priorityClassName", "schedulerName"):
        assert spec.get(key, "") == v[key]


def test_gpu_launcher_set_really_sets_the_scheduling_knobs():
    spec = pod_spec(workload(rendered_objects("gpu-launcher"), "llm"))
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["runtimeClassName"] == "nvidia" and spec["priorityClassName"] == "gpu-inference"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]


@pytest.mark.parametrize("ci", GPU_SETS)
def test_shm_is_memory_backed_and_mounted(ci):
    v = merged_values(ci)["vllm"]
    objs = rendered_objects(ci)
    spec = pod_spec(workload(objs, "llm"))
    vols = {vol["name"]: vol for vol in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in _vllm_container(objs)["volumeMounts"]}
    assert v["shm"]["enabled"]
    shm = vols[mounts["/dev/shm"]]
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": v["shm"]["sizeLimit"]}


@pytest.mark.parametrize("ci", GPU_SETS)
def test_vllm_arguments(ci):
    v = merged_values(ci)["vllm"]
    c = _vllm_container(rendered_objects(ci))
    args = c["args"]
    assert v["model"] in args
    assert arg_after(args, "--port") == str(v["internalPort"])
    if v["servedModelName"]:
        assert arg_after(args, "--served-model-name") == v["servedModelName"]
    for a in v["extraArgs"]:
        assert a in args
    if v["mode"] == "launcher":
        assert c["image"].startswith(v["launcher"]["image"]["repository"] + ":")
        assert arg_after(args, "--host") == "127.0.0.1", "launcher: vLLM stays behind the proxy"
        assert [p["containerPort"] for p in c["ports"]] == [8000]
    else:
        assert c["image"] == f"{v['official']['image']['repository']}:{v['official']['image']['tag']}"
        assert [p["containerPort"] for p in c["ports"]] == [v["internalPort"]]


# ----------------------------------------------------------- probes and drain -------


@pytest.mark.parametrize("ci", GPU_SETS)
def test_startup_budget_covers_model_loading(ci):
    v = merged_values(ci)["vllm"]
    objs = rendered_objects(ci)
    probe = _vllm_container(objs)["startupProbe"]
    budget = probe.get("initialDelaySeconds", 0) + probe["failureThreshold"] * probe["periodSeconds"]
    assert budget >= v["startup"]["budgetMinutes"] * 60
    assert budget < v["startup"]["budgetMinutes"] * 60 + probe["periodSeconds"], "budget rounded up by one period at most"
    # the rollout is not declared failed before the pod could have loaded
    assert workload(objs, "llm")["spec"]["progressDeadlineSeconds"] >= budget
    # readiness gates traffic; liveness only starts after the startup probe succeeded
    c = _vllm_container(objs)
    assert c["readinessProbe"]["httpGet"] and c["livenessProbe"]["httpGet"]


@pytest.mark.parametrize("ci", GPU_SETS)
def test_probes_point_at_the_right_ports(ci):
    v = merged_values(ci)["vllm"]
    objs = rendered_objects(ci)
    w = workload(objs, "llm")
    c = _vllm_container(objs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[kind]["httpGet"]["port"] in ports
    if v["mode"] == "launcher":
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["startupProbe"]["httpGet"]["path"] == "/health"
    else:
        # vLLM's own /health on its port; the proxy folds it into its /readyz
        assert {c[k]["httpGet"]["path"] for k in ("startupProbe", "readinessProbe", "livenessProbe")} == {"/health"}
        proxy = container(w, "proxy")
        assert proxy["readinessProbe"]["httpGet"]["path"] == "/readyz"
        # the sidecar starts before vLLM: its startup probe must not wait for the model
        assert proxy["startupProbe"]["httpGet"]["path"] == "/livez"
        sp = proxy["startupProbe"]
        assert sp["failureThreshold"] * sp["periodSeconds"] <= 120


@pytest.mark.parametrize("ci", GPU_SETS)
def test_grace_period_covers_prestop_and_drain(ci):
    v = merged_values(ci)["vllm"]
    objs = rendered_objects(ci)
    spec = pod_spec(workload(objs, "llm"))
    c = _vllm_container(objs)
    sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = int(arg_after(c["args"], "--shutdown-timeout"))
    assert sleep == v["drain"]["preStopSleepSeconds"] > 0
    assert drain == v["drain"]["shutdownTimeoutSeconds"]
    assert spec["terminationGracePeriodSeconds"] > sleep + drain + v["proxy"]["shutdownBudgetSeconds"]


def test_shutdown_timeout_flag_can_be_left_out_for_old_vllm():
    from chartlib import objects_of, render_raw

    objs = objects_of(render_raw({"vllm": {"drain": {"passShutdownTimeoutFlag": False}}}))
    assert "--shutdown-timeout" not in _vllm_container(objs)["args"]


def test_startup_threshold_rounds_up():
    from chartlib import objects_of, render_raw

    objs = objects_of(render_raw({"vllm": {"startup": {"budgetMinutes": 7, "periodSeconds": 25}}}))
    probe = _vllm_container(objs)["startupProbe"]
    assert probe["failureThreshold"] == math.ceil(7 * 60 / 25)


def test_store_and_agentops_grace_periods(ci):
    objs = rendered_objects(ci)
    for w in find(objs, "StatefulSet") + find(objs, "Deployment"):
        comp = w["metadata"]["labels"]["app.kubernetes.io/component"]
        spec = pod_spec(w)
        grace = spec["terminationGracePeriodSeconds"]
        if comp == "store":
            c = container(w, "store")
            pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            assert grace > pre + int(env_value(c, "AGL_SHUTDOWN_GRACE_SECONDS"))
        elif comp == "agentops":
            c = container(w, "agentops")
            need = int(env_value(c, "AGL_AGENTOPS_DRAIN_SECONDS")) + int(env_value(c, "AGL_AGENTOPS_SHUTDOWN_GRACE_SECONDS"))
            assert grace > need
        for c in all_containers(w):
            for kind in ("readinessProbe", "livenessProbe"):
                assert kind in c, f"{comp}/{c['name']} has no {kind}"
            assert "startupProbe" in c


@pytest.mark.parametrize("ci", GPU_SETS)
def test_pdb_covers_the_vllm_pods(ci):
    v = merged_values(ci)["vllm"]
    objs = rendered_objects(ci)
    pdbs = find(objs, "PodDisruptionBudget")
    assert len(pdbs) == (1 if v["pdb"]["enabled"] else 0)
    for pdb in pdbs:
        labels = workload(objs, "llm")["spec"]["template"]["metadata"]["labels"]
        assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
        assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])


# ------------------------------------------------------------------ wiring ---------


@pytest.mark.parametrize("ci", GPU_SETS)
def test_proxy_records_into_the_store_service(ci):
    objs = rendered_objects(ci)
    v = merged_values(ci)["vllm"]
    w = workload(objs, "llm")
    proxy = container(w, "vllm" if v["mode"] == "launcher" else "proxy")
    assert env_value(proxy, "AGL_STORE_URL") == service_url(_store_service(objs))


@pytest.mark.parametrize("ci", GPU_SETS)
def test_sidecar_shape(ci):
    v = merged_values(ci)["vllm"]
    objs = rendered_objects(ci)
    spec = pod_spec(workload(objs, "llm"))
    svc = one(objs, "Service", by_component(objs, "Service", "llm")[0]["metadata"]["name"])
    (svc_port,) = svc["spec"]["ports"]
    if v["mode"] == "launcher":
        assert "initContainers" not in spec
        assert len(spec["containers"]) == 1
        serving = spec["containers"][0]
    else:
        (proxy,) = spec["initContainers"]
        assert proxy["restartPolicy"] == "Always", "native sidecar"
        assert proxy["args"][0] == "proxy"
        assert arg_after(proxy["args"], "--upstream") == f"http://127.0.0.1:{v['internalPort']}"
        assert arg_after(proxy["args"], "--port") == "8000"
        assert proxy["image"].startswith(v["proxy"]["image"]["repository"] + ":")
        serving = proxy
    assert svc_port["targetPort"] in (8000, "http")
    assert 8000 in [p["containerPort"] for p in serving["ports"]]


def test_agentops_forwards_to_the_store(ci):
    objs = rendered_objects(ci)
    a = merged_values(ci)["agentops"]
    c = container(workload(objs, "agentops"), "agentops")
    assert env_value(c, "AGL_AGENTOPS_HOST") == "0.0.0.0", "the binary binds loopback by default"
    assert env_value(c, "AGL_AGENTOPS_PORT") == "8002"
    targets = (env_value(c, "AGL_AGENTOPS_FORWARD_OTLP") or "").split(",")
    assert targets[0] == service_url(_store_service(objs)) + "/v1/traces"
    assert targets[1:] == a["forwardOtlp"]
    (svc,) = by_component(objs, "Service", "agentops")
    assert env_value(c, "AGL_AGENTOPS_PUBLIC_URL") == (a["publicUrl"] or service_url(svc))


def test_store_environment(ci):
    s = merged_values(ci)["store"]
    objs = rendered_objects(ci)
    c = container(workload(objs, "store"), "store")
    assert env_value(c, "AGL_SERVER_HOST") == "0.0.0.0"
    assert env_value(c, "AGL_SERVER_PORT") == "4747"
    assert env_value(c, "AGL_LOG_FORMAT") == "json"
    svc = _store_service(objs)
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert {"name": "http", "containerPort": 4747, "protocol": "TCP"} in c["ports"]
    assert selects(svc["spec"]["selector"], workload(objs, "store")["spec"]["template"]["metadata"]["labels"])
    if s["corsOrigins"]:
        assert env_value(c, "AGL_CORS_ORIGINS") == ",".join(s["corsOrigins"])


def test_otel_wiring(ci):
    g = merged_values(ci)["otel"]
    for w in find(rendered_objects(ci), "Deployment") + find(rendered_objects(ci), "StatefulSet"):
        for c in all_containers(w):
            e = env(c)
            if c["name"] == "vllm" and "AGL_STORE_URL" not in e:
                continue  # the official vLLM container in sidecar mode: the proxy exports
            assert e["OTEL_SERVICE_NAME"]["value"]
            assert "k8s.pod.name=$(POD_NAME)" in e["OTEL_RESOURCE_ATTRIBUTES"]["value"]
            for k, v in g["resourceAttributes"].items():
                assert f"{k}={v}" in e["OTEL_RESOURCE_ATTRIBUTES"]["value"]
            if g["endpoint"]:
                assert e["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == g["endpoint"]
                assert e["OTEL_TRACES_SAMPLER"]["value"] == g["sampler"]
                if g["samplerArg"]:
                    assert e["OTEL_TRACES_SAMPLER_ARG"]["value"] == g["samplerArg"]
            else:
                assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in e
            # never the store itself
            endpoint = e.get("OTEL_EXPORTER_OTLP_ENDPOINT", {}).get("value", "")
            assert "store" not in endpoint and ":4747" not in endpoint


# --------------------------------------------------------- the store's volume -------


def test_exactly_one_store_replica_unless_postgres(ci):
    s = merged_values(ci)["store"]
    w = workload(rendered_objects(ci), "store")
    if s["storage"]["backend"] == "postgres":
        assert w["kind"] == "Deployment" and w["spec"]["replicas"] == s["replicas"]
        return
    assert w["spec"]["replicas"] == 1
    if w["kind"] == "Deployment":
        assert w["spec"]["strategy"] == {"type": "Recreate"}
    else:
        assert w["kind"] == "StatefulSet"


def test_store_data_volume(ci):
    s = merged_values(ci)["store"]
    objs = rendered_objects(ci)
    w = workload(objs, "store")
    c = container(w, "store")
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    if s["storage"]["backend"] == "memory":
        assert env_value(c, "AGL_STORAGE") == "memory"
        assert "/data" not in mounts and not find(objs, "PersistentVolumeClaim")
        return
    if s["storage"]["backend"] == "postgres":
        assert "/data" not in mounts and not by_component(objs, "PersistentVolumeClaim", "store")
        return
    assert env_value(c, "AGL_STORAGE") == "sqlite:/data/agl-store.db"
    assert env_value(c, "AGL_SQLITE_DURABILITY") == s["storage"]["sqliteDurability"]
    assert env_value(c, "AGL_CACHE_MIB") == str(s["storage"]["cacheMiB"])
    assert mounts["/data"] == "data"
    vols = {v["name"]: v for v in pod_spec(w)["volumes"]}
    p = s["persistence"]
    if p["existingClaim"]:
        assert vols["data"]["persistentVolumeClaim"]["claimName"] == p["existingClaim"]
        assert not by_component(objs, "PersistentVolumeClaim", "store")
    elif w["kind"] == "StatefulSet":
        (tmpl,) = w["spec"]["volumeClaimTemplates"]
        assert tmpl["metadata"]["name"] == "data" and "data" not in vols
        assert tmpl["spec"]["resources"]["requests"]["storage"] == p["size"]
    else:
        (pvc,) = by_component(objs, "PersistentVolumeClaim", "store")
        assert vols["data"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_store_as_deployment_creates_its_claim():
    from chartlib import objects_of, render_raw

    objs = objects_of(render_raw({"store": {"workload": "Deployment", "persistence": {"storageClass": "-"}}}))
    w = workload(objs, "store")
    assert w["kind"] == "Deployment" and w["spec"]["strategy"]["type"] == "Recreate"
    (pvc,) = by_component(objs, "PersistentVolumeClaim", "store")
    assert pvc["spec"]["storageClassName"] == ""
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


@pytest.mark.parametrize("ci", [c for c in CI_IDS if merged_values(c)["store"]["storage"]["backend"] == "postgres"])
def test_store_replicas_on_postgres(ci):
    s = merged_values(ci)["store"]
    objs = rendered_objects(ci)
    w = workload(objs, "store")
    c = container(w, "store")
    # The URL comes from the Secret, never as a plain value in the pod spec.
    (storage,) = [e for e in c["env"] if e["name"] == "AGL_STORAGE"]
    assert "value" not in storage
    assert storage["valueFrom"]["secretKeyRef"] == s["postgres"]["existingSecret"]
    assert env_value(c, "AGL_PG_POOL_SIZE") == str(s["postgres"]["poolSize"])
    # Never fewer ready replicas than asked during a rollout; a PDB for node drains.
    assert w["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    (pdb,) = by_component(objs, "PodDisruptionBudget", "store")
    assert pdb["spec"]["minAvailable"] == s["pdb"]["minAvailable"] < s["replicas"]
    assert selects(pdb["spec"]["selector"]["matchLabels"], w["spec"]["template"]["metadata"]["labels"])
    # Readiness, not liveness, follows the database.
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"


def test_store_on_a_cloudnativepg_cluster_the_chart_renders():
    from chartlib import objects_of, render_raw

    values = {"store": {"storage": {"backend": "postgres"}, "postgres": {"cnpg": {"create": True, "minSyncReplicas": 1}}}}
    objs = objects_of(render_raw(values))
    (cluster,) = [o for o in objs if o["kind"] == "Cluster"]
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["spec"]["instances"] == 2 and cluster["spec"]["minSyncReplicas"] == 1
    c = container(workload(objs, "store"), "store")
    (storage,) = [e for e in c["env"] if e["name"] == "AGL_STORAGE"]
    # CloudNativePG names the app Secret after the cluster and keeps the URL under `uri`.
    assert storage["valueFrom"]["secretKeyRef"] == {"name": f"{cluster['metadata']['name']}-app", "key": "uri"}


def test_store_password_file_from_a_secret():
    from chartlib import objects_of, render_raw

    values = {
        "store": {
            "storage": {"backend": "postgres"},
            "postgres": {"url": "postgres://agl@db:5432/agl", "passwordSecret": {"name": "pg-pass", "key": "pw"}},
        }
    }
    w = workload(objects_of(render_raw(values)), "store")
    c = container(w, "store")
    path = env_value(c, "AGL_STORAGE_PASSWORD_FILE")
    mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    vol = next(v for v in pod_spec(w)["volumes"] if v["name"] == mount["name"])
    assert vol["secret"]["secretName"] == "pg-pass"
    assert vol["secret"]["items"] == [{"key": "pw", "path": path.rsplit("/", 1)[1]}]


# ------------------------------------------------------------ model cache, token -----


@pytest.mark.parametrize("ci", GPU_SETS)
def test_model_cache(ci):
    v = merged_values(ci)["vllm"]
    objs = rendered_objects(ci)
    c = _vllm_container(objs)
    vols = {x["name"]: x for x in pod_spec(workload(objs, "llm"))["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["model-cache"] == v["modelCache"]["mountPath"]
    assert env_value(c, "HF_HOME").startswith(v["modelCache"]["mountPath"] + "/")
    claim = vols["model-cache"]["persistentVolumeClaim"]["claimName"]
    created = by_component(objs, "PersistentVolumeClaim", "llm")
    if v["modelCache"]["existingClaim"]:
        assert claim == v["modelCache"]["existingClaim"] and not created
    else:
        (pvc,) = created
        assert claim == pvc["metadata"]["name"]
        assert pvc["spec"]["resources"]["requests"]["storage"] == v["modelCache"]["size"]
        if v["modelCache"]["storageClass"]:
            assert pvc["spec"]["storageClassName"] == v["modelCache"]["storageClass"]


def test_hf_token_never_in_plain_env(ci):
    v = merged_values(ci)["vllm"]
    objs = rendered_objects(ci)
    for w in find(objs, "Deployment") + find(objs, "StatefulSet"):
        for c in all_containers(w):
            for e in c.get("env", []):
                if "TOKEN" in e["name"] or "KEY" in e["name"]:
                    assert "value" not in e, f"{c['name']}: {e['name']} given as a plain value"
    if not v["enabled"]:
        return
    token = env(_vllm_container(objs)).get("HF_TOKEN")
    secrets = find(objs, "Secret")
    if v["hfToken"]["existingSecret"]:
        ref = token["valueFrom"]["secretKeyRef"]
        assert ref == {"name": v["hfToken"]["existingSecret"], "key": v["hfToken"]["existingSecretKey"]}
        assert not secrets
    elif v["hfToken"]["value"]:
        (secret,) = secrets
        ref = token["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    else:
        assert token is None and not secrets


def test_default_has_no_token_and_no_secret():
    objs = rendered_objects("defaults")
    assert "HF_TOKEN" not in env(_vllm_container(objs)) and not find(objs, "Secret")


# ------------------------------------------------------------------ naming ----------


def test_no_service_is_named_vllm(ci):
    objs = rendered_objects(ci)
    for svc in find(objs, "Service"):
        assert svc["metadata"]["name"] != "vllm"
        # Kubernetes would inject <NAME>_PORT=tcp://...; VLLM_PORT is vLLM's own setting
        assert svc["metadata"]["name"].upper().replace("-", "_") + "_PORT" != "VLLM_PORT"
    for w in find(objs, "Deployment") + find(objs, "StatefulSet"):
        assert pod_spec(w)["enableServiceLinks"] is False


def test_llm_service_name_even_for_a_release_called_vllm():
    from chartlib import objects_of, render_raw

    objs = objects_of(render_raw(None, name="vllm"))
    names = [s["metadata"]["name"] for s in find(objs, "Service")]
    assert "vllm" not in names and "vllm-agl-llm" in names


# -------------------------------------------------------------- security ------------


def test_security_contexts(ci):
    objs = rendered_objects(ci)
    for w in find(objs, "Deployment") + find(objs, "StatefulSet"):
        spec = pod_spec(w)
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        vols = {v["name"]: v for v in spec["volumes"]}
        for c in all_containers(w):
            sc = c["securityContext"]
            where = f"{w['metadata']['name']}/{c['name']}"
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            assert sc.get("privileged", False) is False, where
            assert sc["runAsNonRoot"] is True, where
            # a read-only root needs a writable /tmp
            tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
            assert "emptyDir" in vols[tmp["name"]], where


@pytest.mark.parametrize("ci", GPU_SETS)
def test_vllm_has_a_writable_home_and_caches(ci):
    objs = rendered_objects(ci)
    c = _vllm_container(objs)
    vols = {v["name"]: v for v in pod_spec(workload(objs, "llm"))["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    home = env_value(c, "HOME")
    assert "emptyDir" in vols[mounts[home]]
    for var in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        assert env_value(c, var).startswith(home + "/")
    assert env_value(c, "USER"), "torch looks the user name up; uid 65532 has no passwd entry"
    assert env_value(c, "VLLM_CACHE_ROOT").startswith(merged_values(ci)["vllm"]["modelCache"]["mountPath"])


# ------------------------------------------------------- monitoring, network ---------


def test_service_monitors(ci):
    vals = merged_values(ci)
    objs = rendered_objects(ci)
    sms = find(objs, "ServiceMonitor")
    if not vals["metrics"]["serviceMonitor"]["enabled"]:
        assert not sms
        return
    comps = [c for c, key in (("store", "store"), ("agentops", "agentops"), ("llm", "vllm")) if vals[key]["enabled"]]
    assert sorted(sm["metadata"]["labels"]["app.kubernetes.io/component"] for sm in sms) == sorted(comps)
    for sm in sms:
        comp = sm["metadata"]["labels"]["app.kubernetes.io/component"]
        (svc,) = by_component(objs, "Service", comp)
        assert selects(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
        assert sm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
        for k, v in vals["metrics"]["serviceMonitor"]["labels"].items():
            assert sm["metadata"]["labels"][k] == v
        ports = {p["name"] for p in svc["spec"]["ports"]}
        paths = [e["path"] for e in sm["spec"]["endpoints"]]
        assert all(e["port"] in ports for e in sm["spec"]["endpoints"])
        if comp == "llm":
            assert paths == [vals["vllm"]["metrics"]["path"], vals["vllm"]["metrics"]["proxyPath"]]
        else:
            assert paths == ["/metrics"]


def test_network_policies(ci):
    vals = merged_values(ci)
    objs = rendered_objects(ci)
    nps = find(objs, "NetworkPolicy")
    if not vals["networkPolicy"]["enabled"]:
        assert not nps
        return
    assert len(nps) == len([w for w in find(objs, "Deployment") + find(objs, "StatefulSet")])
    for np in nps:
        comp = np["metadata"]["labels"]["app.kubernetes.io/component"]
        w = workload(objs, comp)
        assert selects(np["spec"]["podSelector"]["matchLabels"], w["spec"]["template"]["metadata"]["labels"])
        (rule,) = np["spec"]["ingress"]
        port = rule["ports"][0]["port"]
        serving = [p["containerPort"] for c in all_containers(w) for p in c.get("ports", [])]
        assert port in serving
        if comp == "llm":
            assert port == 8000, "only the proxy's port; vLLM's internal port stays in the pod"
        peers = rule["from"]
        # the release's own pods (AgentOps and the proxy reach the store)
        assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "agl", "app.kubernetes.io/instance": "agl"}}} in peers
        for peer in vals["networkPolicy"]["clients"] + vals["networkPolicy"]["extraFrom"]:
            assert peer in peers


def test_ingresses(ci):
    vals = merged_values(ci)
    objs = rendered_objects(ci)
    services = {s["metadata"]["name"]: s for s in find(objs, "Service")}
    ings = find(objs, "Ingress")
    want = [key for key in ("store", "agentops", "vllm") if vals[key]["enabled"] and vals[key]["ingress"]["enabled"]]
    assert len(ings) == len(want)
    for ing in ings:
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                svc = services[backend["name"]]
                assert backend["port"]["name"] in {p["name"] for p in svc["spec"]["ports"]}


# ------------------------------------------------------------------ NOTES -----------


def test_notes_tell_what_to_export(ci):
    vals = merged_values(ci)
    text = notes(ci)
    objs = rendered_objects(ci)
    if vals["store"]["enabled"]:
        store = _store_service(objs)
        assert f"export AGL_SERVER_HOST={store['metadata']['name']}.{NAMESPACE}.svc.cluster.local" in text
        assert f"export AGL_SERVER_PORT={store['spec']['ports'][0]['port']}" in text
        assert service_url(store) in text
    if vals["vllm"]["enabled"]:
        (llm,) = by_component(objs, "Service", "llm")
        base = service_url(llm)
        assert f"{base}/v1" in text
        assert f"{base}/rollout/$ROLLOUT_ID/attempt/$ATTEMPT_ID/v1" in text
    if vals["agentops"]["enabled"]:
        (ao,) = by_component(objs, "Service", "agentops")
        url = vals["agentops"]["publicUrl"] or service_url(ao)
        for line in (
            "export AGENTOPS_API_KEY=",
            f"export AGENTOPS_API_ENDPOINT={url}",
            f"export AGENTOPS_APP_URL={url}",
            f"export AGENTOPS_EXPORTER_ENDPOINT={url}/v1/traces",
        ):
            assert line in text, line


# ------------------------------------------------------------------------ keys -------


@pytest.mark.parametrize("ci", GPU_SETS)
def test_keys_come_from_secrets_and_reach_every_component(ci):
    import copy

    from chartlib import ci_values, objects_of, render_raw

    values = copy.deepcopy(ci_values(ci))
    values["auth"] = {
        "existingSecret": "agl-key",
        "secretKey": "token",
        "adminExistingSecret": "agl-admin",
        "adminSecretKey": "admin",
        "metricsRequireKey": True,
    }
    values.setdefault("metrics", {}).setdefault("serviceMonitor", {})["enabled"] = True
    objs = objects_of(render_raw(values))

    def mounted_from(w, c, path):
        mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
        assert mount["readOnly"] is True
        vol = next(v for v in pod_spec(w)["volumes"] if v["name"] == mount["name"])
        return vol["secret"]["secretName"], vol["secret"]["items"][0]["key"]

    mode = merged_values(ci)["vllm"]["mode"]
    agl_containers = [
        ("store", "store"),
        ("agentops", "agentops"),
        ("llm", "vllm" if mode == "launcher" else "proxy"),
    ]
    for component, name in agl_containers:
        w = workload(objs, component)
        c = container(w, name)
        assert mounted_from(w, c, env_value(c, "AGL_KEY_FILE")) == ("agl-key", "token"), component
        assert mounted_from(w, c, env_value(c, "AGL_ADMIN_KEY_FILE")) == ("agl-admin", "admin")
        assert env_value(c, "AGL_METRICS_REQUIRE_KEY") == "true"
        # Never a key as a plain value in the pod spec.
        assert not {"AGL_KEY", "AGL_ADMIN_KEY", "AGL_STORE_KEY"} & set(env(c)), component
    # What calls the store sends the shared key.
    w = workload(objs, "llm")
    proxy = container(w, "vllm" if mode == "launcher" else "proxy")
    assert mounted_from(w, proxy, env_value(proxy, "AGL_STORE_KEY_FILE")) == ("agl-key", "token")
    w = workload(objs, "agentops")
    a = container(w, "agentops")
    assert mounted_from(w, a, env_value(a, "AGL_AGENTOPS_FORWARD_KEY_FILE")) == ("agl-key", "token")
    # Prometheus sends the key where /metrics requires it.
    for sm in find(objs, "ServiceMonitor"):
        for endpoint in sm["spec"]["endpoints"]:
            assert endpoint["authorization"]["credentials"] == {"name": "agl-key", "key": "token"}


def test_without_a_secret_no_key_is_configured():
    from chartlib import objects_of, render_raw

    objs = objects_of(render_raw({}))
    for component in ("store", "agentops"):
        w = workload(objs, component)
        for c in all_containers(w):
            assert not any(name.startswith(("AGL_KEY", "AGL_ADMIN_KEY")) for name in env(c))


def test_network_policies_are_on_by_default():
    from chartlib import objects_of, render_raw

    objs = objects_of(render_raw({}))
    policies = find(objs, "NetworkPolicy")
    assert {p["metadata"]["name"].rsplit("-", 1)[1] for p in policies} >= {"store", "agentops"}
