"""``gateway sessions revoke USER``: reach the sessions of running gateways.

- ``memory``: the sessions live in the running process, reached through its admin listener
  (``server.admin_listen``) with the admin token from ``server.data_dir``.
- ``redis``: the sessions are deleted in Redis directly (so on every replica at once) and every
  gateway process is told on the revocation channel (open WebSockets, API tokens, caches).
"""

from __future__ import annotations

import time

import aiohttp
from redis.exceptions import RedisError

from gateway.config.settings import Settings
from gateway.identity.redis_client import create_redis_client
from gateway.identity.sessions.base import SessionStoreUnavailable
from gateway.identity.sessions.redis import RedisSessionStore
from gateway.revoke import ADMIN_TOKEN_NAME, publish_revocation, revocation_ttl_s

_TIMEOUT = aiohttp.ClientTimeout(total=10)


class RevokeError(Exception):
    """Why the sessions could not be reached (a message for the operator)."""


async def revoke_user(settings: Settings, username: str) -> int:
    """End every session of ``username``; how many ended. Raises :class:`RevokeError`."""
    if settings.session.backend == "redis":
        return await _in_redis(settings, username)
    return await _through_admin(settings, username)


async def _in_redis(settings: Settings, username: str) -> int:
    redis = settings.session.redis
    client = create_redis_client(redis)
    try:
        store = RedisSessionStore(
            client,
            key_prefix=redis.key_prefix,
            absolute_timeout_s=settings.session.absolute_timeout_s,
        )
        ended = await store.remove_user(username)
        # Remembered in Redis for replicas that start later; told to the running ones.
        await store.save_revocation(username, time.time(), ttl_s=revocation_ttl_s(settings))
        await publish_revocation(client, redis.key_prefix, username)
        return ended
    except (SessionStoreUnavailable, RedisError, OSError) as exc:
        raise RevokeError(f"cannot reach Redis ({type(exc).__name__})") from None
    finally:
        await client.aclose()


async def _through_admin(settings: Settings, username: str) -> int:
    server = settings.server
    if server.admin_listen is None:
        raise RevokeError(
            "with the memory session backend the sessions live in the running gateway: set "
            "server.admin_listen so this command can reach it"
        )
    token_path = server.data_dir / ADMIN_TOKEN_NAME
    try:
        token = token_path.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise RevokeError(
            f"cannot read the admin token {token_path} ({exc.strerror or exc}); is the gateway "
            "running with this configuration, and may this user read its data_dir?"
        ) from None
    host, port = server.admin_listen
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - compared, not bound
        host = "127.0.0.1"
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/sessions/revoke"
    try:
        async with (
            aiohttp.ClientSession(timeout=_TIMEOUT) as http,
            http.post(
                url, json={"user": username}, headers={"Authorization": f"Bearer {token}"}
            ) as resp,
        ):
            body = await resp.json(content_type=None)
            if resp.status != 200:
                raise RevokeError(f"the admin listener at {url} answered {resp.status}")
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        raise RevokeError(
            f"cannot reach the admin listener at {url} ({type(exc).__name__})"
        ) from None
    ended = body.get("sessions_ended") if isinstance(body, dict) else None
    if not isinstance(ended, int):
        raise RevokeError(f"unexpected answer from {url}")
    return ended
