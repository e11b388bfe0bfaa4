"""Harness for the end-to-end tests of what an upstream learns about the caller (issue 4).

The gateway runs for real (``tests.support.GatewayClient``, the listener ``gateway run`` uses) in
front of the recording upstream of :mod:`tests.upstreams`, which records every request's
headers exactly as it received them. Browsers come from :mod:`tests.e2e.login.login_harness`,
users and cheap argon2 hashes from :mod:`tests.configs`; keys are written into ``tmp_path``, and
``server.data_dir`` is always ``tmp_path`` so no key is ever generated into the repository.

The fixtures are in ``conftest.py`` next to this module.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from prometheus_client import REGISTRY

from gateway.tokens import generate_private_key
from tests.configs import PASSWORDS, route, secret_file, session_config
from tests.e2e.login.login_harness import Browser, login_config
from tests.support import GatewayClient
from tests.tokens.token_helpers import b64url, b64url_json, unb64url

ISSUER = "https://issuer.gw.test"
"""``tokens.issuer``: deliberately not ``server.public_url`` (``http://gw.test``)."""
TOKENS_TTL = 120
ADMIN_TTL = 30
API_TTL = 900
API_AUDIENCE = "api-backend"
HMAC_SECRET = b"shared-with-legacy-backends-0123456789abcdef"
HMAC_KID = "legacy-hs256"
ASYMMETRIC = ("EdDSA", "ES256", "RS256")
JWKS = "/.gateway/jwks.json"
TOKEN = "/.gateway/token"
SESSION_COOKIE = "gw_session"

MakeGateway = Callable[[Mapping[str, Any]], Awaitable[GatewayClient]]


# --- keys ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyFile:
    path: Path
    alg: str
    kid: str

    @property
    def setting(self) -> dict[str, Any]:
        """Its entry in ``tokens.signing_keys``."""
        return {"file": str(self.path)}

    def private_key(self) -> Any:
        return serialization.load_pem_private_key(self.path.read_bytes(), password=None)


def write_key(directory: Path, alg: str, name: str | None = None) -> KeyFile:
    """A fresh private key of ``alg`` as PEM in ``directory``, with its RFC 7638 kid."""
    pem, kid = generate_private_key(alg)  # type: ignore[arg-type]
    path = directory / (name or f"{alg.lower()}.pem")
    path.write_bytes(pem)
    return KeyFile(path=path, alg=alg, kid=kid)


def hmac_key() -> dict[str, Any]:
    """The ``tokens.signing_keys`` entry of :data:`HMAC_SECRET` (written to a file)."""
    return {"hmac_secret_file": secret_file(HMAC_SECRET), "kid": HMAC_KID}


def sign(header: dict[str, Any], claims: dict[str, Any], key: Any, alg: str) -> str:
    """A compact JWS signed exactly as given (no library adds or checks anything)."""
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    signature = pyjwt.get_algorithm_by_name(alg).sign(signing_input.encode(), key)
    return f"{signing_input}.{b64url(signature)}"


def header_of(token: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(unb64url(token.split(".")[0]))
    return result


def claims_of(token: str) -> dict[str, Any]:
    """The payload, unverified: for asserting on what an upstream got."""
    result: dict[str, Any] = json.loads(unb64url(token.split(".")[1]))
    return result


# --- configuration ---------------------------------------------------------------------------


def standard_routes() -> list[dict[str, Any]]:
    """Every route the tests use, first match wins."""
    return [
        route("public", prefix="/public", access="public"),
        route("public-ident", prefix="/pubident", access="public", identity_headers=True),
        route("members", prefix="/members", access="authenticated"),
        route(
            "admin",
            prefix="/admin",
            access="authenticated",
            token={"audience": "admin-ui", "ttl": ADMIN_TTL},
        ),
        route("bills", prefix="/billing", access="authenticated", upstream="billing"),
        route("ident", prefix="/ident", access="authenticated", identity_headers=True),
        route(
            "api",
            prefix="/api",
            access="authenticated",
            accept_bearer=True,
            unauthenticated="status",
            identity_headers=True,
            token={"audience": API_AUDIENCE},
        ),
        route("plain-api", prefix="/plain", access="authenticated", unauthenticated="status"),
        route("web", prefix="/web", access="authenticated"),
    ]


def identity_config(
    upstream_url: str,
    data_dir: Path,
    keys: Sequence[Mapping[str, Any]],
    *,
    routes: Iterable[Mapping[str, Any]] | None = None,
    users: Iterable[Mapping[str, Any]] | None = None,
    claims: Sequence[str] = ("name", "email", "roles"),
    header: str = "Authorization",
    ttl_s: float = TOKENS_TTL,
    api_tokens: bool = False,
    backend: str = "memory",
) -> dict[str, Any]:
    """A configuration document with ``tokens:`` (``keys`` are ``signing_keys`` entries), two
    upstreams (``app`` and ``billing``) on the same recording server, and ``server.data_dir`` =
    ``data_dir``."""
    return login_config(
        {name: {"url": upstream_url, "read_timeout": 5} for name in ("app", "billing")},
        session_config(backend),
        routes=standard_routes() if routes is None else routes,
        users=users,
        data_dir=str(data_dir),
        tokens={
            "issuer": ISSUER,
            "ttl": ttl_s,
            "header": header,
            "signing_keys": [dict(key) for key in keys],
            "claims": list(claims),
            "api_tokens": {"enabled": api_tokens, "ttl": API_TTL},
        },
    )


def with_route_token(
    document: dict[str, Any], name: str, token: Mapping[str, Any]
) -> dict[str, Any]:
    """``document`` with route ``name``'s ``token:`` set to ``token``."""
    [found] = [item for item in document["routes"] if item["name"] == name]
    found["token"] = dict(token)
    return document


# --- clients ---------------------------------------------------------------------------------


async def login(client: GatewayClient, username: str = "alice") -> Browser:
    """A browser signed in as ``username`` (JSON login)."""
    browser = Browser(client)
    reply = await browser.json_login(username)
    assert reply.status == 200, reply.body
    assert browser.session
    return browser


async def api_token(client: GatewayClient, username: str = "alice") -> str:
    async with client.post(
        TOKEN, json={"username": username, "password": PASSWORDS[username]}
    ) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    token: str = body["access_token"]
    return token


async def fetch(url: str) -> tuple[int, Any, bytes]:
    """A plain HTTP GET with its own aiohttp session, as any backend would do."""
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, resp.headers, await resp.read()


class Counters:
    """Deltas of the token metrics since construction (the registry is process-global)."""

    NAMES = ("gateway_tokens_minted_total", "gateway_token_cache_hits_total")

    def __init__(self) -> None:
        self.reset()

    @staticmethod
    def _value(name: str) -> float:
        value = REGISTRY.get_sample_value(name)
        assert value is not None, f"metric {name} is not registered"
        return value

    def reset(self) -> None:
        self._start = {name: self._value(name) for name in self.NAMES}

    @property
    def minted(self) -> float:
        return self._value(self.NAMES[0]) - self._start[self.NAMES[0]]

    @property
    def hits(self) -> float:
        return self._value(self.NAMES[1]) - self._start[self.NAMES[1]]
