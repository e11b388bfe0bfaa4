"""Facts of one HTTP request that several stages read: its credentials, whether it is a browser
navigation or a WebSocket handshake, where a browser says it comes from, and the interim
``100 Continue`` (sent at most once, by whichever stage reads the body)."""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion, HttpVersion11
from multidict import CIMultiDictProxy

from gateway.errors import ExpectationFailed
from gateway.headers import header_tokens

__all__ = [
    "Incoming",
    "bearer_token",
    "check_expectation",
    "foreign_origin",
    "is_websocket_upgrade",
    "send_continue",
    "wants_html",
]


class Incoming(Protocol):
    """What the pipeline reads of a request: aiohttp's ``web.BaseRequest``, or the plain
    request of the gateway's own server (:class:`gateway.plain.PlainRequest`)."""

    @property
    def method(self) -> str: ...

    @property
    def raw_path(self) -> str:
        """The request target as received: the path and the query."""
        ...

    @property
    def headers(self) -> CIMultiDictProxy[str]: ...

    @property
    def version(self) -> HttpVersion: ...

    @property
    def host(self) -> str: ...

    @property
    def secure(self) -> bool: ...

    @property
    def transport(self) -> asyncio.Transport | None: ...

    @property
    def body_exists(self) -> bool: ...

    @property
    def content_length(self) -> int | None: ...


_CONTINUE_SENT: Final = web.RequestKey("gateway.http.continue_sent", bool)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def bearer_token(request: Incoming) -> str | None:
    """The token of an ``Authorization: Bearer`` header (scheme case-insensitive), if any."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def wants_html(request: Incoming) -> bool:
    """True when the client prefers an HTML page (a browser navigation) over JSON."""
    return "text/html" in request.headers.get(hdrs.ACCEPT, "")


def foreign_origin(request: Incoming, public_url: str) -> str | None:
    """The request's ``Origin`` when a browser says it comes from another site, else ``None``
    (no ``Origin``: not a cross-site browser request)."""
    origin = request.headers.get(hdrs.ORIGIN)
    return origin if origin is not None and origin != public_url else None


def is_websocket_upgrade(request: Incoming) -> bool:
    """Whether the request asks to switch to the WebSocket protocol."""
    headers = request.headers
    upgrade = headers.get(hdrs.UPGRADE)
    return (
        upgrade is not None
        and request.method == hdrs.METH_GET
        and "websocket" in header_tokens((upgrade,))
        and "upgrade" in header_tokens(headers.getall(hdrs.CONNECTION, ()))
    )


def check_expectation(request: Incoming) -> None:
    """Refuse (417) an ``Expect`` other than ``100-continue``; answer that one lazily.

    Sending ``100 Continue`` as soon as the head arrives (aiohttp's router does) would come
    before the access decision and the body-size check. The gateway sends it when a stage starts
    reading the body (:func:`send_continue`): after authentication, after the
    ``Content-Length`` check and, when proxying, once the upstream connection is up, so a
    refused or too-large request is answered without the client ever sending its body.
    """
    expect = request.headers.get(hdrs.EXPECT)
    if expect is not None and request.version >= HttpVersion11 and expect.lower() != "100-continue":
        raise ExpectationFailed("unsupported Expect header")


async def send_continue(request: web.BaseRequest) -> None:
    """Send the interim ``100 Continue`` if the client is waiting for one (once per request).

    Call before reading the body, never after the response was prepared.
    """
    if (
        request.version != HttpVersion11
        or request.get(_CONTINUE_SENT)
        or request.headers.get(hdrs.EXPECT, "").lower() != "100-continue"
    ):
        return
    request[_CONTINUE_SENT] = True
    writer = request.writer
    await writer.write(_CONTINUE)
    # Like aiohttp's own handler: the interim response is not part of the response body.
    writer.output_size = 0
