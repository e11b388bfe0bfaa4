"""Stateless sessions: the cookie value IS the session, sealed with AES-256-GCM.

Value: ``base64url(version || nonce || AES-256-GCM(payload))`` without padding, where the key is
HKDF-SHA256 of ``session.cookie.secret`` (at least 32 bytes), the nonce 96 random bits, and the
associated data binds the version byte. The payload (username, login time, last-seen time and a
random 128-bit session nonce whose SHA-256 is the ``sid_hash``) is encrypted, so the cookie
reveals nothing and cannot be forged or altered without the secret. Anything that does not open
(tampered, truncated, other key, other version, over 4096 characters) is simply no session.

The idle timeout slides by re-sealing: ``load`` returns ``refreshed_cookie`` when ``last_seen_at``
is older than the refresh interval (``min(60s, idle_timeout / 10)``), so the effective idle
timeout is accurate to that interval.

Limits of stateless sessions, by design:

- **No revocation across replicas.** ``delete`` (logout) records the session in a bounded
  in-process revocation set until its absolute expiry, so the old cookie is worthless in THIS
  process; other processes and replicas, and this one after a restart, still accept it until it
  expires. When the set is full, the oldest revocation is forgotten first.
- **No per-user logout.** ``delete_user`` cannot find a user's cookies and returns 0.

Use the ``redis`` backend when sessions must be ended server-side everywhere.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.config.settings import SessionSettings
from gateway.identity.sessions.base import LoadedSession, Session

VERSION = 1
MIN_SECRET_BYTES = 32
MAX_COOKIE_CHARS = 4096
"""Browsers cap a cookie (name, value and attributes) near 4 KB; longer values are refused."""

_VERSION_BYTE = bytes([VERSION])
_NONCE_BYTES = 12
_TAG_BYTES = 16
_SESSION_NONCE_BYTES = 16
# SECURITY: the version byte travels in clear; binding it as associated data means it cannot be
# changed to make a future decoder read this payload with other rules.
_AAD = b"gateway session cookie" + _VERSION_BYTE
_HKDF_INFO = b"gateway session cookie key v1"
# created_at, last_seen_at (float64), session nonce; the UTF-8 username follows.
_PAYLOAD = struct.Struct(">dd16s")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_MIN_SEALED = 1 + _NONCE_BYTES + _TAG_BYTES + _PAYLOAD.size
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

    def __init__(self, settings: SessionSettings, *, max_revoked: int = 100_000) -> None:
        """Raises ``ValueError`` when ``settings.cookie.secret`` is missing or under 32 bytes."""
        secret = settings.cookie.secret
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
        self._idle_s = settings.idle_timeout_s
        self._absolute_s = settings.absolute_timeout_s
        self.refresh_interval_s = min(60.0, settings.idle_timeout_s / 10)
        """How stale ``last_seen_at`` may get before ``load`` hands out a re-sealed cookie."""
        self._max_revoked = max_revoked
        # sid_hash -> absolute expiry of that session; insertion order is revocation order.
        self._revoked: dict[str, float] = {}
        self._next_sweep_at = float("-inf")

    async def create(self, username: str, *, now: float) -> tuple[str, Session]:
        """Seal a new session; raises ``ValueError`` if the username cannot fit in a cookie."""
        self._observe(now)
        # SECURITY: a fresh random nonce per session makes every cookie (and sid_hash) unique.
        session_nonce = secrets.token_bytes(_SESSION_NONCE_BYTES)
        value = self._seal(username, now, now, session_nonce)
        if len(value) > MAX_COOKIE_CHARS:
            raise ValueError("username too long for a cookie session")
        return value, Session(
            sid_hash=hashlib.sha256(session_nonce).hexdigest(),
            username=username,
            created_at=now,
            last_seen_at=now,
        )

    async def load(self, cookie_value: str, *, now: float) -> LoadedSession | None:
        """Open the cookie; ``None`` for anything that does not open or has expired or been
        revoked here. Never raises."""
        self._observe(now)
        opened = self._open(cookie_value)
        if opened is None:
            return None
        session, session_nonce = opened
        if session.sid_hash in self._revoked:
            return None
        if now - session.last_seen_at > self._idle_s or now - session.created_at > self._absolute_s:
            return None
        if now - session.last_seen_at < self.refresh_interval_s:
            return LoadedSession(session=session)
        refreshed = Session(
            sid_hash=session.sid_hash,
            username=session.username,
            created_at=session.created_at,
            last_seen_at=now,
        )
        cookie = self._seal(session.username, session.created_at, now, session_nonce)
        return LoadedSession(session=refreshed, refreshed_cookie=cookie)

    async def delete(self, cookie_value: str) -> None:
        """Revoke the session in this process until its absolute expiry (see module docs)."""
        opened = self._open(cookie_value)
        if opened is None:
            return
        session = opened[0]
        self._revoked.pop(session.sid_hash, None)
        while len(self._revoked) >= self._max_revoked:
            # SECURITY: bounded memory beats a set anyone can grow by logging in and out;
            # forgetting the longest-standing revocation re-enables one logged-out cookie until
            # its absolute expiry (the documented limit of stateless sessions, made no worse).
            del self._revoked[next(iter(self._revoked))]
        self._revoked[session.sid_hash] = session.created_at + self._absolute_s

    async def delete_user(self, username: str) -> int:
        """Always 0: stateless sessions of a user cannot be found, hence not ended."""
        return 0

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._revoked.clear()

    def _observe(self, now: float) -> None:
        # Lazy, rate-limited sweep of revocations whose sessions have expired anyway.
        if self._revoked and now >= self._next_sweep_at:
            self._sweep(now)
            self._next_sweep_at = now + _SWEEP_EVERY_S

    def _sweep(self, now: float) -> None:
        expired = [h for h, expires_at in self._revoked.items() if expires_at < now]
        for sid_hash in expired:
            del self._revoked[sid_hash]

    def _seal(
        self, username: str, created_at: float, last_seen_at: float, session_nonce: bytes
    ) -> str:
        payload = _PAYLOAD.pack(created_at, last_seen_at, session_nonce) + username.encode()
        # SECURITY: 96-bit random nonce per seal; under one key this is safe for far more seals
        # (2^32 by NIST SP 800-38D) than a deployment makes between secret rotations.
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, payload, _AAD)
        return _b64encode(_VERSION_BYTE + nonce + sealed)

    def _open(self, cookie_value: str) -> tuple[Session, bytes] | None:
        if not cookie_value or len(cookie_value) > MAX_COOKIE_CHARS:
            return None
        raw = _b64decode(cookie_value)
        if raw is None or len(raw) < _MIN_SEALED or raw[:1] != _VERSION_BYTE:
            return None
        nonce, sealed = raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :]
        try:
            payload = self._aead.decrypt(nonce, sealed, _AAD)
        except InvalidTag:
            return None
        created_at, last_seen_at, session_nonce = _PAYLOAD.unpack_from(payload)
        try:
            username = payload[_PAYLOAD.size :].decode()
        except UnicodeDecodeError:
            return None
        session = Session(
            sid_hash=hashlib.sha256(session_nonce).hexdigest(),
            username=username,
            created_at=created_at,
            last_seen_at=last_seen_at,
        )
        return session, session_nonce
