"""SIGHUP reloads config, users and keys; a broken file changes nothing (CONTRACT section 6).

Every test runs a real ``gateway run`` process on a YAML file in ``tmp_path``, rewrites the file,
sends SIGHUP and watches what is served. With ``workers: 2`` the supervisor forwards SIGHUP to
its workers; requests on new connections (``Connection: close``) land on either worker, so 20 of
them all answering the new way means both reloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from http.cookies import SimpleCookie
from pathlib import Path

import aiohttp
import jwt
import redis

from gateway.tokens import generate_private_key
from tests.configs import PASSWORDS
from tests.e2e.ops.ops_harness import (
    DEFAULT_ROUTES,
    cookie_session,
    free_port,
    get,
    scrape,
    value_of,
    write_config,
)
from tests.support import wait_for

ADDED_ROUTE = """\
  - name: added
    match: { path_prefix: /added }
    upstream: app
    access: public
"""
MEMBERS_PUBLIC = DEFAULT_ROUTES.replace(
    "    access: authenticated\n    unauthenticated: status\n", "    access: public\n"
)
RELOADS = "gateway_config_reloads_total"
REFUSED = "reload refused"


_ADMIN_PORTS: dict[int, int] = {}
"""Admin listener port of the gateway on each main port (metrics are served there only)."""


def _config(tmp_path, port, upstream, **kwargs):
    return write_config(
        tmp_path / "config.yaml",
        port=port,
        admin_port=_ADMIN_PORTS.setdefault(port, free_port()),
        upstream_port=upstream.port,
        data_dir=tmp_path,
        **kwargs,
    )


def _metrics_url(port: int) -> str:
    return f"http://127.0.0.1:{_ADMIN_PORTS[port]}/metrics"


async def _start(spawn, tmp_path, upstream, **kwargs):
    port = free_port()
    config = _config(tmp_path, port, upstream, **kwargs)
    gateway = spawn(config, port)
    await gateway.wait_ready()
    return gateway, port


async def _reload(gateway, tmp_path, upstream, **kwargs):
    _config(tmp_path, gateway.port, upstream, **kwargs)
    gateway.signal(signal.SIGHUP)


async def _status(url: str, **kwargs) -> int:
    status, _ = await get(url, **kwargs)
    return status


async def _login(base: str, username: str) -> tuple[int, str | None]:
    """JSON login; (status, session cookie value)."""
    body = {"username": username, "password": PASSWORDS[username]}
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.post(f"{base}/.gateway/login", json=body) as resp,
    ):
        cookie = SimpleCookie()
        for raw in resp.headers.getall("Set-Cookie", ()):
            cookie.load(raw)
        morsel = cookie.get("gw_session")
        return resp.status, morsel.value if morsel is not None else None


async def test_a_valid_change_is_served_after_sighup(upstream, spawn, tmp_path):
    gateway, _ = await _start(spawn, tmp_path, upstream)
    base = gateway.base
    assert await _status(f"{base}/added/x") == 404
    assert await _status(f"{base}/members/x") == 401

    await _reload(gateway, tmp_path, upstream, routes=MEMBERS_PUBLIC + ADDED_ROUTE)

    async def added_served() -> bool:
        return await _status(f"{base}/added/x") == 200

    await wait_for(added_served)
    assert await _status(f"{base}/members/x") == 200  # access changed: public now
    assert upstream.last.raw_path == "/members/x"
    metrics = await scrape(_metrics_url(gateway.port))
    assert value_of(metrics, RELOADS, result="success") == 1
    assert value_of(metrics, RELOADS, result="failure") is None
    assert "configuration reloaded" in gateway.log
    assert gateway.alive()


async def test_an_invalid_file_is_refused_logged_counted_and_the_old_config_keeps_serving(
    upstream, spawn, tmp_path
):
    gateway, port = await _start(spawn, tmp_path, upstream)
    base = gateway.base
    config = tmp_path / "config.yaml"
    good = config.read_text()

    # 1. Not YAML at all.
    config.write_text(good.replace("routes:\n", "routes: [\n"))
    gateway.signal(signal.SIGHUP)
    await gateway.wait_log(REFUSED)
    assert "invalid YAML" in gateway.log
    assert await _status(f"{base}/public/x") == 200
    assert await _status(f"{base}/members/x") == 401
    metrics = await scrape(_metrics_url(gateway.port))
    assert value_of(metrics, RELOADS, result="failure") == 1
    assert value_of(metrics, RELOADS, result="success") is None

    # 2. Valid YAML, wrong meaning: a route to an upstream that does not exist, and the same
    # file also opening /members to everyone: none of it may be applied.
    _config(
        tmp_path,
        port,
        upstream,
        routes=MEMBERS_PUBLIC + ADDED_ROUTE.replace("upstream: app", "upstream: nope"),
    )
    gateway.signal(signal.SIGHUP)
    await gateway.wait_log(REFUSED, count=2)
    assert 'unknown upstream "nope"' in gateway.log
    assert "routes[2].upstream" in gateway.log
    assert await _status(f"{base}/members/x") == 401
    assert await _status(f"{base}/added/x") == 404
    assert (await get(f"{base}/.gateway/readyz"))[0] == 200
    metrics = await scrape(_metrics_url(gateway.port))
    assert value_of(metrics, RELOADS, result="failure") == 2

    # 3. Fixed: applied, and counted as a success.
    _config(tmp_path, port, upstream, routes=DEFAULT_ROUTES + ADDED_ROUTE)
    gateway.signal(signal.SIGHUP)
    await gateway.wait_log("configuration reloaded")
    assert await _status(f"{base}/added/x") == 200
    metrics = await scrape(_metrics_url(gateway.port))
    assert value_of(metrics, RELOADS, result="success") == 1
    assert value_of(metrics, RELOADS, result="failure") == 2
    assert gateway.alive()


async def test_a_memory_session_outlives_a_reload(upstream, spawn, tmp_path):
    gateway, _ = await _start(spawn, tmp_path, upstream)
    base = gateway.base
    status, session = await _login(base, "alice")
    assert status == 200 and session
    cookie = {"Cookie": f"gw_session={session}"}
    assert await _status(f"{base}/members/before", headers=cookie) == 200

    await _reload(gateway, tmp_path, upstream, routes=DEFAULT_ROUTES + ADDED_ROUTE)
    await gateway.wait_log("configuration reloaded")

    assert await _status(f"{base}/added/x") == 200
    status, body = await get(f"{base}/.gateway/userinfo", headers=cookie)
    assert status == 200, body
    assert json.loads(body)["user"]["username"] == "alice"
    assert await _status(f"{base}/members/after", headers=cookie) == 200
    assert upstream.last.raw_path == "/members/after"
    token = upstream.last.value("Authorization")
    assert token is not None  # identified: a JWT was minted
    for secret in (session, PASSWORDS["alice"], token.removeprefix("Bearer ")):
        assert secret not in gateway.log


async def test_a_user_added_to_the_file_can_sign_in_after_sighup(upstream, spawn, tmp_path):
    gateway, _ = await _start(spawn, tmp_path, upstream, users=("alice",))
    base = gateway.base
    assert (await _login(base, "dave"))[0] == 401

    await _reload(gateway, tmp_path, upstream, users=("alice", "dave"))
    await gateway.wait_log("configuration reloaded")

    status, session = await _login(base, "dave")
    assert status == 200 and session
    assert await _status(f"{base}/members/x", headers={"Cookie": f"gw_session={session}"}) == 200
    assert PASSWORDS["dave"] not in gateway.log and session not in gateway.log


async def test_a_slow_request_started_before_a_reload_completes(upstream, spawn, tmp_path):
    gateway, _ = await _start(spawn, tmp_path, upstream)
    base = gateway.base
    slow = asyncio.ensure_future(get(f"{base}/public/slow?s=2"))
    try:
        await wait_for(_upstream_got(upstream, "/public/slow?s=2"), timeout=10)
        # The upstream's settings change too, so the old connection pool is retired: it must
        # stay open until the slow request is done with it.
        await _reload(
            gateway,
            tmp_path,
            upstream,
            routes=DEFAULT_ROUTES + ADDED_ROUTE,
            upstream_extra="    connect_timeout: 3s\n",
        )
        await gateway.wait_log("configuration reloaded")
        assert await _status(f"{base}/added/x") == 200
        assert not slow.done()
        status, body = await asyncio.wait_for(slow, timeout=15)
    finally:
        if not slow.done():
            slow.cancel()
    assert (status, body) == (200, b"slept 2.0")
    assert await _status(f"{base}/public/after") == 200  # and the new pool serves
    assert "unexpected error" not in gateway.log


def _upstream_got(upstream, path: str):
    async def probe() -> bool:
        return any(r.raw_path == path for r in upstream.received)

    return probe


async def _start_two_workers(spawn, tmp_path, upstream):
    session = cookie_session(tmp_path)
    gateway, _ = await _start(spawn, tmp_path, upstream, workers=2, session=session)
    # A SIGHUP that reaches a worker before its handler is installed waits for it (the worker
    # starts with the signal blocked: test_a_sighup_while_the_workers_start_is_not_lost).
    workers = await gateway.wait_workers_listening(2)
    return gateway, session, workers


async def _all_added(base: str, count: int = 20) -> list[int]:
    return [await _status(f"{base}/added/{i}") for i in range(count)]  # new connection each


async def test_with_two_workers_sighup_reaches_both(upstream, spawn, tmp_path):
    gateway, session, _ = await _start_two_workers(spawn, tmp_path, upstream)
    base = gateway.base
    assert await _status(f"{base}/added/x") == 404

    await _reload(
        gateway,
        tmp_path,
        upstream,
        workers=2,
        session=session,
        routes=DEFAULT_ROUTES + ADDED_ROUTE,
    )
    await gateway.wait_log("configuration reloaded", count=2)  # one line per worker

    assert await _all_added(base) == [200] * 20
    metrics = await scrape(_metrics_url(gateway.port))
    assert value_of(metrics, RELOADS, result="success") == 2  # summed over the workers


async def test_a_worker_restarted_after_a_reload_serves_the_reloaded_config(
    upstream, spawn, tmp_path
):
    gateway, session, workers = await _start_two_workers(spawn, tmp_path, upstream)
    started = time.monotonic()
    await _reload(
        gateway,
        tmp_path,
        upstream,
        workers=2,
        session=session,
        routes=DEFAULT_ROUTES + ADDED_ROUTE,
    )
    await gateway.wait_log("configuration reloaded", count=2)
    assert await _all_added(gateway.base) == [200] * 20

    # One worker dies (OOM killer, a crash): the supervisor starts another one (it only does so
    # for a worker that lived 2s or more; a younger one stops everything).
    await asyncio.sleep(max(0.0, started + 2.2 - time.monotonic()))
    os.kill(workers[0], signal.SIGKILL)
    await gateway.wait_log("restarting")
    await wait_for(_replaced(gateway, workers[0]), timeout=20)

    statuses = await _all_added(gateway.base)
    assert statuses == [200] * 20, "the new worker serves the configuration of start-up"


def _replaced(gateway, dead: int):
    async def probe() -> bool:
        workers = gateway.children()
        return len(workers) == 2 and dead not in workers and gateway.listening() == set(workers)

    return probe


async def _caught_starting(spawn, tmp_path, upstream, session):
    """A two-worker gateway whose workers were both stopped (SIGSTOP) as soon as they were
    forked, before they listen; ``None`` if one got to listen first (a busy machine)."""
    port = free_port()
    gateway = spawn(_config(tmp_path, port, upstream, workers=2, session=session), port)
    stopped: list[int] = []
    deadline = time.monotonic() + 30
    while len(stopped) < 2:
        assert gateway.alive(), gateway.log
        assert time.monotonic() < deadline, f"no workers forked:\n{gateway.log}"
        with contextlib.suppress(OSError):
            for pid in gateway.children():
                if pid not in stopped:
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
        await asyncio.sleep(0.001)
    if gateway.listening():
        gateway.kill()
        return None
    return gateway, stopped


def _sighup_pending(pid: int) -> bool:
    """SIGHUP waits, pending, for process ``pid`` (from /proc: ShdPnd, the process-wide set)."""
    status = Path(f"/proc/{pid}/status").read_text()
    pending = int(re.search(r"(?m)^ShdPnd:\s*([0-9a-f]+)$", status)[1], 16)
    return bool(pending & (1 << (signal.SIGHUP - 1)))


async def test_a_sighup_while_the_workers_start_is_not_lost(upstream, spawn, tmp_path):
    """The supervisor takes SIGHUP as soon as it forks its workers and forwards it; a worker
    still starting (not yet listening) must not lose it, nor die of it."""
    session = cookie_session(tmp_path)
    for _ in range(5):
        caught = await _caught_starting(spawn, tmp_path, upstream, session)
        if caught is not None:
            break
    assert caught is not None, "could not catch the workers before they listened"
    gateway, stopped = caught
    try:
        await _reload(
            gateway,
            tmp_path,
            upstream,
            workers=2,
            session=session,
            routes=DEFAULT_ROUTES + ADDED_ROUTE,
        )
        # The supervisor forwards it to both workers, stopped: it waits, pending, in each.
        await wait_for(lambda: all(_sighup_pending(pid) for pid in stopped))
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    await gateway.wait_workers_listening(2)
    assert sorted(gateway.children()) == sorted(stopped), gateway.log  # neither died of it

    async def both_reloaded() -> bool:
        return await _all_added(gateway.base) == [200] * 20

    await wait_for(both_reloaded, timeout=5, interval=0.2)


def _keys_yaml(*files) -> str:
    entries = "".join(f'    - file: "{f}"\n' for f in files)
    return f"tokens:\n  signing_keys:\n{entries}"


async def _kids(base: str) -> list[str]:
    status, body = await get(f"{base}/.gateway/jwks.json")
    assert status == 200
    return [key["kid"] for key in json.loads(body)["keys"]]


async def test_signing_keys_are_reloaded_and_a_missing_key_file_is_refused(
    upstream, spawn, tmp_path
):
    keys = {}
    for name in ("old", "new"):
        pem, kid = generate_private_key("EdDSA")
        (tmp_path / f"{name}.pem").write_bytes(pem)
        keys[name] = kid
    old, new = tmp_path / "old.pem", tmp_path / "new.pem"
    gateway, _ = await _start(spawn, tmp_path, upstream, extra=_keys_yaml(old))
    base = gateway.base
    assert await _kids(base) == [keys["old"]]

    # A key file that does not exist: refused, the old key keeps signing.
    await _reload(gateway, tmp_path, upstream, extra=_keys_yaml(tmp_path / "missing.pem", old))
    await gateway.wait_log(REFUSED)
    assert "missing.pem" in gateway.log
    assert await _kids(base) == [keys["old"]]

    # Rotation: the new key signs, the old one is still published.
    await _reload(gateway, tmp_path, upstream, extra=_keys_yaml(new, old))
    await gateway.wait_log("configuration reloaded")
    assert await _kids(base) == [keys["new"], keys["old"]]
    status, session = await _login(base, "alice")
    assert status == 200
    assert await _status(f"{base}/members/x", headers={"Cookie": f"gw_session={session}"}) == 200
    token = upstream.last.value("Authorization")
    assert token is not None
    assert jwt.get_unverified_header(token.removeprefix("Bearer "))["kid"] == keys["new"]


async def test_a_user_removed_from_the_file_is_signed_out_at_once(upstream, spawn, tmp_path):
    gateway, _ = await _start(spawn, tmp_path, upstream, users=("alice", "bob"))
    base = gateway.base
    status, session = await _login(base, "bob")
    assert status == 200 and session
    cookie = {"Cookie": f"gw_session={session}"}
    assert await _status(f"{base}/members/x", headers=cookie) == 200

    await _reload(gateway, tmp_path, upstream, users=("alice",))
    await gateway.wait_log("configuration reloaded")

    assert await _status(f"{base}/members/x", headers=cookie) == 401
    assert await _status(f"{base}/.gateway/userinfo", headers=cookie) == 401
    assert (await _login(base, "bob"))[0] == 401


async def test_a_reload_changing_only_the_login_throttle_signs_nobody_out(
    upstream, spawn, tmp_path
):
    gateway, _ = await _start(spawn, tmp_path, upstream)
    base = gateway.base
    status, session = await _login(base, "alice")
    assert status == 200 and session
    cookie = {"Cookie": f"gw_session={session}"}

    throttle = "login:\n  throttle:\n    max_failures: 3\n    window: 1m\n    lockout: 2m\n"
    await _reload(gateway, tmp_path, upstream, extra=throttle)
    await gateway.wait_log("configuration reloaded")

    status, body = await get(f"{base}/.gateway/userinfo", headers=cookie)
    assert status == 200, "alice was signed out by a change to the login throttle"
    assert json.loads(body)["user"]["username"] == "alice"


def _redis_session(url: str, idle: str) -> str:
    return f'  backend: redis\n  idle_timeout: {idle}\n  redis:\n    url: "{url}"\n'


def _gateway_connections(url: str) -> int:
    """Connections to a private redis-server other than the one asking."""
    client = redis.Redis.from_url(url)
    try:
        return len(client.client_list()) - 1
    finally:
        client.close()


async def test_fifty_overlapping_reloads_leak_no_redis_connection(
    upstream, spawn, tmp_path, own_redis_server
):
    # Every reload changes the session settings, so each builds a new store and Redis client:
    # the one it replaces must be closed, however the SIGHUPs overlap.
    url = own_redis_server.url
    gateway, _ = await _start(
        spawn, tmp_path, upstream, session=_redis_session(url, "30m"), routes=MEMBERS_PUBLIC
    )

    async def busy() -> None:
        for i in range(10):
            assert await _status(f"{gateway.base}/members/x{i}") == 200
        browser_cookie = await cookie_of_login(gateway.base)
        assert await _status(f"{gateway.base}/members/x", headers=browser_cookie) == 200

    await busy()
    before = _gateway_connections(url)
    assert before >= 1
    cookie = await cookie_of_login(gateway.base)
    stop = asyncio.Event()

    async def load() -> None:
        # Requests that use the store while runtimes come and go (a retired runtime is only
        # closed after its last request; one never retired keeps its connections).
        async with aiohttp.ClientSession() as http:
            while not stop.is_set():
                async with http.get(f"{gateway.base}/members/x", headers=cookie) as resp:
                    await resp.read()

    loaders = [asyncio.ensure_future(load()) for _ in range(4)]
    sent = 0
    try:
        for burst in range(5):
            _config(
                tmp_path,
                gateway.port,
                upstream,
                routes=MEMBERS_PUBLIC,
                session=_redis_session(url, f"{31 + burst}m"),
            )
            for _ in range(10):
                gateway.signal(signal.SIGHUP)
                sent += 1
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(*loaders)
    assert sent == 50
    # Serialised: at most one reload runs and at most one more waits, whatever arrives.
    await gateway.wait_log("configuration reloaded", count=5)
    await asyncio.sleep(1.0)
    await busy()
    # The current runtime's pool holds a connection per request it served at once (the four
    # loaders), besides what it held before; every replaced runtime's connections are gone.
    most = before + len(loaders)
    after = await wait_for(lambda: _settled(url, most), timeout=10, interval=0.1)
    assert after <= most, (before, after)


async def _settled(url: str, most: int) -> int | None:
    count = _gateway_connections(url)
    return count if count <= most else None


async def cookie_of_login(base: str) -> dict[str, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base}/.gateway/login", json={"username": "alice", "password": PASSWORDS["alice"]}
        ) as resp,
    ):
        assert resp.status == 200
        return {"Cookie": f"gw_session={resp.cookies['gw_session'].value}"}
