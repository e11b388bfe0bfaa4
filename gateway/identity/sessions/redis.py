"""Redis session store: shared by replicas and workers, survives gateway restarts.

Layout (``P`` is ``session.redis.key_prefix``)::

    P s:<sha256 hex of session id>  hash {username, created_at, last_seen_at, stamp}
                                    TTL = until the session's idle or absolute end
    P u:<username>                  sorted set of that user's session hashes, scored by created_at
                                    TTL = absolute timeout, refreshed at each login
    P p:<username>                  the same for sessions begun at an OpenID Connect provider
                                    (apart, so that start-up's clean-up of removed local users
                                    never touches them)
    P o:<idp>:sid:<sha256 of sid>   sessions of one provider session (back-channel logout),
    P o:<idp>:sub:<sha256 of sub>   and of one provider user; like the user index

A provider session's hash also holds ``provider``: the JSON of its
:class:`~gateway.identity.sessions.base.ProviderLogin`.

The session id itself is never stored. Loading is one round trip (HMGET), or none: with a
:class:`~gateway.identity.sessions.tracking.SessionCache`, a session read once is kept in the
process until Redis reports a write to it (see :mod:`.tracking` for what keeps that safe).

The per-user index drops entries older than the absolute timeout at each login, so it stays
bounded even for a user who logs in around the clock; entries of sessions that ended earlier
(idle expiry) linger until then and are harmless.

Any Redis failure raises :class:`SessionStoreUnavailable` (fail closed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math

from redis.asyncio import Redis

from gateway.identity.redis_client import redis_errors, text
from gateway.identity.sessions.base import (
    Found,
    ProviderLogin,
    Session,
    SessionStoreUnavailable,
    parse_session_id,
)
from gateway.identity.sessions.tracking import SessionCache

_FIELDS = ("username", "created_at", "last_seen_at", "stamp", "provider")

# Record activity only if the session still exists: a bare HSET after a concurrent logout
# would resurrect a half session.
_REFRESH = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'last_seen_at', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisSessionStore:
    """Sessions in Redis, keyed by the SHA-256 of the session id; the cookie is the id."""

    def __init__(
        self,
        client: Redis,
        *,
        key_prefix: str,
        absolute_timeout_s: float,
        cache: SessionCache | None = None,
    ) -> None:
        """``client`` belongs to the caller (shared with the login throttle), who closes it;
        ``cache`` (over the same Redis and prefix) is this store's, closed with it."""
        self._client = client
        self.cache = cache
        self._prefix = key_prefix
        self._absolute_s = absolute_timeout_s
        self._refresh = client.register_script(_REFRESH)

    def session_key(self, sid_hash: str) -> str:
        return f"{self._prefix}s:{sid_hash}"

    def user_key(self, username: str, *, provider: bool = False) -> str:
        return f"{self._prefix}{'p' if provider else 'u'}:{username}"

    def provider_key(self, idp: str, kind: str, value: str) -> str:
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self._prefix}o:{idp}:{kind}:{digest}"

    def _index_keys(self, session: Session) -> list[str]:
        provider = session.provider
        if provider is None:
            return [self.user_key(session.username)]
        keys = [
            self.user_key(session.username, provider=True),
            self.provider_key(provider.idp, "sub", provider.subject),
        ]
        if provider.sid:
            keys.append(self.provider_key(provider.idp, "sid", provider.sid))
        return keys

    async def add(self, session_id: str, session: Session, *, ttl_s: float) -> str:
        """Store the session and index it under its user, in one transaction."""
        key = self.session_key(session.sid_hash)
        created = session.created_at
        record: dict[str | bytes | bytearray | memoryview[int] | int | float, str] = {
            "username": session.username,
            "created_at": repr(created),
            "last_seen_at": repr(session.last_seen_at),
            "stamp": session.stamp,
        }
        if session.provider is not None:
            record["provider"] = json.dumps(session.provider.to_json(), separators=(",", ":"))
        with redis_errors(self._client):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=record)
                pipe.pexpire(key, _ms(ttl_s))
                for index in self._index_keys(session):
                    pipe.zadd(index, {session.sid_hash: created})
                    pipe.zremrangebyscore(index, "-inf", f"({created - self._absolute_s!r}")
                    pipe.expire(index, math.ceil(self._absolute_s))
                await pipe.execute()
        return session_id

    async def get(self, cookie_value: str) -> Found | None:
        sid_hash = parse_session_id(cookie_value)
        if sid_hash is None:
            return None
        cache = self.cache
        if cache is None:
            session = await self._read(sid_hash)
        else:
            session = cache.lookup(sid_hash)
            if session is None:
                epoch = cache.begin(sid_hash)
                try:
                    session = await self._read(sid_hash)
                finally:
                    cache.end(sid_hash, epoch, session)
        return Found(cookie_value, session) if session is not None else None

    async def _read(self, sid_hash: str) -> Session | None:
        with redis_errors(self._client):
            raw = await self._client.hmget(self.session_key(sid_hash), list(_FIELDS))
        return _parse(sid_hash, raw)

    async def refresh(self, session_id: str, session: Session, *, ttl_s: float) -> str | None:
        key = self.session_key(session.sid_hash)
        self._forget(session.sid_hash)
        try:
            with redis_errors(self._client):
                alive = await self._refresh(
                    keys=[key], args=[repr(session.last_seen_at), _ms(ttl_s)]
                )
        finally:
            self._forget(session.sid_hash)
        return "" if alive else None

    async def remove(self, session_id: str, session: Session, *, ttl_s: float) -> None:
        """Delete the session and its entry in the user's index."""
        self._forget(session.sid_hash)
        try:
            with redis_errors(self._client):
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.delete(self.session_key(session.sid_hash))
                    for index in self._index_keys(session):
                        pipe.zrem(index, session.sid_hash)
                    await pipe.execute()
        finally:
            self._forget(session.sid_hash)

    def _forget(self, *sid_hashes: str) -> None:
        """This process is writing these sessions: its cache must not serve them, nor keep a
        read that began before the write."""
        cache = self.cache
        if cache is not None:
            for sid_hash in sid_hashes:
                cache.forget(sid_hash)

    async def remove_user(self, username: str) -> int:
        """Delete every indexed session of ``username`` (local or from a provider); how many
        still existed."""
        members = await self._take_index(
            self.user_key(username), self.user_key(username, provider=True)
        )
        if not members:
            return 0
        self._forget(*members)
        try:
            with redis_errors(self._client):
                deleted: int = await self._client.delete(*(self.session_key(m) for m in members))
        finally:
            self._forget(*members)
        return deleted

    async def remove_provider_sessions(
        self, idp: str, *, sid: str | None, subject: str | None, at: float, ttl_s: float
    ) -> list[str]:
        """Delete the sessions indexed under the provider session ``sid`` (else the provider
        user ``subject``); their hashes."""
        index = (
            self.provider_key(idp, "sid", sid)
            if sid
            else self.provider_key(idp, "sub", subject or "")
        )
        members = await self._take_index(index)
        if members:
            self._forget(*members)
            try:
                with redis_errors(self._client):
                    await self._client.delete(*(self.session_key(m) for m in members))
            finally:
                self._forget(*members)
        return members

    async def _take_index(self, *keys: str) -> list[str]:
        """The members of index sorted sets, read and dropped atomically: a login racing with
        this is either ended here or indexed afresh, never lost from the index while its
        session lives."""
        with redis_errors(self._client):
            async with self._client.pipeline(transaction=True) as pipe:
                for key in keys:
                    pipe.zrange(key, 0, -1)
                pipe.delete(*keys)
                replies = await pipe.execute()
        return [text(member) for members in replies[:-1] for member in members]

    def revocation_key(self, username: str) -> str:
        return f"{self._prefix}r:{username}"

    async def save_revocation(self, username: str, at: float, *, ttl_s: float) -> None:
        """``P r:<username>`` = the time, for replicas that start (or restart) later."""
        key = self.revocation_key(username)
        with redis_errors(self._client):
            # Never move a revocation back in time: keep the later of the two.
            previous = await self._client.get(key)
            if previous is None or float(text(previous)) < at:
                await self._client.set(key, repr(at), px=_ms(ttl_s))

    async def revocations(self) -> dict[str, float]:
        start = len(self.revocation_key(""))
        pattern = _glob_escape(self.revocation_key("")) + "*"
        found: dict[str, float] = {}
        with redis_errors(self._client):
            keys = [text(key) async for key in self._client.scan_iter(match=pattern)]
            if keys:
                values = await self._client.mget(keys)
                for key, value in zip(keys, values, strict=True):
                    if value is not None:
                        with contextlib.suppress(ValueError):
                            found[key[start:]] = float(text(value))
        return found

    async def known_users(self) -> set[str]:
        """Every username with a session index (to end the sessions of removed users)."""
        pattern = _glob_escape(self.user_key("")) + "*"
        start = len(self.user_key(""))
        with redis_errors(self._client):
            return {text(key)[start:] async for key in self._client.scan_iter(match=pattern)}

    def count(self) -> int | None:
        return None

    async def ping(self) -> bool:
        """True when Redis answers PING."""
        try:
            with redis_errors(self._client):
                return bool(await self._client.ping())
        except SessionStoreUnavailable:
            return False

    async def close(self) -> None:
        """Close the cache's connection; the client belongs to whoever created it."""
        if self.cache is not None:
            await self.cache.close()


def _glob_escape(value: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]\\" else c for c in value)


def _parse(sid_hash: str, raw: list[str | bytes | None]) -> Session | None:
    username, created_at, last_seen_at, stamp, provider_json = raw
    if username is None or created_at is None or last_seen_at is None:
        return None
    provider = None
    try:
        if provider_json is not None:
            provider = ProviderLogin.from_json(json.loads(text(provider_json)))
            if provider is None:
                return None  # a damaged record is no session
        return Session(
            sid_hash=sid_hash,
            username=text(username),
            created_at=float(created_at),
            last_seen_at=float(last_seen_at),
            stamp=text(stamp) if stamp is not None else "",
            provider=provider,
        )
    except (ValueError, RecursionError):
        return None
