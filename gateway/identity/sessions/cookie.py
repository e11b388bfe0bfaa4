"""Stateless sessions: the cookie value IS the session, sealed with AES-256-GCM.

Value: ``base64url(version || nonce || AES-256-GCM(payload))`` without padding, where the key is
HKDF-SHA256 of ``session.cookie.secret`` (at least 32 bytes), the nonce 96 random bits, and the
associated data binds the version byte. The payload (a compact JSON object: the session id, the
username, login and last-seen times and the credential stamp) is encrypted, so the cookie reveals
nothing and cannot be forged or altered without the secret. Anything that does not open
(tampered, truncated, other key, other version, over 4096 characters) is simply no session.

Sliding the idle timeout re-seals: :meth:`CookieSessionStore.refresh` returns a new cookie.

Limits of stateless sessions, by design:

- **No revocation across replicas.** ``remove`` (logout) records the session in a bounded
  in-process revocation set until its absolute expiry, so the old cookie is worthless in THIS
  process; other processes and replicas, and this one after a restart, still accept it until it
  expires. When the set is full, the oldest revocation is forgotten first.
- **No per-user logout.** ``remove_user`` cannot find a user's cookies and returns 0; a change
  of the user's credentials (password, removal, ``disabled``) still ends them everywhere,
  through the credential stamp sealed inside.
- **Back-channel logout in this process only.** An OpenID Connect provider's logout of a
  session (or user) is remembered in a bounded in-process set, like a logout.

A session from an OpenID Connect provider also seals its
:class:`~gateway.identity.sessions.base.ProviderLogin`; when the ID token would make the cookie
too long it is left out (logout at the provider then goes without ``id_token_hint``).

Use the ``redis`` backend when sessions must be ended server-side everywhere.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.identity.sessions.base import (
    Found,
    ProviderLogin,
    Session,
    hash_session_id,
    parse_session_id,
)

VERSION = 2
MIN_SECRET_BYTES = 32
MAX_COOKIE_CHARS = 4096
"""Browsers cap a cookie (name, value and attributes) near 4 KB; longer values are refused."""
OPENED_KEPT = 2048
"""Cookie values kept opened (at most 4 KiB each: 8 MiB), so that a browser's requests do not
decrypt and parse the same value again."""

_VERSION_BYTE = bytes([VERSION])
_NONCE_BYTES = 12
_TAG_BYTES = 16
# SECURITY: the version byte travels in clear; binding it as associated data means it cannot be
# changed to make a future decoder read this payload with other rules.
_AAD = b"gateway session cookie" + _VERSION_BYTE
_HKDF_INFO = b"gateway session cookie key v1"
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_MIN_SEALED = 1 + _NONCE_BYTES + _TAG_BYTES + 2
_SWEEP_EVERY_S = 60.0


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(value: str) -> bytes | None:
    if not _B64URL.fullmatch(value):
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        return None
    # SECURITY: accept the canonical encoding only, so that every character of the value is
    # covered by the tag (the unused low bits of a final character would otherwise be free).
    if _b64encode(raw) != value:
        return None
    return raw


class CookieSessionStore:
    """Sessions sealed into the cookie value; nothing stored but a bounded revocation set."""

    def __init__(
        self,
        secret: bytes | None,
        *,
        max_revoked: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Raises ``ValueError`` when ``secret`` is missing or under 32 bytes."""
        if secret is None or len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"session.cookie.secret must be at least {MIN_SECRET_BYTES} bytes "
                "for the cookie session backend"
            )
        if max_revoked < 1:
            raise ValueError("max_revoked must be at least 1")
        # SECURITY: never use the configured secret directly as the AES key: HKDF binds the key
        # to this purpose, so the same secret reused elsewhere yields an unrelated key.
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret)
        self._aead = AESGCM(key)
        self._clock = clock
        self._max_revoked = max_revoked
        # sid_hash -> absolute expiry of that session; insertion order is revocation order.
        self._revoked: dict[str, float] = {}
        # (idp, "sid" | "sub", value) -> (sessions begun before this are ended, keep until).
        self._revoked_provider: dict[tuple[str, str, str], tuple[float, float]] = {}
        self._next_sweep_at = float("-inf")
        # cookie value -> what it opened to, least recently used first (see _open).
        self._opened: OrderedDict[str, Found] = OrderedDict()

    async def add(self, session_id: str, session: Session, *, ttl_s: float) -> str:
        """Seal a new session; raises ``ValueError`` if it cannot fit in a cookie."""
        value = self._seal(session_id, session)
        if len(value) > MAX_COOKIE_CHARS and session.provider is not None:
            session = _without_id_token(session)
            value = self._seal(session_id, session)
        if len(value) > MAX_COOKIE_CHARS:
            raise ValueError("identity too long for a cookie session")
        return value

    async def get(self, cookie_value: str) -> Found | None:
        """Open the cookie; ``None`` for anything that does not open or was revoked here."""
        self._observe()
        found = self._open(cookie_value)
        if found is None or found.session.sid_hash in self._revoked:
            return None
        if found.session.provider is not None and self._provider_revoked(found.session):
            return None
        return found

    async def refresh(self, session_id: str, session: Session, *, ttl_s: float) -> str | None:
        """Re-seal with the new ``last_seen_at``: the cookie to send back."""
        if session.sid_hash in self._revoked:
            return None
        value = self._seal(session_id, session)
        if len(value) > MAX_COOKIE_CHARS and session.provider is not None:
            value = self._seal(session_id, _without_id_token(session))
        return value

    async def remove(self, session_id: str, session: Session, *, ttl_s: float) -> None:
        """Revoke the session in this process for as long as it could live (see module docs)."""
        self._revoked.pop(session.sid_hash, None)
        while len(self._revoked) >= self._max_revoked:
            # SECURITY: bounded memory beats a set anyone can grow by logging in and out;
            # forgetting the longest-standing revocation re-enables one logged-out cookie until
            # its absolute expiry (the documented limit of stateless sessions, made no worse).
            del self._revoked[next(iter(self._revoked))]
        self._revoked[session.sid_hash] = self._clock() + ttl_s

    async def remove_user(self, username: str) -> int:
        """Always 0: stateless sessions of a user cannot be found, hence not ended here."""
        return 0

    async def remove_provider_sessions(
        self, idp: str, *, sid: str | None, subject: str | None, at: float, ttl_s: float
    ) -> list[str]:
        """Refuse, in this process, the provider's sessions of ``sid`` (else of ``subject``)
        begun before ``at`` (see module docs); none can be found, so none is listed."""
        key = (idp, "sid", sid) if sid else (idp, "sub", subject or "")
        self._revoked_provider.pop(key, None)
        while len(self._revoked_provider) >= self._max_revoked:
            del self._revoked_provider[next(iter(self._revoked_provider))]
        self._revoked_provider[key] = (at, self._clock() + ttl_s)
        return []

    def _provider_revoked(self, session: Session) -> bool:
        provider = session.provider
        assert provider is not None
        keys = [(provider.idp, "sub", provider.subject)]
        if provider.sid:
            keys.append((provider.idp, "sid", provider.sid))
        for key in keys:
            entry = self._revoked_provider.get(key)
            if entry is not None and session.created_at <= entry[0]:
                return True
        return False

    async def save_revocation(self, username: str, at: float, *, ttl_s: float) -> None:
        """Nothing lasting to keep it in: the process remembers it (Revocations)."""

    async def revocations(self) -> dict[str, float]:
        return {}

    async def known_users(self) -> set[str]:
        return set()  # nothing is kept: the sessions are out there, in cookies

    def count(self) -> int | None:
        return None

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._revoked.clear()
        self._revoked_provider.clear()

    def _observe(self) -> None:
        # Lazy, rate-limited sweep of revocations whose sessions have expired anyway.
        now = self._clock()
        if (self._revoked or self._revoked_provider) and now >= self._next_sweep_at:
            expired = [h for h, expires_at in self._revoked.items() if expires_at < now]
            for sid_hash in expired:
                del self._revoked[sid_hash]
            gone = [k for k, (_, until) in self._revoked_provider.items() if until < now]
            for key in gone:
                del self._revoked_provider[key]
            self._next_sweep_at = now + _SWEEP_EVERY_S

    def _seal(self, session_id: str, session: Session) -> str:
        payload: dict[str, Any] = {
            "i": session_id,
            "u": session.username,
            "c": session.created_at,
            "l": session.last_seen_at,
            "s": session.stamp,
        }
        if session.provider is not None:
            payload["p"] = session.provider.to_json()
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        # SECURITY: 96-bit random nonce per seal; under one key this is safe for far more seals
        # (2^32 by NIST SP 800-38D) than a deployment makes between secret rotations.
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, data, _AAD)
        return _b64encode(_VERSION_BYTE + nonce + sealed)

    def _open(self, cookie_value: str) -> Found | None:
        """The session sealed in ``cookie_value``. A value opened before is not decrypted
        again: the same bytes opened to the same (immutable) session; whether it still counts
        (revoked here, expired, the user's credentials) is asked on every request."""
        opened = self._opened.get(cookie_value)
        if opened is not None:
            self._opened.move_to_end(cookie_value)
            return opened
        found = self._unseal(cookie_value)
        if found is not None:
            self._opened[cookie_value] = found
            if len(self._opened) > OPENED_KEPT:
                self._opened.popitem(last=False)
        return found

    def _unseal(self, cookie_value: str) -> Found | None:
        if not cookie_value or len(cookie_value) > MAX_COOKIE_CHARS:
            return None
        raw = _b64decode(cookie_value)
        if raw is None or len(raw) < _MIN_SEALED or raw[:1] != _VERSION_BYTE:
            return None
        nonce, sealed = raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :]
        try:
            payload = json.loads(self._aead.decrypt(nonce, sealed, _AAD))
            session_id, username = payload["i"], payload["u"]
            created_at, last_seen_at, stamp = payload["c"], payload["l"], payload["s"]
            provider_json = payload.get("p")
        except (InvalidTag, ValueError, KeyError, TypeError, AttributeError):
            return None
        provider = None
        if provider_json is not None:
            provider = ProviderLogin.from_json(provider_json)
            if provider is None:
                return None
        if (
            not isinstance(session_id, str)
            or parse_session_id(session_id) is None
            or not isinstance(username, str)
            or not isinstance(stamp, str)
            or not all(isinstance(t, int | float) for t in (created_at, last_seen_at))
        ):
            return None
        session = Session(
            sid_hash=hash_session_id(session_id),
            username=username,
            created_at=float(created_at),
            last_seen_at=float(last_seen_at),
            stamp=stamp,
            provider=provider,
        )
        return Found(session_id, session)


def _without_id_token(session: Session) -> Session:
    assert session.provider is not None
    return replace(session, provider=replace(session.provider, id_token=""))
