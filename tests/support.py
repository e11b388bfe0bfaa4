"""A gateway served in this process exactly as ``gateway run`` serves it, with a client for it.

:meth:`GatewayClient.start` takes the configuration as the YAML document (Python data, see
:mod:`tests.configs`) and reads it with the gateway's own loader.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import aiohttp
import pytest
from yarl import URL

from gateway.app import Gateway
from gateway.bundle import build
from gateway.config.settings import ClientTimeouts
from gateway.listener import Handler, Listener
from gateway.upstream import ClientFactory
from tests.configs import load

DEFAULT_TIMEOUTS = ClientTimeouts()

T = TypeVar("T")


async def wait_for(
    condition: Callable[[], T | Awaitable[T]],
    timeout: float = 15.0,
    *,
    interval: float = 0.02,
    what: str = "",
) -> T:
    """Poll ``condition()`` (a plain or an async function) until it returns something truthy,
    and return that; fail the test once ``timeout`` seconds pass without it.

    For what a test must see happen, rather than a fixed sleep that a busy machine outlasts:
    ``await wait_for(lambda: upstream.hits == 1)``.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{what or 'condition'} not met within {timeout} s (last: {result!r})"
            )
        await asyncio.sleep(interval)


async def raw_request(
    port: int,
    target: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> tuple[int, dict[str, str], bytes]:
    """Send one request with the target byte-exact (no client-side URL normalisation)."""
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


class CapturedAccessLog:
    """The access log of an in-process gateway as records of the ``gateway.access`` logger,
    one per line and at once, for ``caplog`` (``gateway run`` writes the same lines to stderr
    in batches: tests/e2e/ops/test_access_log_batches.py)."""

    def append(self, line: str) -> None:
        _ACCESS.info("%s", line)

    def flush(self) -> None:
        pass


_ACCESS = logging.getLogger("gateway.access")


class GatewayClient:
    """A gateway served in this process exactly as ``gateway run`` serves it (the same
    :class:`~gateway.listener.Listener`), on a free loopback port, with an HTTP client for it.

    ``get``/``post``/... take a path and return aiohttp's request context (``await`` it, or
    ``async with``); responses are released when the client closes.
    """

    def __init__(
        self,
        listener: Listener,
        session: aiohttp.ClientSession,
        *,
        gateway: Gateway | None = None,
        closers: Iterable[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self.listener = listener
        self.session = session
        self._gateway = gateway
        self._closers = list(closers)
        self.host = "127.0.0.1"
        self.port = listener.port
        self.admin: Listener | None = None
        """The admin listener, when the settings have ``server.admin_listen``."""

    @property
    def gateway(self) -> Gateway:
        assert self._gateway is not None, "not serving a whole gateway"
        return self._gateway

    @classmethod
    async def start(
        cls,
        document: Mapping[str, Any],
        *,
        cookie_jar: aiohttp.abc.AbstractCookieJar | None = None,
        client_factory: ClientFactory | None = None,
    ) -> GatewayClient:
        """Serve the configuration ``document`` (:func:`tests.configs.config`), loaded and
        built as ``gateway run`` loads and builds its file."""
        settings = load(document)
        gateway = Gateway(
            build(settings, generate_key=True),
            client_factory=client_factory,
            access_sink=CapturedAccessLog(),
        )
        listener = Listener(gateway.handle, settings.server.timeouts, plain=gateway.handle_plain)
        await listener.start("127.0.0.1", 0)
        closers = [gateway.close]
        admin = None
        if settings.server.admin_listen is not None:
            # On a free port of its own, whatever port the settings name.
            admin = Listener(gateway.handle_admin, settings.server.timeouts)
            await admin.start("127.0.0.1", 0)
            closers.insert(0, admin.stop)
        client = cls(listener, new_session(cookie_jar), gateway=gateway, closers=closers)
        client.admin = admin
        return client

    @classmethod
    async def serve(
        cls,
        handler: Handler,
        *,
        timeouts: ClientTimeouts = DEFAULT_TIMEOUTS,
        closers: Iterable[Callable[[], Awaitable[None]]] = (),
    ) -> GatewayClient:
        """Serve a handler of one's own through the gateway's Listener (a part of the pipeline)."""
        listener = Listener(handler, timeouts)
        await listener.start("127.0.0.1", 0)
        return cls(listener, new_session(None), closers=closers)

    def admin_url(self, path: str) -> URL:
        assert self.admin is not None, "no server.admin_listen in these settings"
        return URL(f"http://{self.host}:{self.admin.port}{path}", encoded=True)

    def make_url(self, path: str) -> URL:
        return URL(f"http://{self.host}:{self.port}{path}", encoded=True)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.session.request(method, self.make_url(path), **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Any:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> Any:
        return self.request("HEAD", path, **kwargs)

    def options(self, path: str, **kwargs: Any) -> Any:
        return self.request("OPTIONS", path, **kwargs)

    def ws_connect(self, path: str, **kwargs: Any) -> Any:
        return self.session.ws_connect(self.make_url(path), **kwargs)

    async def close(self) -> None:
        await self.session.close()
        await self.listener.stop()
        for close in self._closers:
            await close()


def new_session(cookie_jar: aiohttp.abc.AbstractCookieJar | None) -> aiohttp.ClientSession:
    jar = cookie_jar if cookie_jar is not None else aiohttp.DummyCookieJar()
    return aiohttp.ClientSession(cookie_jar=jar)


MakeGateway = Callable[..., Awaitable[GatewayClient]]


@pytest.fixture
async def make_gateway() -> AsyncIterator[MakeGateway]:
    """``await make_gateway(document)``: a :class:`GatewayClient` serving that configuration
    document, without a cookie jar (tests send and read cookies themselves); closed at
    teardown."""
    started: list[GatewayClient] = []

    async def make(document: Mapping[str, Any], **kwargs: Any) -> GatewayClient:
        client = await GatewayClient.start(document, **kwargs)
        started.append(client)
        return client

    yield make
    for client in reversed(started):
        await client.close()
