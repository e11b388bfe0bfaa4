"""Gateway configurations for tests: the YAML document as Python data, read by the gateway's own
loader.

A test writes what an operator would write (``route("api", prefix="/api", access=...)``, a
``session_config("redis", ...)`` section, ``config(...)`` for the whole document), and :func:`load`
hands it to :func:`gateway.config.load_settings_from_text`, so every gateway a test starts runs
on a configuration the loader accepted, with every check it makes. Secrets the YAML names by
file (cookie and HMAC secrets) are written by :func:`secret_file`.

The test users (:data:`USERS`) have real argon2id hashes with the cheapest parameters libargon2
accepts, so that a known user's login costs about a millisecond.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from argon2 import PasswordHasher

from gateway.config import Settings, load_settings_from_text

TEST_DATA_DIR = Path(tempfile.gettempdir()) / "gateway-tests-data"
"""``server.data_dir`` of in-process gateways: generated signing keys go here, never into the
checkout's ./.gateway."""

PUBLIC_URL = "http://gw.test"

_CHEAP = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)

PASSWORDS = {
    "alice": "alice-correct-horse",
    "bob": "bob-battery-staple",
    "carol": "carol-tr0ub4dor",
    "dave": "dave-hunter2-long",
}
ROLES = {"alice": ["admin"], "bob": ["ops", "dev"], "carol": [], "dave": ["dev"]}
USERS: dict[str, dict[str, Any]] = {
    name: {
        "username": name,
        "password_hash": _CHEAP.hash(password),
        "name": f"{name.title()} Example",
        "email": f"{name}@example.com",
        "roles": ROLES[name],
    }
    for name, password in PASSWORDS.items()
}
"""``users.inline`` entries by username."""

NO_THROTTLE = {"max_failures": 10_000, "window": "5m", "lockout": "15m"}
"""``login.throttle`` that never locks anyone out (tests of throttling set their own)."""


def users(*names: str) -> list[dict[str, Any]]:
    """``users.inline`` with the named test users (all four without names)."""
    return [dict(USERS[name]) for name in names or USERS]


def route(
    name: str,
    *,
    prefix: str | None = "/",
    access: str | Mapping[str, Any] = "public",
    upstream: str = "app",
    **options: Any,
) -> dict[str, Any]:
    """One entry of ``routes:``; ``options`` are its other keys as the YAML spells them
    (``unauthenticated="status"``, ``token={"audience": "x"}``, ``match={...}`` instead of the
    prefix, ...)."""
    match = options.pop("match", None) or {"path_prefix": prefix}
    return {"name": name, "match": dict(match), "upstream": upstream, "access": access, **options}


def secret_file(secret: bytes) -> str:
    """A file holding ``secret`` (kept under :data:`TEST_DATA_DIR`, named by its digest)."""
    assert not secret.endswith(b"\n"), "the loader drops a trailing newline"
    directory = TEST_DATA_DIR / "secrets"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / hashlib.sha256(secret).hexdigest()
    if not path.exists():
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial.write_bytes(secret)
        partial.chmod(0o600)
        partial.replace(path)
    return str(path)


COOKIE_SECRET = b"k" * 16 + bytes(range(16))


def session_config(
    backend: str = "memory",
    *,
    redis_url: str | None = None,
    redis_prefix: str | None = None,
    secret: bytes = COOKIE_SECRET,
    **options: Any,
) -> dict[str, Any]:
    """The ``session:`` section for ``backend``: ``redis`` needs ``redis_url`` and
    ``redis_prefix``, ``cookie`` seals with ``secret``; ``options`` as the YAML spells them
    (``idle_timeout``, ``cookie_name``, ...)."""
    section: dict[str, Any] = {"backend": backend, **options}
    if backend == "redis":
        assert redis_url is not None and redis_prefix is not None
        section["redis"] = {"url": redis_url, "key_prefix": redis_prefix}
    if backend == "cookie":
        section["cookie"] = {"secret_file": secret_file(secret)}
    return section


def config(
    upstreams: str | Mapping[str, Any],
    routes: Iterable[Mapping[str, Any]],
    *,
    public_url: str = PUBLIC_URL,
    listen: str = "127.0.0.1:0",
    data_dir: Path | str = TEST_DATA_DIR,
    server: Mapping[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A whole configuration document.

    ``upstreams`` is the URL of the one upstream ``app`` (read timeout 5 s), or a mapping of
    names to a URL or an upstream's settings. ``server`` adds to the ``server:`` section;
    ``sections`` are the other top-level sections (``session``, ``users``, ``login``,
    ``tokens``), as the YAML spells them.
    """
    if isinstance(upstreams, str):
        upstreams = {"app": {"url": upstreams, "read_timeout": 5}}
    return {
        "server": {
            "listen": listen,
            "public_url": public_url,
            "data_dir": str(data_dir),
            **(server or {}),
        },
        "upstreams": {
            name: {"url": value} if isinstance(value, str) else dict(value)
            for name, value in upstreams.items()
        },
        "routes": [dict(item) for item in routes],
        **{key: value for key, value in sections.items() if value is not None},
    }


def dump(document: Mapping[str, Any]) -> str:
    """``document`` as the YAML text a configuration file would hold."""
    return yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True)


def load(document: Mapping[str, Any]) -> Settings:
    """``document`` through the gateway's loader: validated, frozen settings, or the
    :class:`~gateway.config.ConfigError` listing what it refused."""
    TEST_DATA_DIR.mkdir(parents=True, exist_ok=True)
    return load_settings_from_text(dump(document), base_dir=TEST_DATA_DIR)
