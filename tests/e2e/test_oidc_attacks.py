"""Signing in through an OpenID Connect provider, against a provider that signs what the test
asks for (tests/oidc_support.FakeIssuer): every forgery a real provider never lets one make is
refused with its own page and log reason, and starts no session. (The whole flow against a real
provider, in a real browser: tests/browser/test_oidc_in_a_browser.py.)"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from tests.configs import config, route, users
from tests.oidc_support import CLIENT_ID, FakeIssuer, provider_config, wait_discovered
from tests.support import GatewayClient, MakeGateway
from tests.upstreams import Upstream, echoed

SESSION = "gw_session"
STATE = "gw_oidc"


@pytest.fixture
async def issuer() -> AsyncIterator[FakeIssuer]:
    fake = await FakeIssuer().start()
    yield fake
    await fake.stop()


def document(upstream: Upstream, issuer: str, **provider: Any) -> dict[str, Any]:
    return config(
        upstream.url,
        [route("app", prefix="/", access="authenticated")],
        users={"inline": users("alice")},
        login={"oidc": [provider_config(issuer, **provider)]},
        session=provider.pop("session", None),
    )


async def serve(make_gateway: MakeGateway, doc: dict[str, Any]) -> GatewayClient:
    gateway = await make_gateway(doc)
    await gateway.gateway.start()
    await wait_discovered(lambda: gateway.gateway.holder.current.oidc.get("corp").available)
    return gateway


class SignIn:
    """One sign-in driven by hand: the start, the provider, the callback."""

    def __init__(self, gateway: GatewayClient) -> None:
        self.gateway = gateway
        self.state_cookie = ""
        self.callback = ""

    async def start(self, rd: str = "/app/page") -> str:
        async with self.gateway.get(
            f"/.gateway/oidc/corp/start?rd={quote(rd, safe='')}", allow_redirects=False
        ) as resp:
            assert resp.status == 302, await resp.text()
            self.state_cookie = cookie_of(resp, STATE)
            return resp.headers["Location"]

    async def at_provider(self, authorize: str) -> str:
        async with (
            aiohttp.ClientSession() as http,
            http.get(authorize, allow_redirects=False) as resp,
        ):
            assert resp.status == 302
            location = resp.headers["Location"]
        parts = urlsplit(location)
        assert f"{parts.scheme}://{parts.netloc}" == "http://gw.test"
        self.callback = f"{parts.path}?{parts.query}"
        return self.callback

    async def finish(
        self, callback: str | None = None, *, state_cookie: str | None = None
    ) -> tuple[int, dict[str, str], str, str | None]:
        """The callback's status, headers, body, and the session cookie it set (if any)."""
        cookie = self.state_cookie if state_cookie is None else state_cookie
        headers = {"Accept": "text/html", **({"Cookie": f"{STATE}={cookie}"} if cookie else {})}
        async with self.gateway.get(
            callback or self.callback, headers=headers, allow_redirects=False
        ) as resp:
            session = cookie_of(resp, SESSION) if _has_cookie(resp, SESSION) else None
            return resp.status, dict(resp.headers), await resp.text(), session

    async def run(self, rd: str = "/app/page") -> tuple[int, dict[str, str], str, str | None]:
        await self.at_provider(await self.start(rd))
        return await self.finish()


def _has_cookie(resp: aiohttp.ClientResponse, name: str) -> bool:
    return any(
        morsel.key == name and morsel.value
        for header in resp.headers.getall("Set-Cookie", ())
        for morsel in SimpleCookie(header).values()
    )


def cookie_of(resp: aiohttp.ClientResponse, name: str) -> str:
    for header in resp.headers.getall("Set-Cookie", ()):
        for morsel in SimpleCookie(header).values():
            if morsel.key == name and morsel.value:
                return morsel.value
    raise AssertionError(f"no {name} cookie set: {resp.headers.getall('Set-Cookie', ())}")


def reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(record, "reason", "") for record in caplog.records]


def assert_refused(
    result: tuple[int, dict[str, str], str, str | None],
    caplog: pytest.LogCaptureFixture,
    *,
    reason: str,
    status: int = 400,
) -> None:
    code, headers, body, session = result
    assert code == status, body
    assert session is None
    assert "text/html" in headers["Content-Type"]
    assert "sign in" in body.lower() or "not allowed" in body.lower()
    assert reason in reasons(caplog)


# --- the flow, and who the upstream sees ------------------------------------------------------


async def test_sign_in_starts_a_session_whose_upstream_gets_the_mapped_identity(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer
) -> None:
    gateway = await serve(make_gateway, document(upstream, issuer.issuer))
    flow = SignIn(gateway)

    authorize = await flow.start("/app/page?x=1")
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["response_type"] == ["code"]
    assert query["redirect_uri"] == ["http://gw.test/.gateway/oidc/callback"]
    await flow.at_provider(authorize)
    status, headers, _, session = await flow.finish()

    assert status == 303 and headers["Location"] == "/app/page?x=1"
    assert session is not None
    # The code was exchanged with the PKCE verifier, whose S256 is the challenge sent.
    [exchange] = issuer.token_requests
    assert exchange["client_secret"] == "gateway-test-client-secret"
    async with gateway.get("/app/page", headers={"Cookie": f"{SESSION}={session}"}) as resp:
        assert resp.status == 200
        received = echoed(await resp.read())
    claims = jwt.decode(received.bearer, options={"verify_signature": False})
    assert claims["sub"] == "erin.sso"
    assert claims["email"] == "erin@corp.example"
    assert claims["roles"] == ["admin"]
    assert claims["idp"] == "corp"
    async with gateway.get("/.gateway/userinfo", headers={"Cookie": f"{SESSION}={session}"}) as r:
        user = (await r.json())["user"]
    assert user == {
        "username": "erin.sso",
        "name": "Erin from SSO",
        "email": "erin@corp.example",
        "roles": ["admin"],
        "idp": "corp",
    }


async def test_login_page_shows_the_form_and_the_provider_button(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer
) -> None:
    gateway = await serve(make_gateway, document(upstream, issuer.issuer))
    async with gateway.get("/.gateway/login?rd=/app") as resp:
        page = await resp.text()
    assert 'name="password"' in page
    assert 'href="/.gateway/oidc/corp/start?rd=%2Fapp"' in page
    assert "Sign in with Corp SSO" in page


# --- attacks on the browser's side --------------------------------------------------------------


async def test_forged_state_is_refused(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer, caplog: Any
) -> None:
    gateway = await serve(make_gateway, document(upstream, issuer.issuer))
    flow = SignIn(gateway)
    callback = await flow.at_provider(await flow.start())
    code = parse_qs(urlsplit(callback).query)["code"][0]

    forged = f"/.gateway/oidc/callback?code={code}&state=forged-state-value"
    assert_refused(await flow.finish(forged), caplog, reason="oidc_state_mismatch")
    assert issuer.token_requests == []  # refused before the code was ever used


async def test_callback_without_the_browser_cookie_is_refused(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer, caplog: Any
) -> None:
    """A code and state delivered to another browser (login CSRF): no cookie, no session."""
    gateway = await serve(make_gateway, document(upstream, issuer.issuer))
    flow = SignIn(gateway)
    await flow.at_provider(await flow.start())

    assert_refused(await flow.finish(state_cookie=""), caplog, reason="oidc_no_state")


async def test_replayed_callback_starts_no_second_session(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer, caplog: Any
) -> None:
    gateway = await serve(make_gateway, document(upstream, issuer.issuer))
    flow = SignIn(gateway)
    first = await flow.run()
    assert first[0] == 303 and first[3] is not None

    assert_refused(await flow.finish(), caplog, reason="oidc_state_replayed")


async def test_open_redirect_in_rd_lands_on_the_root(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer
) -> None:
    gateway = await serve(make_gateway, document(upstream, issuer.issuer))
    for rd in ("//evil.example/x", "https://evil.example", "/\\evil.example", "/%2F%2Fevil"):
        status, headers, _, session = await SignIn(gateway).run(rd)
        assert status == 303 and session is not None
        assert headers["Location"] == "/", rd


# --- forged or misdirected ID tokens ----------------------------------------------------------


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda c: {**c, "aud": "another-client"}, "oidc_token_audience"),
        (lambda c: {**c, "aud": [CLIENT_ID, "another-client"]}, "oidc_token_azp"),
        (lambda c: {**c, "azp": "another-client"}, "oidc_token_azp"),
        (lambda c: {**c, "nonce": "another-browsers-nonce"}, "oidc_token_nonce"),
        (lambda c: {k: v for k, v in c.items() if k != "nonce"}, "oidc_token_nonce"),
        (lambda c: {**c, "iss": "https://evil.example"}, "oidc_token_issuer"),
        (
            lambda c: {**c, "iat": int(time.time()) - 900, "exp": int(time.time()) - 600},
            "oidc_token_expired",
        ),
        (lambda c: {**c, "iat": int(time.time()) + 3600}, "oidc_token_invalid"),
    ],
    ids=[
        "other-audience",
        "two-audiences-no-azp",
        "other-azp",
        "wrong-nonce",
        "no-nonce",
        "other-issuer",
        "expired",
        "issued-in-the-future",
    ],
)
async def test_an_id_token_that_does_not_hold_is_refused(
    make_gateway: MakeGateway,
    upstream: Upstream,
    issuer: FakeIssuer,
    caplog: Any,
    tamper: Any,
    reason: str,
) -> None:
    gateway = await serve(make_gateway, document(upstream, issuer.issuer))
    issuer.tamper = tamper

    assert_refused(await SignIn(gateway).run(), caplog, reason=reason)


async def test_an_id_token_signed_with_an_unknown_key_is_refused(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer, caplog: Any
) -> None:
    gateway = await serve(make_gateway, document(upstream, issuer.issuer))
    issuer.sign_with_unknown_key = True

    assert_refused(await SignIn(gateway).run(), caplog, reason="oidc_unknown_key")


@pytest.mark.parametrize("alg", ["none", "HS256"])
async def test_an_id_token_with_a_forbidden_algorithm_is_refused(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer, caplog: Any, alg: str
) -> None:
    """``none``, or HS256 with the provider's public key (published in its JWKS) as the HMAC
    secret: the classic algorithm confusion."""
    gateway = await serve(make_gateway, document(upstream, issuer.issuer))
    public_pem = issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def forge(claims: dict[str, Any]) -> str:
        header = {"alg": alg, "typ": "JWT", "kid": issuer.kid}
        signing_input = f"{b64(header)}.{b64(claims)}"
        signature = b""
        if alg == "HS256":
            signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"

    issuer.forge = forge

    assert_refused(await SignIn(gateway).run(), caplog, reason="oidc_bad_algorithm")


def b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
