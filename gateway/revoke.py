"""Ending a user's sessions on purpose: ``gateway sessions revoke``, and reloads that change a
user's credentials.

Ending a user means, in this process: their sessions are deleted from the store (every replica
sees that with redis), everything of theirs that began before now is refused from now on
(:class:`~gateway.identity.revocation.Revocations`: API tokens, cookie sessions), their cached
upstream tokens are forgotten and their open WebSockets are closed. After a reload, WebSockets
whose route no longer admits their user are closed too (roles apply at once).

With the redis backend, ``gateway sessions revoke`` deletes the sessions in Redis and publishes
the username on ``<key_prefix>revoked``; every gateway process listens there
(:func:`listen_for_revocations`) and does the rest locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.access import Decision, decide_access
from gateway.config.settings import Settings
from gateway.identity.redis_client import text
from gateway.identity.revocation import changed_credentials
from gateway.identity.sessions import SessionStoreUnavailable
from gateway.runtime import Runtime
from gateway.websockets import OpenWebSocket

log = logging.getLogger("gateway.revoke")

ADMIN_TOKEN_NAME = "admin-token"  # noqa: S105 - a file name, not a secret
"""File in ``server.data_dir`` holding the secret that ``gateway sessions revoke`` shows the
admin listener (created by ``gateway run``, mode 0600)."""

_FEED_RETRY_S = 2.0


def revocation_ttl_s(settings: Settings) -> float:
    """How long a revocation must be remembered: the longest anything it ends could live."""
    return max(settings.session.absolute_timeout_s, settings.tokens.api_tokens.ttl_s)


async def load_revocations(runtime: Runtime) -> None:
    """At start-up: the revocations other processes saved (redis), so a replica started after
    ``gateway sessions revoke`` refuses the revoked user's earlier API tokens too."""
    try:
        saved = await runtime.sessions.revocations()
    except SessionStoreUnavailable:
        return
    for username, at in saved.items():
        runtime.revocations.revoke(username, at)


def revocation_channel(key_prefix: str) -> str:
    return f"{key_prefix}revoked"


async def end_users(runtime: Runtime, usernames: Iterable[str], *, now: float) -> int:
    """End everything of ``usernames`` in this process (see module docs); sessions deleted."""
    names = set(usernames)
    if not names:
        return 0
    for username in names:
        runtime.revocations.revoke(username, now)
    ended = 0
    ttl_s = revocation_ttl_s(runtime.settings)
    for username in names:
        try:
            await runtime.sessions.save_revocation(username, now, ttl_s=ttl_s)
            ended += await runtime.sessions.delete_user(username)
        except SessionStoreUnavailable:
            log.warning(
                "could not delete the sessions of a revoked user: store unavailable; "
                "they are refused here all the same",
                extra={"reason": "revoke_store_unavailable"},
            )
    runtime.tokens.cache.clear()  # cheap, rare, and no per-user index is needed
    await runtime.sockets.close_where(lambda entry: entry.username in names)
    return ended


async def after_reload(old: Runtime, new: Runtime, *, now: float) -> None:
    """End the users whose credentials the reload changed; close WebSockets that the new
    users and routes no longer admit."""
    changed = changed_credentials(old.users, new.users)
    if changed:
        log.info(
            "credentials changed for %d user(s): their sessions end",
            len(changed),
            extra={"reason": "credentials_changed"},
        )
        await end_users(new, changed, now=now)
    routes = {route.name: route for route in new.settings.routes}

    def refused(entry: OpenWebSocket) -> bool:
        route = routes.get(entry.route)
        if route is None:
            return True  # the route is gone
        if entry.username is None:
            return decide_access(route.access, None, frozenset()) is not Decision.ALLOW
        user = new.users.get(entry.username)
        if user is None:
            # A removed local user was ended above; a user of an OpenID Connect provider is in
            # no directory: the new rules are checked against the roles their session holds.
            return decide_access(route.access, entry.username, entry.roles) is not Decision.ALLOW
        if user.disabled:
            return True
        return decide_access(route.access, user.username, user.roles) is not Decision.ALLOW

    await new.sockets.close_where(refused)


async def forget_removed_users(runtime: Runtime) -> None:
    """At start-up: delete the stored sessions of users the configuration no longer has (they
    were removed while no gateway ran to see it), so adding one back later revives nothing."""
    try:
        known = await runtime.sessions.known_users()
    except SessionStoreUnavailable:
        return  # the next start, or reloads, will do it
    gone = sorted(name for name in known if name not in runtime.users)
    for username in gone:
        with contextlib.suppress(SessionStoreUnavailable):
            await runtime.sessions.delete_user(username)
    if gone:
        log.info(
            "ended the stored sessions of %d user(s) no longer configured",
            len(gone),
            extra={"reason": "removed_users"},
        )


async def listen_for_revocations(
    current: Callable[[], Runtime], on_revoke: Callable[[str], Awaitable[None]]
) -> None:
    """Run until cancelled: call ``on_revoke(username)`` for each username published on the
    revocation channel of the current runtime's Redis (followed across reloads); reconnect
    after any failure."""
    while True:
        runtime = current()
        client = runtime.redis
        if client is None:  # a reload moved to another backend: nothing to listen to
            await asyncio.sleep(_FEED_RETRY_S)
            continue
        channel = revocation_channel(runtime.settings.session.redis.key_prefix)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                while current() is runtime or current().redis is client:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=_FEED_RETRY_S
                    )
                    if message is not None and message.get("type") == "message":
                        await on_revoke(text(message["data"]))
        except (RedisError, OSError) as exc:
            log.debug("revocation feed lost (%s); retrying", type(exc).__name__)
            await asyncio.sleep(_FEED_RETRY_S)


async def publish_revocation(client: Redis, key_prefix: str, username: str) -> None:
    """Tell every gateway process on this Redis that ``username`` was revoked."""
    await client.publish(revocation_channel(key_prefix), username)


# --- the admin token ---------------------------------------------------------------------------


def ensure_admin_token(data_dir: Path) -> str:
    """The admin listener's secret in ``data_dir`` (created 0600 on first use)."""
    path = data_dir / ADMIN_TOKEN_NAME
    with contextlib.suppress(FileNotFoundError):
        existing = path.read_text(encoding="ascii").strip()
        if existing:
            return existing
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # SECURITY: created 0600 from the start; whoever can read data_dir is already trusted with
    # the signing key that lives there.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, token.encode("ascii") + b"\n")
    finally:
        os.close(fd)
    return token


def admin_token_matches(expected: str, authorization: str | None) -> bool:
    """``Authorization: Bearer <token>`` equal to ``expected`` (constant time)."""
    if not authorization or not expected:
        return False
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())
