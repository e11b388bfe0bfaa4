"""deploy/: each gateway configuration shipped in a ConfigMap loads without a single error.

The configuration names its secrets by their path in the container (the Secret's mount). The
test checks each such path against the Pod spec (which mount holds it, and which key of which
Secret that is), creates the files as docs/deployment.md tells operators to (the real
`gateway keys generate` and `gateway hash-password`), places them under a temporary directory
with the container's layout, and loads the configuration with only those paths rewritten.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ConfigError, load_settings_from_text
from tests.deploy.deploy_support import (
    GATEWAY_CONFIG_PATH,
    VARIANTS,
    Manifest,
    find,
    gateway_workloads,
    keys_in_volume,
    mount_under,
    render,
)

PASSWORD = "correct horse battery staple"


def _file_settings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(YAML path, value) of every setting naming a file: `*_file`, `file`, `htpasswd`."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            at = f"{path}.{key}" if path else str(key)
            if isinstance(value, str) and (key in ("file", "htpasswd") or key.endswith("_file")):
                yield at, value
            else:
                yield from _file_settings(value, at)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _file_settings(item, f"{path}[{index}]")


def _gateway(*args: str, stdin: str = "") -> str:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def secret_files(tmp_path_factory: pytest.TempPathFactory) -> Mapping[str, bytes]:
    """Content for every key the Secrets hold, made as docs/deployment.md says."""
    made = tmp_path_factory.mktemp("made")
    _gateway("keys", "generate", "--out", str(made / "signing-key.pem"))
    password_hash = _gateway("hash-password", stdin=PASSWORD + "\n").strip()
    users = [
        {
            "username": "alice",
            "password_hash": password_hash,
            "name": "Alice Example",
            "email": "alice@example.com",
            "roles": ["admin"],
        }
    ]
    return {
        "signing-key.pem": (made / "signing-key.pem").read_bytes(),
        "users.yaml": yaml.safe_dump(users).encode(),
        # Random bytes, but never a trailing newline (a secret file loses one: 31 bytes then).
        "session-key": secrets.token_bytes(31) + b"k",
        "redis-password": secrets.token_urlsafe(32).encode() + b"\n",
    }


def _configmaps() -> list[Any]:
    params = []
    for variant in VARIANTS:
        for configmap in find(render(variant), "ConfigMap"):
            for key, text in (configmap.object.get("data") or {}).items():
                params.append(pytest.param(variant, configmap, key, text, id=f"{variant}-{key}"))
    return params


CONFIGMAPS = _configmaps()


def test_each_variant_ships_one_gateway_configuration() -> None:
    assert sorted(param.values[0] for param in CONFIGMAPS) == sorted(VARIANTS)
    assert {param.values[2] for param in CONFIGMAPS} == {"config.yaml"}


@pytest.mark.parametrize(("variant", "configmap", "key", "text"), CONFIGMAPS)
def test_configuration_loads_without_errors_or_warnings(
    variant: str,
    configmap: Manifest,
    key: str,
    text: str,
    secret_files: Mapping[str, bytes],
    tmp_path: Path,
) -> None:
    manifests = render(variant)
    ((workload, container),) = gateway_workloads(manifests)

    # The gateway reads this ConfigMap key at GATEWAY_CONFIG_PATH.
    config_mount = mount_under(workload, container, GATEWAY_CONFIG_PATH)
    assert config_mount is not None
    assert config_mount.volume.get("configMap", {}).get("name") == configmap.name
    shown = keys_in_volume(config_mount.volume, manifests)
    assert shown.get(GATEWAY_CONFIG_PATH.rpartition("/")[2]) == key

    # Every file the configuration names is a key of a Secret mounted in the gateway container.
    rewritten = text
    named = list(_file_settings(yaml.safe_load(text)))
    assert named, "the deployment configuration takes its secrets from files"
    for at, path in named:
        assert path.startswith("/"), f"{at}: use absolute paths to the mounted Secret"
        mount = mount_under(workload, container, path)
        assert mount is not None, f"{at}: {path} is on no volume of the gateway container"
        assert "secret" in mount.volume, f"{at}: {path} should come from a Secret"
        file_name = path[len(mount.path.rstrip("/")) + 1 :]
        secret_key = keys_in_volume(mount.volume, manifests).get(file_name)
        assert secret_key is not None, f"{at}: the Secret at {mount.path} has no {file_name}"
        stand_in = tmp_path / path.lstrip("/")
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_bytes(secret_files[secret_key])
        rewritten = re.sub(rf"(?<=[\s\"']){re.escape(path)}(?=[\s\"']|$)", str(stand_in), rewritten)
    assert rewritten.count(str(tmp_path)) == len(named), "each path is rewritten exactly once"

    config_file = tmp_path / GATEWAY_CONFIG_PATH.lstrip("/")
    try:
        settings = load_settings_from_text(
            rewritten, source=config_file, base_dir=config_file.parent, env={}
        )
    except ConfigError as exc:
        problems = str(exc)
    else:
        problems = ""
    if problems:
        pytest.fail(f"{variant}/{key} is not a valid configuration:\n{problems}", pytrace=False)
    assert settings.warnings == ()
    assert settings.server.public_url.startswith("https://")
    assert settings.server.data_dir == Path("/var/lib/gateway")
    assert settings.tokens.signing_keys, "a signing key from the Secret, never a generated one"
    assert settings.users.file is not None
