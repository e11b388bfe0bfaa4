"""The upstream-client interface: everything the proxy needs from an HTTP client.

Kept small on purpose so a leaner implementation (raw asyncio connections and a fast parser)
can replace the aiohttp one without touching the rest of the gateway.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from gateway.config.settings import UpstreamSettings
from gateway.errors import UpstreamError

if TYPE_CHECKING:
    from aiohttp import ClientWebSocketResponse

Headers = Sequence[tuple[str, str]]


@dataclass(slots=True, kw_only=True)
class UpstreamRequest:
    upstream: UpstreamSettings
    method: str
    target: str
    """Path and query as they go on the request line, e.g. ``/a/b?x=1`` (already encoded)."""
    headers: Headers
    """Complete header list to send, hop-by-hop headers already removed. Framing headers
    (``Content-Length``, ``Transfer-Encoding``) are not in it: the client derives them from
    ``body`` and ``content_length``."""
    body: AsyncIterable[bytes] | None
    """Request body stream; ``None`` for no body."""
    content_length: int | None = None
    """Known body length; ``None`` with a body means chunked."""


class UpstreamResponse(Protocol):
    status: int
    reason: str
    headers: Headers
    body_complete: bytes | None
    """The whole body when it arrived together with the head (the response can then go to the
    client in one write), else ``None``; :meth:`iter_body` yields it either way."""

    def iter_body(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive. Raises ``UpstreamAborted`` if the upstream
        closes before the body is complete, ``UpstreamTimeout`` on a read timeout."""
        ...

    def release(self) -> None:
        """Give the connection back (or close it if the body was not fully read)."""
        ...


class UpstreamClient(Protocol):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Send the request and return once the response head has arrived.

        Raises :class:`gateway.errors.UpstreamUnavailable` (connect refused/failed),
        :class:`gateway.errors.UpstreamTimeout` (connect or read timeout) or
        :class:`gateway.errors.UpstreamError` (malformed response).
        """
        ...

    async def close(self) -> None: ...


class WebSocketRefused(UpstreamError):
    """The upstream answered a WebSocket handshake with an ordinary response (e.g. 403)."""

    reason = "websocket_refused"

    def __init__(self, upstream_status: int, headers: Headers) -> None:
        super().__init__(f"upstream refused the WebSocket handshake with {upstream_status}")
        self.upstream_status = upstream_status
        self.headers = headers


@runtime_checkable
class WebSocketUpstreamClient(UpstreamClient, Protocol):
    """An :class:`UpstreamClient` that can also open WebSockets to upstreams."""

    def websocket(
        self, request: UpstreamRequest, protocols: Sequence[str]
    ) -> AbstractAsyncContextManager[ClientWebSocketResponse[bool]]:
        """Open a WebSocket to ``request.upstream`` + ``request.target`` with ``request.headers``
        (handshake headers are generated), offering ``protocols``; closed on exit. It must not
        answer close frames by itself (``autoclose=False``): the relay does, once passed on.

        Raises :class:`WebSocketRefused` when the upstream answers with a non-101 status, and the
        :meth:`UpstreamClient.send` errors otherwise.
        """
        ...
