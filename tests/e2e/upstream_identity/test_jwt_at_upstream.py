"""Done when: a backend that knows ONLY the JWKS URL verifies every request's identity.

The backend here is a real aiohttp upstream that, for every request it receives, fetches
``/.gateway/jwks.json`` over HTTP through the gateway and verifies the ``Authorization: Bearer``
JWT with joserfc, an implementation independent of the gateway's (pyjwt). A legacy HS256 backend
knows only the shared secret instead: that key is never in the JWKS.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from joserfc import jwt as jose_jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet as JoseKeySet
from joserfc.jwk import OctKey
from joserfc.jwt import JWTClaimsRegistry

from tests.e2e.upstream_identity.identity_harness import (
    ADMIN_TTL,
    ASYMMETRIC,
    HMAC_KID,
    HMAC_SECRET,
    ISSUER,
    JWKS,
    TOKENS_TTL,
    KeyFile,
    fetch,
    hmac_key,
    identity_config,
    login,
    write_key,
)
from tests.tokens.token_helpers import b64url
from tests.upstreams import Received, Upstream

# RFC 9864 deprecates "EdDSA" for the fully-specified "Ed25519"; the contract names EdDSA, which
# far more verifiers know today, so joserfc's deprecation notice is expected here (and only it).
pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated:joserfc.errors.SecurityWarning")

REGISTERED = {"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "sid"}
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
# path -> (aud, ttl): route token.audience, else the upstream's name; route ttl, else tokens.ttl.
EXPECTED = {
    "/members/a": ("app", TOKENS_TTL),
    "/admin/b": ("admin-ui", ADMIN_TTL),
    "/billing/c": ("billing", TOKENS_TTL),  # route "bills", upstream "billing"
    "/members/d": ("app", TOKENS_TTL),
}


@dataclass(frozen=True)
class Verified:
    path: str
    token: str
    header: dict[str, Any]
    claims: dict[str, Any]


class JwksBackend:
    """An upstream service that trusts the gateway knowing only its JWKS URL (or, for a legacy
    HS256 backend, only the shared secret). It verifies every request before answering."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret
        self.jwks_url = ""
        self.jwks_fetches = 0
        self.verified: list[Verified] = []
        self.refused: list[str] = []

    async def verify(self, token: str) -> Any:
        if self.secret is not None:
            return jose_jwt.decode(token, OctKey.import_key(self.secret), algorithms=["HS256"])
        status, _headers, body = await fetch(self.jwks_url)
        assert status == 200, body
        self.jwks_fetches += 1
        keys = JoseKeySet.import_key_set(json.loads(body))
        return jose_jwt.decode(token, keys, algorithms=list(ASYMMETRIC))

    async def answer(self, request: web.Request, received: Received) -> web.Response:
        """Served by the recording upstream: verify, then answer."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not token:
            self.refused.append(f"{request.raw_path}: no bearer token")
            return web.json_response({"error": "no token"}, status=401)
        try:
            decoded = await self.verify(token)
        except JoseError as exc:
            self.refused.append(f"{request.raw_path}: {exc!r}")
            return web.json_response({"error": "invalid token"}, status=401)
        self.verified.append(
            Verified(request.raw_path, token, dict(decoded.header), dict(decoded.claims))
        )
        return web.json_response({"verified_sub": decoded.claims["sub"]})


Serve = Callable[[JwksBackend], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(backend)``: ``backend`` behind a recording upstream on loopback; its URL."""
    started: list[Upstream] = []

    async def start(backend: JwksBackend) -> str:
        started.append(await Upstream(backend.answer).start())
        return started[-1].url

    yield start
    for upstream in started:
        await upstream.stop()


def check_claims(claims: dict[str, Any], *, audience: str, subject: str) -> None:
    """What a careful backend checks with joserfc's claims registry (time now, no leeway)."""
    JWTClaimsRegistry(
        leeway=0,
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": audience},
        sub={"essential": True, "value": subject},
        exp={"essential": True},
        nbf={"essential": True},
        iat={"essential": True},
        jti={"essential": True},
        sid={"essential": True},
    ).validate(claims)


def keys_for(tmp_path: Path, alg: str) -> tuple[list[Any], str]:
    """Configured keys and the kid that must sign; HS256 first, beside a published EdDSA key."""
    if alg == "HS256":
        return [hmac_key(), write_key(tmp_path, "EdDSA").setting], HMAC_KID
    key = write_key(tmp_path, alg)
    return [key.setting], key.kid


@pytest.mark.parametrize("alg", [*ASYMMETRIC, "HS256"])
async def test_a_backend_knowing_only_the_jwks_url_verifies_every_request(
    tmp_path: Path, serve: Serve, make_gateway: Any, alg: str
) -> None:
    keys, kid = keys_for(tmp_path, alg)
    backend = JwksBackend(secret=HMAC_SECRET if alg == "HS256" else None)
    client = await make_gateway(identity_config(await serve(backend), tmp_path, keys))
    backend.jwks_url = str(client.make_url(JWKS))
    bob = await login(client, "bob")

    before = int(time.time())
    for path in EXPECTED:
        reply = await bob.get(path)
        assert reply.status == 200, reply.body
        assert reply.json() == {"verified_sub": "bob"}
    after = int(time.time())

    assert backend.refused == []
    assert [v.path for v in backend.verified] == list(EXPECTED)
    if alg != "HS256":
        assert backend.jwks_fetches == len(EXPECTED)  # one real HTTP GET per verification
    for seen in backend.verified:
        audience, ttl = EXPECTED[seen.path]
        assert seen.header == {"alg": alg, "typ": "JWT", "kid": kid}
        claims = seen.claims
        check_claims(claims, audience=audience, subject="bob")
        assert claims["aud"] == audience
        for name in ("iat", "nbf", "exp"):
            assert type(claims[name]) is int, (name, claims[name])
        assert before <= claims["iat"] <= after
        assert claims["nbf"] <= claims["iat"]
        assert claims["exp"] == claims["iat"] + ttl
        assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
        assert claims["name"] == "Bob Example"
        assert claims["email"] == "bob@example.com"
        assert claims["roles"] == ["dev", "ops"]
        assert set(claims) == REGISTERED | {"name", "email", "roles"}

    # /members twice within the lifetime: the same token; different tokens, different jti.
    first, admin, billing, again = backend.verified
    assert again.token == first.token
    assert len({first.claims["jti"], admin.claims["jti"], billing.claims["jti"]}) == 3
    # sid: stable for the session, and neither the session id nor its plain SHA-256.
    assert first.claims["sid"] == admin.claims["sid"] == billing.claims["sid"]
    cookie = bob.session
    assert cookie is not None
    digest = hashlib.sha256(cookie.encode()).digest()
    assert first.claims["sid"] not in {cookie, digest.hex(), b64url(digest)}
    assert all(cookie not in v.token for v in backend.verified)


async def test_hs256_key_is_never_published_so_only_the_secret_verifies(
    tmp_path: Path, serve: Serve, make_gateway: Any
) -> None:
    keys, _kid = keys_for(tmp_path, "HS256")
    backend = JwksBackend(secret=HMAC_SECRET)
    client = await make_gateway(identity_config(await serve(backend), tmp_path, keys))
    alice = await login(client)
    assert (await alice.get("/members/x")).status == 200
    token = backend.verified[-1].token

    status, _headers, body = await fetch(str(client.make_url(JWKS)))
    assert status == 200
    jwks = json.loads(body)
    assert [key["kty"] for key in jwks["keys"]] == ["OKP"]  # the EdDSA key only, no "oct"
    assert HMAC_KID not in {key["kid"] for key in jwks["keys"]}
    assert HMAC_SECRET.hex() not in body.decode() and b64url(HMAC_SECRET) not in body.decode()
    with pytest.raises(InvalidKeyIdError):
        jose_jwt.decode(token, JoseKeySet.import_key_set(jwks), algorithms=["HS256"])


async def test_jwks_endpoint_headers_and_shape(
    tmp_path: Path, recorder: Any, make_gateway: Any
) -> None:
    keys = [write_key(tmp_path, alg) for alg in ("ES256", "RS256", "EdDSA")]
    document = identity_config(
        recorder.url, tmp_path, [keys[0].setting, hmac_key(), keys[1].setting, keys[2].setting]
    )
    client = await make_gateway(document)

    status, headers, body = await fetch(str(client.make_url(JWKS)))
    assert status == 200
    assert headers["Cache-Control"] == "public, max-age=300"
    assert headers["Content-Type"].split(";")[0].strip() == "application/json"
    document = json.loads(body)
    assert set(document) == {"keys"}
    published = document["keys"]
    assert [key["kid"] for key in published] == [key.kid for key in keys]  # config order, no HMAC
    required = {"OKP": {"crv", "x"}, "EC": {"crv", "x", "y"}, "RSA": {"n", "e"}}
    for key_file, jwk in zip(keys, published, strict=True):
        assert jwk["alg"] == key_file.alg
        assert jwk["use"] == "sig"
        assert not PRIVATE_MEMBERS & set(jwk)
        assert set(jwk) == {"kty", "kid", "alg", "use"} | required[jwk["kty"]]
        imported = JoseKeySet.import_key_set({"keys": [jwk]}).keys[0]
        assert not imported.is_private
        assert imported.thumbprint() == jwk["kid"]  # RFC 7638, computed independently
    assert recorder.hits == 0  # /.gateway/ is never proxied


async def test_key_rotation_new_key_signs_and_old_tokens_still_verify(
    tmp_path: Path, serve: Serve, make_gateway: Any
) -> None:
    old: KeyFile = write_key(tmp_path, "ES256", "old.pem")
    new: KeyFile = write_key(tmp_path, "EdDSA", "new.pem")
    backend = JwksBackend()
    url = await serve(backend)

    before_rotation = await make_gateway(identity_config(url, tmp_path, [old.setting]))
    backend.jwks_url = str(before_rotation.make_url(JWKS))
    alice = await login(before_rotation)
    assert (await alice.get("/members/before")).status == 200
    old_token = backend.verified[-1]
    assert old_token.header["kid"] == old.kid and old_token.header["alg"] == "ES256"

    rotated = await make_gateway(identity_config(url, tmp_path, [new.setting, old.setting]))
    backend.jwks_url = str(rotated.make_url(JWKS))
    _status, _headers, body = await fetch(backend.jwks_url)
    assert [key["kid"] for key in json.loads(body)["keys"]] == [new.kid, old.kid]

    alice_again = await login(rotated)
    assert (await alice_again.get("/members/after")).status == 200
    new_token = backend.verified[-1]
    assert new_token.header == {"alg": "EdDSA", "typ": "JWT", "kid": new.kid}
    check_claims(new_token.claims, audience="app", subject="alice")

    # The token minted before the rotation verifies with the rotated gateway's JWKS.
    decoded = await backend.verify(old_token.token)
    assert decoded.header["kid"] == old.kid
    check_claims(dict(decoded.claims), audience="app", subject="alice")

    # Once the old key is retired from the configuration, its tokens no longer verify.
    retired = await make_gateway(identity_config(url, tmp_path, [new.setting]))
    backend.jwks_url = str(retired.make_url(JWKS))
    with pytest.raises(InvalidKeyIdError):
        await backend.verify(old_token.token)


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        (("email",), {"email": "bob@example.com"}),
        (("roles", "name"), {"roles": ["dev", "ops"], "name": "Bob Example"}),
        ((), {}),
    ],
    ids=["email-only", "roles-and-name", "none"],
)
async def test_tokens_claims_select_the_identity_claims(
    tmp_path: Path,
    serve: Serve,
    make_gateway: Any,
    ed_key: KeyFile,
    claims: tuple[str, ...],
    expected: dict[str, Any],
) -> None:
    backend = JwksBackend()
    url = await serve(backend)
    client = await make_gateway(identity_config(url, tmp_path, [ed_key.setting], claims=claims))
    backend.jwks_url = str(client.make_url(JWKS))
    bob = await login(client, "bob")
    assert (await bob.get("/members/x")).status == 200
    verified = backend.verified[-1].claims
    assert {name: value for name, value in verified.items() if name not in REGISTERED} == expected
    assert set(verified) >= REGISTERED


@pytest.mark.parametrize("session_backend", ["memory", "cookie"])
async def test_sid_is_stable_per_session_and_reveals_no_session_id(
    tmp_path: Path,
    serve: Serve,
    make_gateway: Any,
    ed_key: KeyFile,
    session_backend: str,
) -> None:
    backend = JwksBackend()
    url = await serve(backend)
    client = await make_gateway(
        identity_config(url, tmp_path, [ed_key.setting], backend=session_backend)
    )
    backend.jwks_url = str(client.make_url(JWKS))
    first, second = await login(client), await login(client)  # two sessions of one user
    for browser in (first, second, first):
        assert (await browser.get("/admin/x")).status == 200
    one, two, one_again = (v.claims["sid"] for v in backend.verified)
    assert one == one_again and one != two
    for browser, sid in ((first, one), (second, two)):
        cookie = browser.session
        assert cookie is not None
        digest = hashlib.sha256(cookie.encode()).digest()
        assert sid not in {cookie, digest.hex(), b64url(digest)}
        assert cookie not in json.dumps(backend.verified[0].claims)
