"""deploy/: the security and availability properties the deployment promises (issue 5, point 7)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.deploy_support import (
    GATEWAY_CONFIG_PATH,
    VARIANTS,
    Manifest,
    container_port,
    containers,
    find,
    gateway_workloads,
    is_gateway,
    mount_under,
    mounts,
    one,
    pod_labels,
    pod_spec,
    render,
    selected_workloads,
    selects,
    workloads,
)

GATEWAY_UID = 10001
ADMIN_PORT = 9090
HTTP_PORT = 8080

POD_CONTAINERS = [
    pytest.param(variant, workload, container, id=f"{variant}-{workload.name}-{container['name']}")
    for variant in VARIANTS
    for workload in workloads(render(variant))
    for container in containers(workload)
]


def _config(variant: str) -> dict[str, Any]:
    configmap = one(render(variant), "ConfigMap", "gateway-config")
    config = yaml.safe_load(configmap.object["data"]["config.yaml"])
    assert isinstance(config, dict)
    return config


def _effective(workload: Manifest, container: Mapping[str, Any], key: str) -> Any:
    """A security setting as the kubelet applies it: the container's, else the Pod's."""
    own = container.get("securityContext") or {}
    if key in own:
        return own[key]
    return (pod_spec(workload).get("securityContext") or {}).get(key)


@pytest.mark.parametrize(("variant", "workload", "container"), POD_CONTAINERS)
def test_every_container_runs_unprivileged_on_a_read_only_root(
    variant: str, workload: Manifest, container: Mapping[str, Any]
) -> None:
    context = container.get("securityContext") or {}
    assert _effective(workload, container, "runAsNonRoot") is True
    uid = _effective(workload, container, "runAsUser")
    assert isinstance(uid, int) and uid > 0
    assert context.get("allowPrivilegeEscalation") is False
    assert context.get("readOnlyRootFilesystem") is True
    assert context.get("privileged") in (None, False)
    capabilities = context.get("capabilities") or {}
    assert capabilities.get("drop") == ["ALL"]
    assert not capabilities.get("add")
    seccomp = _effective(workload, container, "seccompProfile") or {}
    assert seccomp.get("type") == "RuntimeDefault"


@pytest.mark.parametrize(("variant", "workload", "container"), POD_CONTAINERS)
def test_every_container_has_cpu_and_memory_requests_and_limits(
    variant: str, workload: Manifest, container: Mapping[str, Any]
) -> None:
    resources = container.get("resources") or {}
    for bound in ("requests", "limits"):
        assert set(resources.get(bound) or {}) >= {"cpu", "memory"}, f"{bound} missing"
    assert _memory_bytes(resources["requests"]["memory"]) <= _memory_bytes(
        resources["limits"]["memory"]
    )


@pytest.mark.parametrize(("variant", "workload", "container"), POD_CONTAINERS)
def test_every_container_uses_a_tagged_image_and_no_host_namespaces(
    variant: str, workload: Manifest, container: Mapping[str, Any]
) -> None:
    image = container["image"]
    assert re.fullmatch(r"[a-z0-9.\-/]+:[\w][\w.\-]*", image), f"{image}: pin a tag"
    assert not image.endswith(":latest")
    spec = pod_spec(workload)
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert spec.get(field) in (None, False)
    assert spec.get("automountServiceAccountToken") is False
    for volume in spec.get("volumes") or []:
        assert "hostPath" not in volume


@pytest.mark.parametrize(("variant", "workload", "container"), POD_CONTAINERS)
def test_only_the_gateway_data_dir_and_tmp_dirs_are_writable(
    variant: str, workload: Manifest, container: Mapping[str, Any]
) -> None:
    for mount in mounts(workload, container):
        if "secret" in mount.volume or "configMap" in mount.volume:
            assert mount.read_only, f"{mount.path} should be mounted readOnly"
        else:
            assert "emptyDir" in mount.volume, f"{mount.path}: unexpected volume type"
            assert mount.volume["emptyDir"].get("sizeLimit"), f"{mount.path}: no sizeLimit"


@pytest.mark.parametrize("variant", VARIANTS)
def test_gateway_runs_as_the_image_user_with_probes_on_the_admin_port(variant: str) -> None:
    manifests = render(variant)
    config = _config(variant)
    found = gateway_workloads(manifests)
    assert len(found) == 1
    workload, container = found[0]
    assert _effective(workload, container, "runAsUser") == GATEWAY_UID
    assert _effective(workload, container, "runAsGroup") == GATEWAY_UID
    assert container["args"] == ["run", "-c", GATEWAY_CONFIG_PATH]
    # The probes ask the admin listener, which the configuration opens on all interfaces (the
    # kubelet probes the Pod's IP) and on the port the container declares.
    assert config["server"]["admin_listen"] == f"0.0.0.0:{ADMIN_PORT}"
    assert config["server"]["listen"] == f"0.0.0.0:{HTTP_PORT}"
    liveness = container["livenessProbe"]["httpGet"]
    readiness = container["readinessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    assert readiness["path"] == "/readyz"
    assert container_port(container, liveness["port"]) == ADMIN_PORT
    assert container_port(container, readiness["port"]) == ADMIN_PORT
    assert container_port(container, "http") == HTTP_PORT
    # The server stops within shutdown_grace, before the kubelet's SIGKILL.
    grace = pod_spec(workload)["terminationGracePeriodSeconds"]
    assert _seconds(config["server"]["shutdown_grace"]) < grace
    # data_dir is writable (an emptyDir) even on the read-only root filesystem.
    data_dir = mount_under(workload, container, config["server"]["data_dir"] + "/x")
    assert data_dir is not None and "emptyDir" in data_dir.volume and not data_dir.read_only


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_service_reaches_the_gateway_port_only(variant: str) -> None:
    manifests = render(variant)
    ((workload, gateway),) = gateway_workloads(manifests)
    services = [
        s
        for s in find(manifests, "Service")
        if selects(s.object["spec"]["selector"], pod_labels(workload))
    ]
    assert len(services) == 1
    for port in services[0].object["spec"]["ports"]:
        assert container_port(gateway, port["targetPort"]) == HTTP_PORT


# --- sidecar ------------------------------------------------------------------------------------


def test_sidecar_legacy_app_listens_on_loopback_only() -> None:
    manifests = render("sidecar")
    (deployment,) = find(manifests, "Deployment")
    pod = containers(deployment)
    apps = [c for c in pod if not is_gateway(c)]
    assert len(pod) == 2 and len(apps) == 1, "one Pod: the legacy app and the gateway"
    (app,) = apps
    command = " ".join(map(str, [*(app.get("command") or []), *(app.get("args") or [])]))
    binds = re.findall(r"\b(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:]+\]|localhost):(\d+)\b", command)
    assert binds == [("127.0.0.1", "9000")], f"the app must bind 127.0.0.1 only: {command!r}"
    assert not app.get("ports"), "the app must declare no port reachable from outside the Pod"
    # The app runs as another user and sees none of the gateway's secrets.
    (gateway,) = [c for c in pod if is_gateway(c)]
    assert _effective(deployment, app, "runAsUser") != _effective(deployment, gateway, "runAsUser")
    assert not any("secret" in mount.volume for mount in mounts(deployment, app))
    assert not pod_spec(deployment).get("shareProcessNamespace")
    assert "0.0.0.0" not in command and "::" not in command
    upstream = urlsplit(_config("sidecar")["upstreams"]["app"]["url"])
    assert (upstream.hostname, upstream.port) == ("127.0.0.1", 9000)
    # The app outlives the gateway's drain on shutdown.
    prestop = app["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert _seconds(_config("sidecar")["server"]["shutdown_grace"]) < prestop
    assert prestop < pod_spec(deployment)["terminationGracePeriodSeconds"]


def test_sidecar_keeps_sessions_without_a_shared_store() -> None:
    config = _config("sidecar")
    (deployment,) = find(render("sidecar"), "Deployment")
    assert config["session"]["backend"] == "cookie"
    assert config["session"]["cookie"]["secret_file"].startswith("/run/secrets/")
    assert config["server"]["workers"] == 1
    assert deployment.object["spec"]["replicas"] == 1


# --- standalone ---------------------------------------------------------------------------------


def test_standalone_runs_three_gateway_replicas_spread_over_nodes() -> None:
    manifests = render("standalone")
    ((workload, _gateway),) = gateway_workloads(manifests)
    spec = workload.object["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = pod_spec(workload)
    spread = [
        c
        for c in pod.get("topologySpreadConstraints") or []
        if c["topologyKey"] == "kubernetes.io/hostname"
        and selects(c["labelSelector"], pod_labels(workload))
    ]
    anti = (pod.get("affinity") or {}).get("podAntiAffinity")
    assert spread or anti, "replicas must be spread over nodes"


def test_standalone_disruption_budget_keeps_two_replicas() -> None:
    manifests = render("standalone")
    ((workload, _gateway),) = gateway_workloads(manifests)
    (budget,) = find(manifests, "PodDisruptionBudget")
    spec = budget.object["spec"]
    assert selected_workloads(manifests, spec["selector"]) == [workload]
    assert spec.get("minAvailable") == 2 or spec.get("maxUnavailable") == 1


def test_standalone_shares_sessions_and_one_key_through_redis() -> None:
    manifests = render("standalone")
    config = _config("standalone")
    session = config["session"]
    assert session["backend"] == "redis"
    assert session["redis"]["password_file"].startswith("/run/secrets/")
    redis_url = urlsplit(session["redis"]["url"])
    service = one(manifests, "Service", redis_url.hostname)
    assert [p["port"] for p in service.object["spec"]["ports"]] == [redis_url.port]
    (redis,) = selected_workloads(manifests, service.object["spec"]["selector"])
    assert redis.object["spec"]["replicas"] == 1
    assert [key["file"] for key in config["tokens"]["signing_keys"]] == [
        "/run/secrets/gateway/signing-key.pem"
    ]


def _ingress_only_from_gateway(manifests: list[Manifest], target: Manifest, port: int) -> None:
    ((gateway, _container),) = gateway_workloads(manifests)
    policies = [
        p
        for p in find(manifests, "NetworkPolicy")
        if selects(p.object["spec"]["podSelector"], pod_labels(target))
    ]
    assert policies, f"no NetworkPolicy selects {target}"
    for policy in policies:
        spec = policy.object["spec"]
        assert "Ingress" in spec["policyTypes"]
        for rule in spec.get("ingress") or []:
            peers = rule.get("from")
            assert peers, f"{policy}: a rule without `from` admits everyone"
            for peer in peers:
                assert set(peer) == {"podSelector"}, f"{policy}: only Pod peers, same namespace"
                assert selected_workloads(manifests, peer["podSelector"]) == [gateway]
            assert [p["port"] for p in rule.get("ports") or []] == [port]


def test_standalone_upstream_app_is_reachable_only_from_gateway_pods() -> None:
    manifests = render("standalone")
    upstream = urlsplit(_config("standalone")["upstreams"]["app"]["url"])
    service = one(manifests, "Service", upstream.hostname)
    (port,) = service.object["spec"]["ports"]
    assert port["port"] == upstream.port
    (app,) = selected_workloads(manifests, service.object["spec"]["selector"])
    assert not any(is_gateway(c) for c in containers(app))
    (container,) = containers(app)
    _ingress_only_from_gateway(manifests, app, container_port(container, port["targetPort"]))


def test_standalone_redis_is_reachable_only_from_gateway_pods() -> None:
    manifests = render("standalone")
    redis = one(manifests, "Deployment", "redis")
    (container,) = containers(redis)
    _ingress_only_from_gateway(manifests, redis, container_port(container, "redis"))


# --- helpers ------------------------------------------------------------------------------------

_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "k": 1000, "M": 1000**2, "G": 1000**3}


def _memory_bytes(quantity: str | int) -> int:
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", str(quantity))
    assert match and match.group(2) in (*_UNITS, ""), f"unsupported quantity {quantity!r}"
    return int(match.group(1)) * _UNITS.get(match.group(2), 1)


def _seconds(duration: str | int) -> int:
    match = re.fullmatch(r"(\d+)(s|m)?", str(duration))
    assert match, f"unsupported duration {duration!r}"
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)
