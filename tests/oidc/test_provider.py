"""gateway.oidc.provider: discovery, the provider's keys, and a provider that misbehaves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp import web

from gateway.config.settings import OidcProviderSettings
from gateway.oidc import provider as provider_module
from gateway.oidc.provider import Provider
from gateway.oidc.verify import TokenRejected, verify_id_token
from tests.oidc_support import CLIENT_ID, FakeIssuer


@pytest.fixture
async def issuer() -> AsyncIterator[FakeIssuer]:
    fake = await FakeIssuer().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def make_provider() -> AsyncIterator[Any]:
    made: list[Provider] = []

    def make(issuer: str) -> Provider:
        provider = Provider(
            OidcProviderSettings(name="corp", label="Corp", issuer=issuer, client_id=CLIENT_ID)
        )
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


def id_token(issuer: FakeIssuer, **changes: Any) -> str:
    now = int(time.time())
    claims = {"iss": issuer.issuer, "sub": "u", "aud": CLIENT_ID, "iat": now, "exp": now + 60,
              "nonce": "n", **changes}  # fmt: skip
    return jwt.encode(claims, issuer.key, algorithm="RS256", headers={"kid": issuer.kid})


async def test_discovery_learns_the_endpoints_and_keys(make_provider, issuer) -> None:
    provider = make_provider(issuer.issuer)
    assert not provider.available

    assert await provider.discover()

    assert provider.metadata is not None
    assert provider.metadata.token_endpoint == f"{issuer.issuer}/token"
    assert provider.metadata.end_session_endpoint == f"{issuer.issuer}/logout"
    assert provider.metadata.algorithms == frozenset({"RS256"})
    assert (await verify_id_token(provider, id_token(issuer), nonce="n", now=time.time()))[
        "sub"
    ] == "u"


async def test_a_rotated_key_is_fetched_when_a_token_names_it(
    make_provider, issuer, monkeypatch
) -> None:
    provider = make_provider(issuer.issuer)
    assert await provider.discover()
    monkeypatch.setattr(provider_module, "JWKS_MIN_REFRESH_S", 0.0)
    issuer.rotate()

    claims = await verify_id_token(provider, id_token(issuer), nonce="n", now=time.time())

    assert claims["sub"] == "u"
    assert issuer.jwks_fetches == 2


async def test_unknown_kids_refresh_the_keys_at_most_once_per_interval(
    make_provider, issuer
) -> None:
    provider = make_provider(issuer.issuer)
    assert await provider.discover()
    for attempt in range(20):
        forged = jwt.encode(
            {"iss": issuer.issuer, "aud": CLIENT_ID, "sub": "u"},
            issuer.other_key,
            algorithm="RS256",
            headers={"kid": f"made-up-{attempt}"},
        )
        with pytest.raises(TokenRejected) as refused:
            await verify_id_token(provider, forged, nonce="n", now=time.time())
        assert refused.value.reason == "oidc_unknown_key"
    # At discovery; the first unknown kid may not refresh yet (30 s have not passed), nor may
    # the nineteen after it: a stream of made-up kids costs the provider nothing.
    assert issuer.jwks_fetches == 1


async def serve(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def test_a_provider_that_never_answers_is_given_up_after_the_timeout(
    make_provider, monkeypatch, caplog
) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    runner, url = await serve(hang)
    monkeypatch.setattr(provider_module, "TIMEOUT_S", 0.5)
    try:
        provider = make_provider(url)
        started = time.monotonic()
        assert not await provider.discover()
        assert time.monotonic() - started < 5
        assert "oidc_unavailable" in [getattr(r, "reason", "") for r in caplog.records]
        assert provider.retry_at > time.monotonic()  # not tried again at once
    finally:
        release.set()
        await runner.cleanup()


async def test_an_oversized_document_is_refused_unread(make_provider, caplog) -> None:
    async def huge(request: web.Request) -> web.Response:
        return web.json_response({"issuer": "x", "padding": "x" * (300 * 1024)})

    runner, url = await serve(huge)
    try:
        provider = make_provider(url)
        assert not await provider.discover()
        assert "oidc_too_large" in [getattr(r, "reason", "") for r in caplog.records]
    finally:
        await runner.cleanup()


async def test_symmetric_keys_in_the_jwks_are_never_used(make_provider, issuer) -> None:
    """An HMAC "key" published by the provider would let anyone who read the JWKS sign."""
    issuer.extra_keys = [
        {
            "kty": "oct",
            "kid": "shared",
            "alg": "HS256",
            "k": "c3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3M",
        }
    ]
    provider = make_provider(issuer.issuer)
    assert await provider.discover()
    assert provider.metadata is not None
    # Even were the provider to advertise HS256 for ID tokens:
    object.__setattr__(provider.metadata, "algorithms", frozenset({"RS256", "HS256"}))
    forged = jwt.encode(
        {"iss": issuer.issuer, "aud": CLIENT_ID, "sub": "u", "nonce": "n",
         "iat": int(time.time()), "exp": int(time.time()) + 60},
        b"s" * 32, algorithm="HS256", headers={"kid": "shared"},
    )  # fmt: skip

    with pytest.raises(TokenRejected):
        await verify_id_token(provider, forged, nonce="n", now=time.time())
