"""OpenID Connect providers for tests, both on loopback.

- :class:`RealProvider`: the npm package ``oidc-provider`` run by Node (``tests/oidc/provider.mjs``,
  installed by ``npm ci --prefix tests/oidc``, which ``.ci/run`` does). Without Node or the
  package the tests that need it skip, saying how to enable them; under ``CI=true`` they fail.
  Its issuer is ``http://localhost:PORT``: another site than the gateway's ``127.0.0.1``, as a
  real provider is, so the browser's return to the callback is a cross-site navigation.
- :class:`FakeIssuer`: a small aiohttp server playing a provider that signs whatever the test
  asks for (another audience, another nonce, an unknown key, an expired token, a logout token
  with a nonce...): for the attacks a real provider never lets one make.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

PROVIDER_DIR = Path(__file__).resolve().parent / "oidc"
CLIENT_ID = "gateway"
CLIENT_SECRET = "gateway-test-client-secret"
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


def require_node() -> str:
    """The node binary, with oidc-provider installed; else skip (fail under CI)."""
    node = shutil.which("node")
    installed = (PROVIDER_DIR / "node_modules" / "oidc-provider" / "package.json").exists()
    if node is None or not installed:
        missing = "Node.js (20 or later)" if node is None else "the npm package oidc-provider"
        message = (
            f"needs {missing}: install Node.js and npm, then run "
            "`npm ci --prefix tests/oidc` (as .ci/run does)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"OpenID provider required in CI: {message}", pytrace=False)
        pytest.skip(message)
    assert node is not None
    return node


class RealProvider:
    """``node tests/oidc/provider.mjs`` with one client per gateway given."""

    def __init__(self, clients: list[dict[str, Any]], *, host: str = "localhost") -> None:
        node = require_node()
        config = {"host": host, "clients": clients}
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self._process = subprocess.Popen(
            [node, str(PROVIDER_DIR / "provider.mjs"), json.dumps(config)],
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=PROVIDER_DIR,
            start_new_session=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().decode()
        if not line.startswith("listening "):
            self.stop()
            pytest.fail(f"oidc-provider did not start: {line!r}")
        self.issuer = line.split()[1]

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._log.close()

    @property
    def log(self) -> str:
        """What the provider wrote to stderr (deliveries of back-channel logout, errors)."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")


def gateway_client(
    gateway_urls: list[str], *, provider: str = "corp", backchannel: str | None = None
) -> dict[str, Any]:
    """The provider's registration of the gateway(s) at ``gateway_urls`` (their public_url)."""
    client: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uris": [f"{url}/.gateway/oidc/callback" for url in gateway_urls],
        "post_logout_redirect_uris": [f"{url}/.gateway/login" for url in gateway_urls],
    }
    if backchannel is not None:
        client["backchannel_logout_uri"] = (
            f"{backchannel}/.gateway/oidc/{provider}/backchannel-logout"
        )
    return client


def provider_config(issuer: str, **fields: Any) -> dict[str, Any]:
    """One entry of ``login.oidc`` for the test client."""
    return {
        "name": "corp",
        "label": "Sign in with Corp SSO",
        "issuer": issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scopes": ["openid", "email", "profile", "groups"],
        **fields,
    }


# --- a provider that signs what the test asks for --------------------------------------------


def _b64(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class FakeIssuer:
    """Discovery, JWKS, an authorization endpoint that signs in at once, a token endpoint
    minting an ID token shaped by :attr:`tamper`, and :meth:`logout_token`."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "fake-1"
        self.tamper: Callable[[dict[str, Any]], dict[str, Any]] = lambda claims: claims
        """Changes the ID token's claims before signing."""
        self.sign_with_unknown_key = False
        self.forge: Callable[[dict[str, Any]], str] | None = None
        """Makes the ID token from its claims instead of signing it with the key."""
        self.codes: dict[str, dict[str, Any]] = {}
        self.token_requests: list[dict[str, str]] = []
        self.jwks_fetches = 0
        self.extra_keys: list[dict[str, Any]] = []
        """More JWKs the provider publishes beside its signing key."""
        self.discovery_extra: dict[str, Any] = {}
        """More fields of the discovery document."""
        self.subject = "fake-user-1"
        self.claims: dict[str, Any] = {
            "preferred_username": "erin.sso",
            "email": "erin@corp.example",
            "email_verified": True,
            "name": "Erin from SSO",
            "groups": ["admin"],
            "sid": "fake-session-1",
        }
        self._runner: web.AppRunner | None = None
        self.issuer = ""

    async def start(self, port: int = 0) -> FakeIssuer:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.issuer = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def jwk(self) -> dict[str, str]:
        numbers = self.key.public_key().public_numbers()
        return {"kty": "RSA", "kid": self.kid, "alg": "RS256", "use": "sig",
                "n": _b64(numbers.n), "e": _b64(numbers.e)}  # fmt: skip

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "end_session_endpoint": f"{self.issuer}/logout",
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_post"],
                **self.discovery_extra,
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response({"keys": [self.jwk(), *self.extra_keys]})

    def rotate(self) -> None:
        """A new signing key under a new kid, published in place of the old one."""
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = f"fake-{secrets.token_hex(4)}"

    async def _authorize(self, request: web.Request) -> web.Response:
        query = request.query
        code = secrets.token_urlsafe(16)
        self.codes[code] = dict(query)
        location = (
            query["redirect_uri"]
            + "?"
            + urlencode({"code": code, "state": query["state"], "iss": self.issuer})
        )
        raise web.HTTPFound(location)

    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.token_requests.append({k: str(v) for k, v in form.items()})
        started = self.codes.pop(str(form.get("code")), None)
        if started is None:
            return web.json_response({"error": "invalid_grant"}, status=400)
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": self.subject,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": started["nonce"],
            **self.claims,
        }
        claims = self.tamper(claims)
        key = self.other_key if self.sign_with_unknown_key else self.key
        kid = "unknown-kid" if self.sign_with_unknown_key else self.kid
        if self.forge is not None:
            token = self.forge(claims)
        else:
            token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
        return web.json_response({"access_token": "at", "token_type": "Bearer", "id_token": token})

    def logout_token(self, **changes: Any) -> str:
        """A logout token for the fake user's session; ``changes`` override claims (``None``
        removes one)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 120,
            "jti": secrets.token_urlsafe(12),
            "sub": self.subject,
            "sid": self.claims["sid"],
            "events": {BACKCHANNEL_EVENT: {}},
        }
        for name, value in changes.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return jwt.encode(
            claims, self.key, algorithm="RS256", headers={"kid": self.kid, "typ": "logout+jwt"}
        )


@contextlib.asynccontextmanager
async def fake_issuer():  # type: ignore[no-untyped-def]
    issuer = await FakeIssuer().start()
    try:
        yield issuer
    finally:
        await issuer.stop()


async def wait_discovered(check: Callable[[], Any], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the provider was never discovered"
        await asyncio.sleep(0.05)
