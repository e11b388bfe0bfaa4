"""Signing in through an OpenID Connect provider, against a provider that signs what the test
asks for (tests/oidc_support.FakeIssuer): every forgery a real provider never lets one make is
refused with its own page and log reason, and starts no session. (The whole flow against a real
provider, in a real browser: tests/browser/test_oidc_in_a_browser.py.)"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.reload import reload
from tests.configs import config, dump, route, session_config, users
from tests.oidc_support import CLIENT_ID, FakeIssuer, provider_config, wait_discovered
from tests.redis_support import free_port
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
    session = provider.pop("session", None)
    return config(
        upstream.url,
        [route("app", prefix="/", access="authenticated")],
        users={"inline": users("alice")},
        login={"oidc": [provider_config(issuer, **provider)]},
        session=session,
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


async def test_signing_in_ends_the_session_the_browser_had(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer
) -> None:
    """Session fixation: the browser's earlier session (perhaps planted) ends; a new id."""
    gateway = await serve(make_gateway, document(upstream, issuer.issuer))
    _, _, _, planted = await SignIn(gateway).run()
    flow = SignIn(gateway)
    await flow.at_provider(await flow.start())
    async with gateway.get(
        flow.callback,
        headers={"Cookie": f"{STATE}={flow.state_cookie}; {SESSION}={planted}"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
        fresh = cookie_of(resp, SESSION)

    assert fresh != planted
    assert not await alive(gateway, planted)
    assert await alive(gateway, fresh)


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


# --- who may sign in --------------------------------------------------------------------------


async def test_a_user_the_allowed_rules_do_not_admit_gets_no_session(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer, caplog: Any
) -> None:
    doc = document(upstream, issuer.issuer, allowed={"email_domains": ["example.com"]})
    gateway = await serve(make_gateway, doc)

    assert_refused(await SignIn(gateway).run(), caplog, reason="oidc_not_allowed", status=403)


async def test_an_unverified_email_of_an_allowed_domain_does_not_admit(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer, caplog: Any
) -> None:
    doc = document(upstream, issuer.issuer, allowed={"email_domains": ["corp.example"]})
    gateway = await serve(make_gateway, doc)
    issuer.claims["email_verified"] = False

    assert_refused(await SignIn(gateway).run(), caplog, reason="oidc_not_allowed", status=403)
    issuer.claims["email_verified"] = True
    status, _, _, session = await SignIn(gateway).run()
    assert status == 303 and session is not None


async def test_a_provider_user_cannot_take_a_local_users_name(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer, caplog: Any
) -> None:
    gateway = await serve(make_gateway, document(upstream, issuer.issuer))
    issuer.claims["preferred_username"] = "alice"  # a local user of this gateway

    assert_refused(await SignIn(gateway).run(), caplog, reason="oidc_username_taken", status=403)


async def test_groups_map_to_roles_for_access_rules(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer
) -> None:
    doc = document(upstream, issuer.issuer)
    doc["routes"] = [
        route("admin", prefix="/admin", access={"roles": ["admin"]}),
        route("ops", prefix="/ops", access={"roles": ["ops"]}),
    ]
    gateway = await serve(make_gateway, doc)
    _, _, _, session = await SignIn(gateway).run("/admin")
    cookie = {"Cookie": f"{SESSION}={session}"}

    async with gateway.get("/admin/x", headers=cookie) as resp:
        assert resp.status == 200
    async with gateway.get("/ops/x", headers=cookie) as resp:
        assert resp.status == 403


# --- the provider down ------------------------------------------------------------------------


async def test_a_provider_down_at_start_up_is_unavailable_then_retried(
    make_gateway: MakeGateway, upstream: Upstream, caplog: Any
) -> None:
    port = free_port()
    doc = document(upstream, f"http://127.0.0.1:{port}")
    gateway = await make_gateway(doc)
    await gateway.gateway.start()
    async with gateway.get("/.gateway/login") as resp:
        assert resp.status == 200  # the gateway serves; the form works
        page = await resp.text()
    assert "Sign in with Corp SSO (unavailable)" in page
    assert "/.gateway/oidc/corp/start" not in page
    async with gateway.get("/.gateway/oidc/corp/start", headers={"Accept": "text/html"}) as r:
        assert r.status == 503
        assert "cannot be reached" in await r.text()
        assert not _has_cookie(r, STATE)
    assert "oidc_unavailable" in reasons(caplog)

    late = await FakeIssuer().start(port=port)
    try:
        await wait_discovered(
            lambda: gateway.gateway.holder.current.oidc.get("corp").available, timeout=30
        )
        async with gateway.get("/.gateway/login") as resp:
            assert 'href="/.gateway/oidc/corp/start?rd=%2F"' in await resp.text()
        status, _, _, session = await SignIn(gateway).run()
        assert status == 303 and session is not None
    finally:
        await late.stop()


async def test_a_discovery_document_of_another_issuer_is_not_used(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer, caplog: Any
) -> None:
    # The same server, named with a trailing slash: not the issuer its document states.
    gateway = await make_gateway(document(upstream, issuer.issuer + "/"))
    await gateway.gateway.start()
    await wait_discovered(lambda: "oidc_issuer_mismatch" in reasons(caplog))
    assert not gateway.gateway.holder.current.oidc.get("corp").available


# --- logout -----------------------------------------------------------------------------------


async def test_logout_continues_at_the_providers_end_session_endpoint(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer
) -> None:
    gateway = await serve(make_gateway, document(upstream, issuer.issuer))
    _, _, _, session = await SignIn(gateway).run()
    cookie = f"{SESSION}={session}"
    async with gateway.get("/.gateway/logout", headers={"Cookie": cookie}) as resp:
        csrf = cookie_of(resp, "gw_csrf")
        # The form may continue at the provider: browsers hold its redirects to form-action.
        assert f"form-action 'self' {issuer.issuer}" in resp.headers["Content-Security-Policy"]

    async with gateway.post(
        "/.gateway/logout",
        data={"csrf": csrf},
        headers={"Cookie": f"{cookie}; gw_csrf={csrf}", "Origin": "http://gw.test"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
        location = urlsplit(resp.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{issuer.issuer}/logout"
    query = parse_qs(location.query)
    assert query["post_logout_redirect_uri"] == ["http://gw.test/.gateway/login"]
    assert query["client_id"] == [CLIENT_ID]
    hint = jwt.decode(query["id_token_hint"][0], options={"verify_signature": False})
    assert hint["sub"] == issuer.subject and hint["aud"] == CLIENT_ID
    async with gateway.get("/app", headers={"Cookie": cookie}) as resp:
        assert resp.status == 401  # our session ended first


# --- back-channel logout ----------------------------------------------------------------------


async def backchannel(gateway: GatewayClient, token: str) -> int:
    async with gateway.post(
        "/.gateway/oidc/corp/backchannel-logout", data={"logout_token": token}
    ) as resp:
        return resp.status


async def alive(gateway: GatewayClient, session: str | None) -> bool:
    async with gateway.get("/app", headers={"Cookie": f"{SESSION}={session}"}) as resp:
        return resp.status == 200


@pytest.mark.parametrize("backend", ["memory", "redis", "cookie"])
async def test_back_channel_logout_ends_the_sessions_of_that_provider_session(
    make_gateway: MakeGateway,
    upstream: Upstream,
    issuer: FakeIssuer,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    options: dict[str, Any] = {}
    if backend == "redis":
        options = {
            "redis_url": request.getfixturevalue("redis_url"),
            "redis_prefix": request.getfixturevalue("redis_prefix"),
        }
    doc = document(upstream, issuer.issuer, session=session_config(backend, **options))
    gateway = await serve(make_gateway, doc)
    _, _, _, first = await SignIn(gateway).run()
    _, _, _, second = await SignIn(gateway).run()
    issuer.claims["sid"] = "fake-session-2"
    _, _, _, other = await SignIn(gateway).run()
    assert await alive(gateway, first) and await alive(gateway, other)

    assert await backchannel(gateway, issuer.logout_token(sid="fake-session-1")) == 200

    assert not await alive(gateway, first)
    assert not await alive(gateway, second)
    assert await alive(gateway, other)

    assert await backchannel(gateway, issuer.logout_token(sid=None)) == 200  # by sub: all
    assert not await alive(gateway, other)


async def test_back_channel_logout_holds_on_every_replica_with_redis(
    make_gateway: MakeGateway,
    upstream: Upstream,
    issuer: FakeIssuer,
    redis_url: str,
    redis_prefix: str,
) -> None:
    session = session_config("redis", redis_url=redis_url, redis_prefix=redis_prefix)
    replica_a = await serve(make_gateway, document(upstream, issuer.issuer, session=session))
    replica_b = await serve(make_gateway, document(upstream, issuer.issuer, session=session))
    _, _, _, cookie = await SignIn(replica_a).run()
    assert await alive(replica_b, cookie)

    assert await backchannel(replica_b, issuer.logout_token()) == 200

    assert not await alive(replica_a, cookie)
    assert not await alive(replica_b, cookie)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"nonce": "n-1"}, "oidc_logout_token_invalid"),
        ({"events": None}, "oidc_logout_token_invalid"),
        ({"events": {"http://schemas.openid.net/event/other": {}}}, "oidc_logout_token_invalid"),
        ({"sid": None, "sub": None}, "oidc_logout_token_invalid"),
        ({"aud": "another-client"}, "oidc_token_audience"),
        ({"iss": "https://evil.example"}, "oidc_token_issuer"),
        ({"jti": None}, "oidc_token_invalid"),
        ({"iat": int(time.time()) - 3600, "exp": None}, "oidc_logout_token_old"),
    ],
    ids=[
        "with-nonce",
        "no-events",
        "other-event",
        "no-sid-no-sub",
        "other-audience",
        "other-issuer",
        "no-jti",
        "too-old",
    ],
)
async def test_a_logout_token_that_does_not_hold_ends_nothing(
    make_gateway: MakeGateway,
    upstream: Upstream,
    issuer: FakeIssuer,
    caplog: Any,
    changes: dict[str, Any],
    reason: str,
) -> None:
    gateway = await serve(make_gateway, document(upstream, issuer.issuer))
    _, _, _, session = await SignIn(gateway).run()

    assert await backchannel(gateway, issuer.logout_token(**changes)) == 400

    assert reason in reasons(caplog)
    assert await alive(gateway, session)


async def test_a_replayed_logout_token_is_refused(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer, caplog: Any
) -> None:
    gateway = await serve(make_gateway, document(upstream, issuer.issuer))
    token = issuer.logout_token()
    assert await backchannel(gateway, token) == 200
    _, _, _, later = await SignIn(gateway).run()  # the same provider session signs in again

    assert await backchannel(gateway, token) == 400

    assert "oidc_logout_token_replayed" in reasons(caplog)
    assert await alive(gateway, later)


async def test_an_id_token_is_no_logout_token(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer, caplog: Any
) -> None:
    gateway = await serve(make_gateway, document(upstream, issuer.issuer))
    flow = SignIn(gateway)
    _, _, _, session = await flow.run()
    id_token = jwt.encode(
        {"iss": issuer.issuer, "aud": CLIENT_ID, "sub": issuer.subject, "iat": int(time.time()),
         "exp": int(time.time()) + 60, "nonce": "n", "jti": "j", "sid": "fake-session-1"},
        issuer.key, algorithm="RS256", headers={"kid": issuer.kid},
    )  # fmt: skip

    assert await backchannel(gateway, id_token) == 400
    assert await alive(gateway, session)


# --- reloads ----------------------------------------------------------------------------------


async def test_a_reload_that_narrows_allowed_or_drops_the_provider_ends_its_sessions(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer, tmp_path: Path
) -> None:
    doc = document(upstream, issuer.issuer)
    gateway = await serve(make_gateway, doc)
    holder = gateway.gateway.holder
    _, _, _, first = await SignIn(gateway).run()
    source = tmp_path / "config.yaml"

    doc["login"]["oidc"][0]["label"] = "Corp"  # another provider entry: rediscovered
    source.write_text(dump(doc))
    assert await reload(holder, source)
    assert await alive(gateway, first)  # unrelated changes keep sessions

    doc["login"]["oidc"][0]["allowed"] = {"email_domains": ["elsewhere.example"]}
    source.write_text(dump(doc))
    assert await reload(holder, source)
    assert not await alive(gateway, first)

    doc["login"]["oidc"][0].pop("allowed")
    source.write_text(dump(doc))
    assert await reload(holder, source)
    await wait_discovered(lambda: holder.current.oidc.get("corp").available)
    _, _, _, second = await SignIn(gateway).run()
    assert await alive(gateway, second)
    doc["login"].pop("oidc")
    source.write_text(dump(doc))
    assert await reload(holder, source)
    assert not await alive(gateway, second)


async def test_a_reload_pointing_the_provider_at_another_issuer_ends_its_sessions(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer, tmp_path: Path
) -> None:
    # Same name, another identity provider: its sessions were proved by the old one.
    doc = document(upstream, issuer.issuer)
    gateway = await serve(make_gateway, doc)
    holder = gateway.gateway.holder
    _, _, _, session = await SignIn(gateway).run()
    other = await FakeIssuer().start()
    try:
        doc["login"]["oidc"][0]["issuer"] = other.issuer
        source = tmp_path / "config.yaml"
        source.write_text(dump(doc))
        assert await reload(holder, source)
        assert not await alive(gateway, session)
    finally:
        await other.stop()


async def test_a_reload_leaves_a_provider_users_websocket_open(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer, tmp_path: Path
) -> None:
    doc = document(upstream, issuer.issuer)
    doc["routes"] = [route("app", prefix="/", access={"roles": ["admin"]}, websocket=True)]
    gateway = await serve(make_gateway, doc)
    _, _, _, session = await SignIn(gateway).run()
    source = tmp_path / "config.yaml"

    async with gateway.ws_connect("/ws", headers={"Cookie": f"{SESSION}={session}"}) as ws:
        await ws.send_str("before")
        assert await ws.receive_str() == "before"
        doc["login"]["title"] = "Welcome"  # a change that concerns nobody's access
        source.write_text(dump(doc))
        assert await reload(gateway.gateway.holder, source)
        await ws.send_str("after")
        assert await ws.receive_str() == "after"


async def test_a_reload_whose_rules_no_longer_admit_a_provider_user_closes_their_websocket(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer, tmp_path: Path
) -> None:
    # As for local users: the new rules are checked at once against the roles the provider
    # user's session holds, not only at the socket's next periodic check.
    doc = document(upstream, issuer.issuer)
    doc["routes"] = [route("app", prefix="/", access={"roles": ["admin"]}, websocket=True)]
    gateway = await serve(make_gateway, doc)
    _, _, _, session = await SignIn(gateway).run()
    source = tmp_path / "config.yaml"

    async with gateway.ws_connect("/ws", headers={"Cookie": f"{SESSION}={session}"}) as ws:
        await ws.send_str("before")
        assert await ws.receive_str() == "before"
        doc["routes"][0]["access"] = {"roles": ["auditors"]}
        source.write_text(dump(doc))
        assert await reload(gateway.gateway.holder, source)
        closing = await asyncio.wait_for(ws.receive(), 5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


# --- claims a provider's users can shape --------------------------------------------------------


async def test_claims_with_line_breaks_or_commas_never_reach_identity_headers(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer
) -> None:
    """Users often choose their own display name (and sometimes groups) at a provider: a value
    with a control character is left out, as a local user's could never hold one, so the
    session works and no header line is forged; a role with ',' is left out too, since roles
    reach an identity header joined by ','."""
    doc = document(upstream, issuer.issuer)
    doc["routes"] = [
        route(
            "app",
            prefix="/",
            access="authenticated",
            identity_headers={"X-User": "sub", "X-Email": "email", "X-Name": "name",
                              "X-Roles": "roles"},
        )
    ]  # fmt: skip
    gateway = await serve(make_gateway, doc)
    issuer.claims["name"] = "Erin\r\nX-User: alice"
    issuer.claims["email"] = "erin@corp.example\nX-Injected: 1"
    issuer.claims["groups"] = ["staff", "users,admin", "ops\x00"]
    status, _, _, session = await SignIn(gateway).run()
    assert status == 303 and session is not None

    async with gateway.get("/app/page", headers={"Cookie": f"{SESSION}={session}"}) as resp:
        assert resp.status == 200, await resp.text()
        received = echoed(await resp.read())
    assert received.one("X-User") == "erin.sso"
    assert received.value("X-Name") is None
    assert received.value("X-Email") is None
    assert received.one("X-Roles") == "staff"
    assert received.value("X-Injected") is None
    claims = jwt.decode(received.bearer, options={"verify_signature": False})
    assert claims["roles"] == ["staff"] and "name" not in claims and "email" not in claims


async def test_an_identity_too_large_for_a_cookie_session_gets_a_page_saying_so(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer, caplog: Any
) -> None:
    doc = document(upstream, issuer.issuer, session=session_config("cookie"))
    gateway = await serve(make_gateway, doc)
    issuer.claims["groups"] = [f"group-{i:03d}-" + "x" * 200 for i in range(100)]

    assert_refused(
        await SignIn(gateway).run(), caplog, reason="oidc_identity_too_large", status=403
    )


async def test_a_logout_token_used_before_a_reload_is_refused_after_it(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer, tmp_path: Path, caplog: Any
) -> None:
    doc = document(upstream, issuer.issuer)
    gateway = await serve(make_gateway, doc)
    token = issuer.logout_token()
    assert await backchannel(gateway, token) == 200
    _, _, _, later = await SignIn(gateway).run()
    source = tmp_path / "config.yaml"
    doc["login"]["title"] = "Welcome"
    source.write_text(dump(doc))
    assert await reload(gateway.gateway.holder, source)

    assert await backchannel(gateway, token) == 400

    assert "oidc_logout_token_replayed" in reasons(caplog)
    assert await alive(gateway, later)


async def test_a_provider_that_states_its_issuer_in_answers_must_state_it(
    make_gateway: MakeGateway, upstream: Upstream, issuer: FakeIssuer, caplog: Any
) -> None:
    """RFC 9207 2.4: when the provider's metadata says it sends ``iss`` with its answer, an
    answer without one may come from another provider (mix-up) and is refused."""
    issuer.discovery_extra["authorization_response_iss_parameter_supported"] = True
    gateway = await serve(make_gateway, document(upstream, issuer.issuer))
    flow = SignIn(gateway)
    callback = await flow.at_provider(await flow.start())
    query = parse_qs(urlsplit(callback).query)
    without_iss = f"/.gateway/oidc/callback?code={query['code'][0]}&state={query['state'][0]}"

    assert_refused(await flow.finish(without_iss), caplog, reason="oidc_iss_mismatch")
    assert issuer.token_requests == []
    status, _, _, session = await SignIn(gateway).run()  # with iss, as the provider sends it
    assert status == 303 and session is not None
