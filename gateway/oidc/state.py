"""The sign-in in progress, bound to the browser that started it: a short-lived cookie.

``GET /.gateway/oidc/<name>/start`` sets it; ``/.gateway/oidc/callback`` reads it and removes
it. It holds the provider, ``state``, ``nonce``, the PKCE verifier and ``rd``, sealed with
AES-256-GCM under a key every replica shares (derived from the signing key), so it can be
neither read nor made by anyone else, and it names no server-side record. ``HttpOnly``,
``SameSite=Lax`` (the provider's redirect back is a cross-site top-level navigation, which Lax
cookies accompany), ``__Host-`` prefixed over https, ten minutes at most.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

STATE_TTL_S = 600
COOKIE_HTTP = "gw_oidc"
COOKIE_HTTPS = "__Host-gw_oidc"
_AAD = b"gateway oidc sign-in state v1"
_NONCE_BYTES = 12
MAX_COOKIE_CHARS = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class Pending:
    """One sign-in in progress."""

    provider: str
    state: str
    nonce: str
    verifier: str
    rd: str
    started_at: float

    @classmethod
    def begin(cls, provider: str, rd: str, *, now: float) -> Pending:
        # SECURITY: 256 bits each from the OS CSPRNG; the verifier is 43 characters (RFC 7636
        # 4.1 wants 43 to 128 of the unreserved ones, which base64url are).
        return cls(
            provider=provider,
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(32),
            rd=rd,
            started_at=now,
        )

    @property
    def challenge(self) -> str:
        """The PKCE S256 code challenge of :attr:`verifier`."""
        digest = hashlib.sha256(self.verifier.encode("ascii")).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class StateCookie:
    """Seals and opens :class:`Pending` into the sign-in cookie."""

    def __init__(self, key: bytes, *, https: bool) -> None:
        self.name = COOKIE_HTTPS if https else COOKIE_HTTP
        self._aead = AESGCM(key)
        secure = "; Secure" if https else ""
        self._attributes = f"Path=/; HttpOnly; SameSite=Lax{secure}"

    def set(self, pending: Pending) -> str:
        """The ``Set-Cookie`` value carrying ``pending``."""
        payload = {
            "p": pending.provider,
            "s": pending.state,
            "n": pending.nonce,
            "v": pending.verifier,
            "r": pending.rd,
            "t": pending.started_at,
        }
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, json.dumps(payload).encode(), _AAD)
        value = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")
        return f"{self.name}={value}; {self._attributes}; Max-Age={STATE_TTL_S}"

    def expired(self) -> str:
        return f"{self.name}=; {self._attributes}; Max-Age=0"

    def open(self, value: str | None, *, now: float) -> Pending | None:
        """The sign-in the cookie holds; ``None`` when absent, tampered, foreign or expired."""
        if not value or len(value) > MAX_COOKIE_CHARS:
            return None
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            data = json.loads(self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _AAD))
            pending = Pending(
                provider=data["p"],
                state=data["s"],
                nonce=data["n"],
                verifier=data["v"],
                rd=data["r"],
                started_at=float(data["t"]),
            )
        except (InvalidTag, ValueError, KeyError, TypeError, binascii.Error):
            return None
        if not all(
            isinstance(field, str)
            for field in (pending.provider, pending.state, pending.nonce, pending.verifier)
        ) or not isinstance(pending.rd, str):
            return None
        if not 0 <= now - pending.started_at <= STATE_TTL_S:
            return None
        return pending
