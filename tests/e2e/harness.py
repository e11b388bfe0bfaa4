"""A real ``gateway run`` process in front of real upstreams, configured by YAML written here.

``config(...)`` builds the YAML document as Python data (:func:`tests.configs.config`, with the
test users of :mod:`tests.configs` and their cheap argon2id hashes unless the test gives its
own); ``running(...)`` writes it, starts ``python -m gateway run -c FILE``, waits for healthz
and kills the process group afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests import configs
from tests.configs import PASSWORDS, dump
from tests.e2e.ops.ops_harness import GatewayProcess
from tests.redis_support import free_port


def config(
    tmp_path: Path,
    *,
    upstreams: Mapping[str, Any],
    routes: list[dict[str, Any]],
    port: int | None = None,
    server: Mapping[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A whole configuration document for ``gateway run`` on ``127.0.0.1:port`` (a free port by
    default), ``server.data_dir`` in ``tmp_path``; ``upstreams`` maps names to a URL or a
    settings mapping, ``server`` and ``sections`` as the YAML spells them."""
    port = port or free_port()
    sections.setdefault("users", {"inline": configs.users()})
    sections.setdefault("login", {"throttle": {"max_failures": 1000}})
    return configs.config(
        upstreams,
        routes,
        public_url=f"http://127.0.0.1:{port}",
        listen=f"127.0.0.1:{port}",
        data_dir=tmp_path / "data",
        server={"access_log": "text", "shutdown_grace": "5s", **(server or {})},
        **sections,
    )


def listen_port(document: Mapping[str, Any]) -> int:
    return int(str(document["server"]["listen"]).rpartition(":")[2])


@asynccontextmanager
async def running(tmp_path: Path, document: Mapping[str, Any]) -> AsyncIterator[GatewayProcess]:
    """``gateway run`` with ``document`` as its configuration, ready to serve."""
    path = tmp_path / f"gateway-{listen_port(document)}.yaml"
    path.write_text(dump(document), encoding="utf-8")
    gateway = GatewayProcess(path, listen_port(document))
    admin = document["server"].get("admin_listen")
    try:
        await gateway.wait_ready(f"http://{admin}/healthz" if admin else None)
        yield gateway
    finally:
        gateway.kill()


async def login(base: str, username: str) -> str:
    """Sign in with JSON credentials; the session cookie's value."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base}/.gateway/login",
            json={"username": username, "password": PASSWORDS[username]},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        cookie = resp.cookies.get("gw_session")
        assert cookie is not None
        return cookie.value


async def raw_exchange(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Write ``data`` on a fresh connection and read until the gateway closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
