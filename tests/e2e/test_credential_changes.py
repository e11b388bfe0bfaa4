"""Review finding 5: a change of credentials ends sessions and API tokens, on every backend.

A new password hash, a removed user or ``disabled: true``, applied by SIGHUP, must end the
user's sessions and API bearer tokens (and their open WebSockets); a removed and re-added user
must not get old sessions back; a role change applies to existing sessions at once.
``gateway sessions revoke USER`` ends a user's sessions on demand.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from argon2 import PasswordHasher

from tests.configs import PASSWORDS, users
from tests.e2e.harness import GatewayProcess, config, login, running
from tests.redis_support import free_port
from tests.upstreams import Upstream

JSON = {"Accept": "application/json"}
ROUTES = [
    {
        "name": "admin",
        "match": {"path_prefix": "/admin"},
        "upstream": "app",
        "access": {"roles": ["admin"]},
        "unauthenticated": "status",
    },
    {
        "name": "api",
        "match": {"path_prefix": "/api"},
        "upstream": "app",
        "access": "authenticated",
        "accept_bearer": True,
        "unauthenticated": "status",
    },
    {
        "name": "ws",
        "match": {"path_prefix": "/ws"},
        "upstream": "app",
        "access": "authenticated",
        "websocket": True,
        "unauthenticated": "status",
    },
    {
        "name": "app",
        "match": {"path_prefix": "/"},
        "upstream": "app",
        "access": "authenticated",
        "unauthenticated": "status",
    },
]
CHEAP = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    app = await Upstream().start()
    yield app
    await app.stop()


@pytest.fixture(params=["memory", "redis", "cookie"])
def session_section(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    backend: str = request.param
    if backend == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
        return {"backend": "redis", "redis": {"url": url, "key_prefix": prefix}}
    if backend == "cookie":
        secret = tmp_path / "cookie.key"
        secret.write_bytes(bytes(range(32)))
        return {"backend": "cookie", "cookie": {"secret_file": str(secret)}}
    return {"backend": "memory"}


class Setup:
    """A gateway whose users live in a file the test edits and reloads."""

    def __init__(self, tmp_path: Path, upstream: Upstream, session: dict[str, Any]) -> None:
        self.users_file = tmp_path / "users.yaml"
        self.entries = users("alice", "bob")
        self.write()
        self.document = config(
            tmp_path,
            upstreams={"app": upstream.url},
            routes=ROUTES,
            server={"admin_listen": f"127.0.0.1:{free_port()}"},
            users={"file": str(self.users_file)},
            session=session,
            tokens={"api_tokens": {"enabled": True}},
        )
        self.reloads = 0

    def write(self) -> None:
        self.users_file.write_text(yaml.safe_dump(self.entries), encoding="utf-8")

    def change(self, username: str, **fields: Any) -> None:
        entry = next(e for e in self.entries if e["username"] == username)
        entry.update(fields)
        self.write()

    def remove(self, username: str) -> dict[str, Any]:
        entry = next(e for e in self.entries if e["username"] == username)
        self.entries.remove(entry)
        self.write()
        return entry

    async def reload(self, gateway: GatewayProcess) -> None:
        self.reloads += 1
        gateway.signal(signal.SIGHUP)
        await gateway.wait_log("configuration reloaded", count=self.reloads)


@pytest.fixture
async def setup(tmp_path: Path, upstream: Upstream, session_section: dict[str, Any]) -> Setup:
    return Setup(tmp_path, upstream, session_section)


@pytest.fixture
async def gateway(tmp_path: Path, setup: Setup) -> AsyncIterator[GatewayProcess]:
    async with running(tmp_path, setup.document) as process:
        yield process


async def status(
    gateway: GatewayProcess, path: str, *, cookie: str | None = None, token: str | None = None
) -> int:
    headers = dict(JSON)
    if cookie is not None:
        headers["Cookie"] = f"gw_session={cookie}"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as http,
        http.get(gateway.base + path, headers=headers, allow_redirects=False) as resp,
    ):
        return resp.status


async def api_token(gateway: GatewayProcess, username: str, password: str | None = None) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gateway.base + "/.gateway/token",
            json={"username": username, "password": password or PASSWORDS[username]},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        token: str = (await resp.json())["access_token"]
        return token


async def sign_in(gateway: GatewayProcess, username: str, password: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gateway.base + "/.gateway/login", json={"username": username, "password": password}
        ) as resp,
    ):
        return resp.status


async def open_socket(
    gateway: GatewayProcess, cookie: str
) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(
        gateway.base + "/ws/chat",
        headers={"Cookie": f"gw_session={cookie}", "Origin": gateway.base},
    )
    await ws.send_str("hello")
    assert (await ws.receive_str()) == "hello"
    return http, ws


async def closed_with(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> int:
    """The close code the gateway sent (a close frame is what a browser reports)."""
    message = await asyncio.wait_for(ws.receive(), timeout)
    assert message.type is aiohttp.WSMsgType.CLOSE, message
    code: int = message.data
    return code


# --- changes applied by SIGHUP -------------------------------------------------------------


async def test_a_new_password_ends_sessions_tokens_and_websockets(
    gateway: GatewayProcess, setup: Setup
) -> None:
    cookie = await login(gateway.base, "alice")
    token = await api_token(gateway, "alice")
    bob = await login(gateway.base, "bob")
    http, ws = await open_socket(gateway, cookie)
    assert await status(gateway, "/x", cookie=cookie) == 200
    assert await status(gateway, "/api/x", token=token) == 200

    setup.change("alice", password_hash=CHEAP.hash("a-new-password"))
    await setup.reload(gateway)

    assert await closed_with(ws) == 1008
    await http.close()
    assert await status(gateway, "/x", cookie=cookie) == 401
    assert await status(gateway, "/api/x", token=token) == 401
    assert await status(gateway, "/x", cookie=bob) == 200  # nobody else is touched
    assert await sign_in(gateway, "alice", "a-new-password") == 200


async def test_disabling_a_user_ends_everything_and_refuses_sign_in(
    gateway: GatewayProcess, setup: Setup
) -> None:
    cookie = await login(gateway.base, "alice")
    token = await api_token(gateway, "alice")
    http, ws = await open_socket(gateway, cookie)

    setup.change("alice", disabled=True)
    await setup.reload(gateway)

    assert await closed_with(ws) == 1008
    await http.close()
    assert await status(gateway, "/x", cookie=cookie) == 401
    assert await status(gateway, "/api/x", token=token) == 401
    assert await sign_in(gateway, "alice", PASSWORDS["alice"]) == 401


async def test_a_removed_user_added_back_gets_no_old_session_back(
    gateway: GatewayProcess, setup: Setup
) -> None:
    cookie = await login(gateway.base, "alice")
    token = await api_token(gateway, "alice")

    entry = setup.remove("alice")
    await setup.reload(gateway)
    assert await status(gateway, "/x", cookie=cookie) == 401
    assert await status(gateway, "/api/x", token=token) == 401

    setup.entries.append(entry)  # the very same entry, password hash included
    setup.write()
    await setup.reload(gateway)
    assert await status(gateway, "/x", cookie=cookie) == 401
    assert await status(gateway, "/api/x", token=token) == 401
    assert await status(gateway, "/x", cookie=await login(gateway.base, "alice")) == 200


async def test_a_role_change_applies_to_existing_sessions_at_once(
    gateway: GatewayProcess, setup: Setup
) -> None:
    alice = await login(gateway.base, "alice")
    bob = await login(gateway.base, "bob")
    assert await status(gateway, "/admin/x", cookie=alice) == 200
    assert await status(gateway, "/admin/x", cookie=bob) == 403

    setup.change("alice", roles=[])
    setup.change("bob", roles=["admin"])
    await setup.reload(gateway)

    assert await status(gateway, "/admin/x", cookie=alice) == 403
    assert await status(gateway, "/admin/x", cookie=bob) == 200
    assert await status(gateway, "/x", cookie=alice) == 200  # still signed in


# --- gateway sessions revoke ---------------------------------------------------------------


def revoke(setup: Setup, tmp_path: Path, username: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "revoke.yaml"
    path.write_text(yaml.safe_dump(setup.document, sort_keys=False), encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "gateway", "sessions", "revoke", username, "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_sessions_revoke_ends_a_users_sessions_and_websockets(
    gateway: GatewayProcess, setup: Setup, tmp_path: Path, session_section: dict[str, Any]
) -> None:
    first = await login(gateway.base, "alice")
    second = await login(gateway.base, "alice")
    bob = await login(gateway.base, "bob")
    http, ws = await open_socket(gateway, first)

    result = await asyncio.to_thread(revoke, setup, tmp_path, "alice")

    if session_section["backend"] == "cookie":
        assert result.returncode == 1
        assert "cannot be found" in result.stderr and "disabled: true" in result.stderr
        assert await status(gateway, "/x", cookie=first) == 200  # said so: nothing happened
        await ws.close()
        await http.close()
        return
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ended 2 session(s) of alice"
    assert await closed_with(ws) == 1008
    await http.close()
    assert await status(gateway, "/x", cookie=first) == 401
    assert await status(gateway, "/x", cookie=second) == 401
    assert await status(gateway, "/x", cookie=bob) == 200
    assert await status(gateway, "/x", cookie=await login(gateway.base, "alice")) == 200


async def test_the_admin_revoke_endpoint_needs_the_admin_token(
    tmp_path: Path, upstream: Upstream
) -> None:
    setup = Setup(tmp_path, upstream, {"backend": "memory"})
    async with running(tmp_path, setup.document) as gateway:
        cookie = await login(gateway.base, "alice")
        admin = setup.document["server"]["admin_listen"]
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
                async with http.post(
                    f"http://{admin}/sessions/revoke", json={"user": "alice"}, headers=headers
                ) as resp:
                    assert resp.status == 401
        assert await status(gateway, "/x", cookie=cookie) == 200
        token_file = Path(setup.document["server"]["data_dir"]) / "admin-token"
        assert token_file.stat().st_mode & 0o777 == 0o600


async def test_a_user_removed_while_no_gateway_ran_gets_no_session_back(
    tmp_path: Path, upstream: Upstream, redis_url: str, redis_prefix: str
) -> None:
    # Redis keeps sessions across restarts: a gateway started without the user ends them, so
    # adding the user back later (same password hash) revives nothing.
    setup = Setup(
        tmp_path,
        upstream,
        {"backend": "redis", "redis": {"url": redis_url, "key_prefix": redis_prefix}},
    )
    async with running(tmp_path, setup.document) as first:
        cookie = await login(first.base, "alice")
        assert await status(first, "/x", cookie=cookie) == 200
    entry = setup.remove("alice")
    async with running(tmp_path, setup.document) as second:
        await second.wait_log("no longer configured")
    setup.entries.append(entry)
    setup.write()
    async with running(tmp_path, setup.document) as third:
        assert await status(third, "/x", cookie=cookie) == 401


async def test_signing_out_closes_the_sessions_websockets(
    gateway: GatewayProcess, setup: Setup
) -> None:
    cookie = await login(gateway.base, "alice")
    other = await login(gateway.base, "alice")  # another session of the same user stays open
    http, ws = await open_socket(gateway, cookie)
    http2, ws2 = await open_socket(gateway, other)
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            gateway.base + "/.gateway/logout",
            json={},
            headers={"Cookie": f"gw_session={cookie}", "Origin": gateway.base},
        ) as resp,
    ):
        assert resp.status == 204
    assert await closed_with(ws) == 1008
    await ws2.send_str("still here")
    assert (await ws2.receive_str()) == "still here"
    for session in (http, http2):
        await session.close()


async def test_a_websocket_closes_when_its_session_expires(
    tmp_path: Path, upstream: Upstream
) -> None:
    setup = Setup(
        tmp_path, upstream, {"backend": "memory", "idle_timeout": "2s", "absolute_timeout": "2s"}
    )
    async with running(tmp_path, setup.document) as gateway:
        cookie = await login(gateway.base, "alice")
        http, ws = await open_socket(gateway, cookie)
        started = asyncio.get_running_loop().time()
        assert await closed_with(ws, timeout=6) == 1008
        assert 1.5 < asyncio.get_running_loop().time() - started < 4
        await http.close()


async def test_a_revocation_in_redis_outlives_a_restart(
    tmp_path: Path, upstream: Upstream, redis_url: str, redis_prefix: str
) -> None:
    # Found attacking the gateway: revocations lived in process memory only, so a replica
    # started (or restarted) after `gateway sessions revoke` took the user's API token again.
    setup = Setup(
        tmp_path,
        upstream,
        {"backend": "redis", "redis": {"url": redis_url, "key_prefix": redis_prefix}},
    )
    async with running(tmp_path, setup.document) as gateway:
        token = await api_token(gateway, "bob")
        assert await status(gateway, "/api/x", token=token) == 200
        result = await asyncio.to_thread(revoke, setup, tmp_path, "bob")
        assert result.returncode == 0, result.stderr
        assert await status(gateway, "/api/x", token=token) == 401
    async with running(tmp_path, setup.document) as restarted:
        assert await status(restarted, "/api/x", token=token) == 401
        # A token's iat is in whole seconds: one issued within the second of the revocation
        # cannot be told from one issued before it, and is refused too.
        await asyncio.sleep(1.1)
        fresh = await api_token(restarted, "bob")
        assert await status(restarted, "/api/x", token=fresh) == 200
