"""deploy/: every manifest is valid against the Kubernetes schemas (offline), the kustomizations
are complete, and every name one object uses to refer to another resolves."""

from __future__ import annotations

import subprocess
from pathlib import Path

import kubernetes_validate
import pytest

from tests.deploy.deploy_support import (
    DEPLOY,
    GENERATOR_KEYS,
    REPO,
    SUPPORTED_KUSTOMIZATION_KEYS,
    VARIANTS,
    Manifest,
    all_manifests,
    container_port,
    containers,
    find,
    is_kustomization,
    keys_in_volume,
    kustomization,
    load_yaml_documents,
    one,
    pod_spec,
    render,
    selected_workloads,
    workloads,
)

# The schemas bundled with kubernetes-validate: the oldest Kubernetes the manifests are written
# for (the preStop `sleep` action is on by default from 1.30) and the newest the package ships.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")

MANIFESTS = all_manifests()


def test_deploy_holds_exactly_the_documented_variants() -> None:
    found = sorted(path.parent.name for path in DEPLOY.glob("*/kustomization.yaml"))
    assert found == sorted(VARIANTS)


def test_every_yaml_file_in_deploy_is_a_kustomization_resource_or_generator_input() -> None:
    used = set()
    for variant in VARIANTS:
        k = kustomization(variant)
        used.add(k.directory / "kustomization.yaml")
        used.update(k.directory / resource for resource in k.resources)
        used.update(
            k.directory / source for generator in k.generators for _key, source in generator.files
        )
    yaml_files = {*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")}
    assert yaml_files - used == set(), "YAML files in deploy/ that no kustomization uses"


@pytest.mark.parametrize("variant", VARIANTS)
def test_kustomization_lists_existing_files_and_uses_only_what_the_tests_render(
    variant: str,
) -> None:
    k = kustomization(variant)
    assert is_kustomization(k.document)
    assert k.document["kind"] == "Kustomization"
    # render() reproduces exactly these features; anything else would go unvalidated.
    assert set(k.document) <= SUPPORTED_KUSTOMIZATION_KEYS
    for resource in k.resources:
        path = k.directory / resource
        assert path.is_file(), f"{variant}: resource {resource} does not exist"
        assert path.resolve().parent == k.directory.resolve(), f"{resource}: not in {variant}/"
        assert not any(map(is_kustomization, load_yaml_documents(path)))
    assert len(set(k.resources)) == len(k.resources), "a resource is listed twice"
    # Every manifest file of the directory is applied (config.yaml goes in through the generator).
    generator_inputs = {source for g in k.generators for _key, source in g.files}
    manifests_in_dir = {
        path.name
        for path in k.directory.iterdir()
        if path.suffix in (".yaml", ".yml") and path.name != "kustomization.yaml"
    }
    assert manifests_in_dir - set(k.resources) - generator_inputs == set()


@pytest.mark.parametrize("variant", VARIANTS)
def test_generators_read_the_config_from_the_repository_and_secrets_from_an_ignored_dir(
    variant: str,
) -> None:
    k = kustomization(variant)
    for key in ("configMapGenerator", "secretGenerator"):
        for entry in k.document.get(key) or []:
            assert set(entry) <= GENERATOR_KEYS, f"{variant}: {key} {entry.get('name')}"
    assert sorted(g.kind for g in k.generators) == ["ConfigMap", "Secret"]
    for generator in k.generators:
        for _key, source in generator.files:
            if generator.kind == "ConfigMap":
                assert (k.directory / source).is_file(), f"{variant}: {source} is missing"
            else:
                # Operators create these (docs/deployment.md); they must never be committed.
                assert source.startswith("secrets/"), source
                assert _git_ignores(k.directory / source), f"{variant}: {source} is not ignored"
    assert not _git_ignores(k.directory / "secrets" / ".gitignore")


def _git_ignores(path: Path) -> bool:
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", str(path.relative_to(REPO))],
        cwd=REPO,
        check=False,
    )
    assert result.returncode in (0, 1), "git check-ignore failed"
    return result.returncode == 0


def test_every_manifest_is_checked() -> None:
    kinds = sorted({manifest.kind for manifest in MANIFESTS})
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Secret",
        "Service",
    ]
    for manifest in MANIFESTS:
        assert not is_kustomization(manifest.object)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda manifest: manifest.id)
def test_manifest_is_valid_against_the_kubernetes_schema(manifest: Manifest, version: str) -> None:
    try:
        kubernetes_validate.validate(dict(manifest.object), version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(part) for part in exc.path) or "(top)"
        problem = f"{manifest}: {where}: {exc.message} (Kubernetes {exc.version} schema)"
    else:
        return
    pytest.fail(problem, pytrace=False)


@pytest.mark.parametrize("variant", VARIANTS)
def test_names_are_unique_per_kind(variant: str) -> None:
    seen = [(m.kind, m.name) for m in render(variant)]
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("variant", VARIANTS)
def test_volumes_and_env_refer_to_existing_configmaps_secrets_and_keys(variant: str) -> None:
    manifests = render(variant)
    for workload in workloads(manifests):
        for volume in pod_spec(workload).get("volumes") or []:
            source = volume.get("secret") or volume.get("configMap")
            if source is None:
                continue
            # keys_in_volume asserts the object exists; every listed item must name a real key.
            shown = keys_in_volume(volume, manifests)
            assert len(shown) == len(source.get("items") or shown), (
                f"{workload}: volume {volume['name']} lists a key its object lacks"
            )
        for container in containers(workload):
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    secret = one(manifests, "Secret", ref["name"]).object
                    assert ref["key"] in secret["data"]
            mounted = [mount["name"] for mount in container.get("volumeMounts") or []]
            declared = {volume["name"] for volume in pod_spec(workload).get("volumes") or []}
            assert set(mounted) <= declared, f"{workload}/{container['name']}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_services_select_one_workload_and_target_declared_ports(variant: str) -> None:
    manifests = render(variant)
    for service in find(manifests, "Service"):
        targets = selected_workloads(manifests, service.object["spec"]["selector"])
        assert len(targets) == 1, f"{service}: selects {[str(t) for t in targets]}"
        declared = [port for c in containers(targets[0]) for port in c.get("ports") or []]
        for port in service.object["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            field = "name" if isinstance(target, str) else "containerPort"
            assert any(d.get(field) == target for d in declared), (
                f"{service}: targetPort {target} is not a declared container port"
            )


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_use_declared_ports(variant: str) -> None:
    for workload in workloads(render(variant)):
        for container in containers(workload):
            for probe_kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = container.get(probe_kind)
                if probe is None:
                    continue
                handler = probe.get("httpGet") or probe.get("tcpSocket")
                if handler is not None:
                    container_port(container, handler["port"])  # asserts the name exists
