"""Reading deploy/: the kustomizations, their manifests and what their generators produce.

Kustomize itself is not needed: the kustomizations use only ``resources``, ``configMapGenerator``
and ``secretGenerator`` (a test asserts it), which :func:`render` reproduces, minus the content
hash kustomize appends to generated names (references then stay by the plain name).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
VARIANTS = ("sidecar", "standalone")

KUSTOMIZE_API = "kustomize.config.k8s.io/"
SUPPORTED_KUSTOMIZATION_KEYS = frozenset(
    {"apiVersion", "kind", "resources", "configMapGenerator", "secretGenerator"}
)
GENERATOR_KEYS = frozenset({"name", "type", "files"})

GATEWAY_IMAGE = "ghcr.io/example/gateway:"
GATEWAY_CONFIG_PATH = "/etc/gateway/config.yaml"


def load_yaml_documents(path: Path) -> list[Any]:
    """Every non-empty YAML document in ``path``."""
    with path.open(encoding="utf-8") as stream:
        return [document for document in yaml.safe_load_all(stream) if document is not None]


def is_kustomization(document: Mapping[str, Any]) -> bool:
    return str(document.get("apiVersion", "")).startswith(KUSTOMIZE_API)


@dataclass(frozen=True)
class Generated:
    """One ``configMapGenerator`` or ``secretGenerator`` entry."""

    kind: str
    name: str
    type: str | None
    files: tuple[tuple[str, str], ...]
    """(key in the object, file path relative to the kustomization)."""


@dataclass(frozen=True)
class Kustomization:
    variant: str
    directory: Path
    document: Mapping[str, Any]

    @property
    def resources(self) -> list[str]:
        return list(self.document.get("resources") or [])

    @property
    def generators(self) -> list[Generated]:
        found = []
        for key, kind in (("configMapGenerator", "ConfigMap"), ("secretGenerator", "Secret")):
            for entry in self.document.get(key) or []:
                files = []
                for item in entry.get("files") or []:
                    name, _, source = str(item).rpartition("=")
                    files.append((name or Path(source).name, source))
                found.append(Generated(kind, entry["name"], entry.get("type"), tuple(files)))
        return found


@cache
def kustomization(variant: str) -> Kustomization:
    directory = DEPLOY / variant
    (document,) = load_yaml_documents(directory / "kustomization.yaml")
    return Kustomization(variant, directory, document)


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object, and where it came from (for test ids and messages)."""

    variant: str
    source: str
    """``file.yaml#index`` for a written manifest, ``generator:Kind/name`` for a generated one."""
    object: Mapping[str, Any]

    @property
    def kind(self) -> str:
        return str(self.object["kind"])

    @property
    def name(self) -> str:
        return str(self.object["metadata"]["name"])

    @property
    def id(self) -> str:
        """A test id: ``sidecar:deployment.yaml#0:Deployment/legacy-app``."""
        return f"{self.variant}:{self.source}:{self.kind}/{self.name}"

    def __str__(self) -> str:
        return f"{self.variant}/{self.source} ({self.kind}/{self.name})"


def resource_manifests(variant: str) -> list[Manifest]:
    """The objects of every file listed in the variant's ``resources``, in order."""
    k = kustomization(variant)
    manifests = []
    for resource in k.resources:
        for index, document in enumerate(load_yaml_documents(k.directory / resource)):
            manifests.append(Manifest(variant, f"{resource}#{index}", document))
    return manifests


def generated_manifests(
    variant: str, secret_content: Mapping[str, bytes] | None = None
) -> list[Manifest]:
    """The ConfigMaps and Secrets the generators make.

    ConfigMap files are read from the repository. Secret files are not in the repository (the
    operator creates them), so their content is ``secret_content[key]`` or a placeholder.
    """
    k = kustomization(variant)
    manifests = []
    for generator in k.generators:
        metadata = {"name": generator.name}
        if generator.kind == "ConfigMap":
            data = {
                key: (k.directory / source).read_text(encoding="utf-8")
                for key, source in generator.files
            }
            obj: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata,
                "data": data,
            }
        else:
            content = secret_content or {}
            data = {
                key: base64.b64encode(content.get(key, b"placeholder")).decode("ascii")
                for key, _source in generator.files
            }
            obj = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": metadata,
                "type": generator.type or "Opaque",
                "data": data,
            }
        manifests.append(Manifest(variant, f"generator:{generator.kind}/{generator.name}", obj))
    return manifests


def render(variant: str) -> list[Manifest]:
    """What ``kubectl kustomize deploy/VARIANT`` produces, without the hash suffixes."""
    return resource_manifests(variant) + generated_manifests(variant)


def all_manifests() -> list[Manifest]:
    return [manifest for variant in VARIANTS for manifest in render(variant)]


def find(manifests: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [m for m in manifests if m.kind == kind and (name is None or m.name == name)]


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = find(manifests, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[str(m) for m in found]}"
    return found[0]


# --- Pods ---------------------------------------------------------------------------------------

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


def workloads(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m.kind in WORKLOAD_KINDS]


def pod_spec(workload: Manifest) -> Mapping[str, Any]:
    return workload.object["spec"]["template"]["spec"]


def pod_labels(workload: Manifest) -> Mapping[str, str]:
    return workload.object["spec"]["template"]["metadata"].get("labels") or {}


def containers(workload: Manifest) -> list[Mapping[str, Any]]:
    spec = pod_spec(workload)
    return list(spec.get("initContainers") or []) + list(spec["containers"])


def is_gateway(container: Mapping[str, Any]) -> bool:
    return str(container.get("image", "")).startswith(GATEWAY_IMAGE)


def gateway_workloads(manifests: list[Manifest]) -> list[tuple[Manifest, Mapping[str, Any]]]:
    return [(w, c) for w in workloads(manifests) for c in containers(w) if is_gateway(c)]


def container_port(container: Mapping[str, Any], port: int | str) -> int:
    """A probe's or Service's ``port`` (number or name) as the container's port number."""
    if isinstance(port, int):
        return port
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise AssertionError(f"container {container['name']} declares no port named {port!r}")


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a label selector (``matchLabels`` form or a Service's plain map) matches."""
    assert "matchExpressions" not in selector, "matchExpressions are not supported by these tests"
    match = selector.get("matchLabels", selector)
    return bool(match) and all(labels.get(key) == value for key, value in match.items())


def selected_workloads(manifests: list[Manifest], selector: Mapping[str, Any]) -> list[Manifest]:
    return [w for w in workloads(manifests) if selects(selector, pod_labels(w))]


@dataclass(frozen=True)
class Mount:
    path: str
    read_only: bool
    volume: Mapping[str, Any]


def mounts(workload: Manifest, container: Mapping[str, Any]) -> Iterator[Mount]:
    volumes = {volume["name"]: volume for volume in pod_spec(workload).get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        assert mount["name"] in volumes, f"{workload}: no volume named {mount['name']}"
        yield Mount(mount["mountPath"], bool(mount.get("readOnly")), volumes[mount["name"]])


def mount_under(workload: Manifest, container: Mapping[str, Any], path: str) -> Mount | None:
    """The mount holding ``path`` (the deepest one), or None."""
    best = None
    for mount in mounts(workload, container):
        prefix = mount.path.rstrip("/") + "/"
        if path.startswith(prefix) and (best is None or len(mount.path) > len(best.path)):
            best = mount
    return best


def keys_in_volume(volume: Mapping[str, Any], manifests: list[Manifest]) -> dict[str, str]:
    """File name in the mounted directory -> key of the ConfigMap or Secret it shows."""
    if "secret" in volume:
        source, kind, name = volume["secret"], "Secret", volume["secret"]["secretName"]
    elif "configMap" in volume:
        source, kind, name = volume["configMap"], "ConfigMap", volume["configMap"]["name"]
    else:
        return {}
    obj = one(manifests, kind, name).object
    keys = set(obj.get("data") or {}) | set(obj.get("stringData") or {})
    items = source.get("items")
    if items is None:
        return {key: key for key in keys}
    return {item["path"]: item["key"] for item in items if item["key"] in keys}
