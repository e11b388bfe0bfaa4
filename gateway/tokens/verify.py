"""Verifying API clients' bearer tokens: only tokens this gateway minted for itself pass.

Every failure is an :class:`InvalidBearer` (401) whose :attr:`~InvalidBearer.description` is a
short fixed string for ``WWW-Authenticate: Bearer error="invalid_token", error_description=...``;
nothing from the token is ever echoed or logged.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import jwt

from gateway.errors import Unauthenticated
from gateway.tokens.keys import ASYMMETRIC_ALGORITHMS, KeySet

MAX_BEARER_BYTES = 4096
"""Longer bearer tokens are refused before any parsing (ours are a few hundred bytes)."""

REQUIRED_CLAIMS = ("iss", "sub", "aud", "iat", "nbf", "exp", "jti")
"""Checked by pyjwt (before ``cst``, which is checked once the audience is known to be ours)."""
_TIME_CLAIMS = ("iat", "nbf", "exp")

# Compact JWS: three non-empty base64url segments, nothing else (no padding, no whitespace).
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_API_SESSION_DOMAIN = b"gateway/api-token-session/v1\x00"


class InvalidBearer(Unauthenticated):
    """A bearer token was refused. ``description`` is safe to send to the client."""

    error: ClassVar[str] = "invalid_token"
    """The RFC 6750 ``error`` attribute of ``WWW-Authenticate``. (ClassVar: a compiled module,
    gateway_build, keeps no other class attributes on subclasses of interpreted classes.)"""

    def __init__(self, description: str, *, reason: str) -> None:
        super().__init__(f"bearer token refused: {description}", reason=reason)
        self.description = description


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiClaims:
    """The verified claims of an API bearer token.

    Only :attr:`subject` identifies the caller; look the user up afresh from it so that a
    deleted user or changed roles take effect before the token expires.
    """

    subject: str
    jti: str
    issued_at: int
    expires_at: int
    stamp: str = field(repr=False)
    """The subject's credential stamp when the token was issued (``cst``)."""
    claims: Mapping[str, Any] = field(repr=False)
    sid_hash: str = field(init=False, repr=False)
    """Stands in for a session's ``sid_hash`` when minting upstream tokens for this bearer token
    (cache key and ``sid``): one per API token, never equal to a real session's."""

    def __post_init__(self) -> None:
        digest = hashlib.sha256(_API_SESSION_DOMAIN + self.jti.encode("utf-8")).hexdigest()
        object.__setattr__(self, "sid_hash", f"api-{digest}")


class VerifiedBearers:
    """API bearer tokens verified already, by the SHA-256 of the token, until they expire.

    Verifying a token (an Ed25519 or ECDSA signature, pyjwt's claim checks) is the most
    expensive step of a bearer request; a client sends the same token until it expires. Only
    tokens that passed are kept, at most ``max_entries`` (the least recently used go first),
    and a kept one is refused from its ``exp`` on. What may change while a token is valid (the
    user's credentials, a revocation) is checked on every request by the caller; a new signing
    key or ``tokens:`` configuration starts an empty cache (:meth:`Tokens.successor`).
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._max = max_entries
        self._claims: OrderedDict[bytes, ApiClaims] = OrderedDict()

    def __len__(self) -> int:
        return len(self._claims)

    @staticmethod
    def key(token: str) -> bytes:
        return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()

    def get(self, key: bytes, *, now: float) -> ApiClaims | None:
        claims = self._claims.get(key)
        if claims is None:
            return None
        if now >= claims.expires_at:
            del self._claims[key]
            return None
        self._claims.move_to_end(key)
        return claims

    def put(self, key: bytes, claims: ApiClaims) -> None:
        self._claims[key] = claims
        self._claims.move_to_end(key)
        while len(self._claims) > self._max:
            self._claims.popitem(last=False)


def verify_api_token(token: str, keyset: KeySet, *, issuer: str, leeway_s: float = 0) -> ApiClaims:
    """Verify an API client's bearer token; raises :class:`InvalidBearer` on any failure.

    Accepted only when signed by one of OUR asymmetric keys (looked up by ``kid``) with exactly
    that key's algorithm, with ``iss`` and ``aud`` both equal to ``issuer`` and integer ``exp``,
    ``nbf``, ``iat`` valid now (pyjwt reads the wall clock), give or take ``leeway_s``.
    """
    # SECURITY: cap the size before any decoding (base64/JSON of attacker data costs CPU).
    if len(token) > MAX_BEARER_BYTES:
        raise InvalidBearer("token too large", reason="bearer_too_large")
    # SECURITY: exactly three base64url segments; anything else is not one of our tokens.
    if not _COMPACT.fullmatch(token):
        raise InvalidBearer("malformed token", reason="bearer_malformed")
    header = _header(token)
    key, alg = _key_for(header, keyset)
    claims = _decode(token, key, alg, issuer=issuer, leeway_s=leeway_s)
    return ApiClaims(
        subject=claims["sub"],
        jti=claims["jti"],
        issued_at=claims["iat"],
        expires_at=claims["exp"],
        stamp=claims["cst"],
        claims=MappingProxyType(claims),
    )


def _header(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError:  # not base64url JSON
        raise InvalidBearer("malformed token", reason="bearer_malformed") from None
    except jwt.PyJWTError:  # pyjwt's own header checks: crit it does not know, a non-string kid
        raise InvalidBearer("unsupported token header", reason="bearer_header") from None
    if "crit" in header:
        # SECURITY: we understand no JWS extension, so a critical one means "do not accept".
        raise InvalidBearer("unsupported token header", reason="bearer_crit")
    # SECURITY: jku, jwk, x5u and x5c are deliberately never read: the verification key comes
    # only from our own key set, so an attacker cannot point us at their key or make us fetch.
    return header


def _key_for(header: Mapping[str, Any], keyset: KeySet) -> tuple[Any, str]:
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise InvalidBearer("unknown signing key", reason="bearer_no_kid")
    # SECURITY: the kid is looked up only among our own keys; an unknown kid fails closed.
    found = keyset.verification(kid)
    if found is None:
        raise InvalidBearer("unknown signing key", reason="bearer_unknown_kid")
    key, key_alg = found
    # SECURITY: the algorithm is the key's, not the token's: an allow-list of exactly one.
    # That refuses alg "none", HS256 "signed" with our public key (algorithm confusion) and any
    # RS/ES/EdDSA mix-up. HMAC secrets are shared with upstreams, so never accepted here.
    if key_alg not in ASYMMETRIC_ALGORITHMS or header.get("alg") != key_alg:
        raise InvalidBearer("algorithm not allowed", reason="bearer_alg")
    return key, key_alg


def _decode(token: str, key: Any, alg: str, *, issuer: str, leeway_s: float) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            # SECURITY: API tokens carry the gateway's own issuer as aud; upstream tokens carry
            # their route's audience, so one leaked or replayed by an upstream is refused here.
            audience=issuer,
            issuer=issuer,
            leeway=leeway_s,
            options={
                "require": list(REQUIRED_CLAIMS),
                "strict_aud": True,
                "verify_signature": True,
                "verify_aud": True,
                "verify_iss": True,
                "verify_sub": True,
                "verify_jti": True,
                "verify_exp": True,
                "verify_nbf": True,
                # SECURITY: a token "issued" in the future was not issued by us with a sane clock.
                "verify_iat": True,
                "enforce_minimum_key_length": True,
            },
        )
    except jwt.InvalidSignatureError:
        raise InvalidBearer("invalid signature", reason="bearer_signature") from None
    except jwt.ExpiredSignatureError:
        raise InvalidBearer("token expired", reason="bearer_expired") from None
    except jwt.ImmatureSignatureError as exc:
        # pyjwt raises this one class for a future iat and a future nbf; its message names which.
        if "(iat)" in str(exc):
            raise InvalidBearer("token issued in the future", reason="bearer_iat_future") from None
        raise InvalidBearer("token not yet valid", reason="bearer_not_yet_valid") from None
    except jwt.InvalidIssuedAtError:  # an iat that is not a number
        raise InvalidBearer("invalid token", reason="bearer_claims") from None
    except jwt.InvalidAudienceError:
        raise InvalidBearer("invalid audience", reason="bearer_audience") from None
    except jwt.InvalidIssuerError:
        raise InvalidBearer("invalid issuer", reason="bearer_issuer") from None
    except jwt.MissingRequiredClaimError:
        raise InvalidBearer("missing claim", reason="bearer_claims") from None
    except jwt.PyJWTError:
        raise InvalidBearer("invalid token", reason="bearer_invalid") from None
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise InvalidBearer("missing claim", reason="bearer_claims")
    if not isinstance(claims.get("cst"), str):
        raise InvalidBearer("missing claim", reason="bearer_claims")
    _validate_integer_times(claims)
    return claims


def _validate_integer_times(claims: Mapping[str, Any]) -> None:
    # pyjwt compares int(value), so it lets through 1.5, "1700000000" and true: times in our
    # tokens are JSON integers, anything else was not minted here.
    for name in _TIME_CLAIMS:
        value = claims[name]
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidBearer("invalid token", reason="bearer_claims")
