"""Builders for settings and a real upstream server used across the test suite."""

from __future__ import annotations

import json
import tempfile
import types
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import build_app
from gateway.config.settings import (
    AccessSettings,
    LoginSettings,
    MatchSettings,
    RouteSettings,
    ServerSettings,
    SessionSettings,
    Settings,
    TokenSettings,
    UpstreamSettings,
    UsersSettings,
)

# Generated signing keys go here, never into the checkout's ./.gateway.
TEST_DATA_DIR = Path(tempfile.gettempdir()) / "gateway-tests-data"


def route(
    name: str,
    *,
    prefix: str | None = "/",
    access: str = "public",
    upstream: str = "app",
    **kwargs: Any,
) -> RouteSettings:
    match = kwargs.pop("match", None) or MatchSettings(path_prefix=prefix)
    return RouteSettings(
        name=name, match=match, upstream=upstream, access=AccessSettings(kind=access), **kwargs  # type: ignore[arg-type]
    )


def settings(
    upstream_url: str,
    routes: Iterable[RouteSettings],
    *,
    public_url: str = "http://gw.test",
    upstream: UpstreamSettings | None = None,
    session: SessionSettings | None = None,
    **server: Any,
) -> Settings:
    """Settings for the real app; ``upstream`` replaces the default ``app`` upstream."""
    if upstream is None:
        upstream = UpstreamSettings(name="app", url=upstream_url, read_timeout_s=5.0)
    return Settings(
        server=ServerSettings(
            listen_host="127.0.0.1",
            listen_port=0,
            public_url=public_url,
            **{"data_dir": TEST_DATA_DIR, **server},
        ),
        session=session or SessionSettings(),
        users=UsersSettings(),
        login=LoginSettings(),
        tokens=TokenSettings(issuer=public_url),
        upstreams=types.MappingProxyType({upstream.name: upstream}),
        routes=tuple(routes),
    )


def echo_app() -> web.Application:
    """A real upstream that answers with what it received, as JSON."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "raw_path": request.raw_path,
                "headers": list(request.headers.items()),
                "body": body.decode("latin-1"),
            }
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def received(payload: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(payload)
    return data


async def raw_request(
    port: int,
    target: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> tuple[int, dict[str, str], bytes]:
    """Send one request with the target byte-exact (no client-side URL normalisation)."""
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    headers = dict(headers or {})
    host = headers.pop("Host", "gw.test")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, payload


@pytest.fixture
def make_gateway(aiohttp_client: Any) -> Callable[[Settings], Awaitable[TestClient[Any, Any]]]:
    """``await make_gateway(settings)``: a test client for the real app, without a cookie jar
    (tests send and read cookies themselves)."""

    async def make(settings: Settings) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = await aiohttp_client(
            build_app(settings), cookie_jar=aiohttp.DummyCookieJar()
        )
        return client

    return make
