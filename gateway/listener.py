"""Serving HTTP: aiohttp's low-level server with the gateway's own connection protocol.

aiohttp parses requests and writes responses; this module owns what happens on a connection
around them, which aiohttp's defaults get wrong for a gateway that faces the internet:

- **Parser errors never echo the request.** aiohttp's own 400 page quotes the offending line, a
  ``Cookie`` header included, so script on any page behind the gateway could read an HttpOnly
  session cookie by sending a malformed or oversized cookie. Here such errors get a fixed
  message and nothing of the request.
- **Timeouts for slow or silent clients** (``server.timeouts``): the request head must arrive
  within ``request_header`` (else 408 and close), an idle keep-alive connection is closed after
  ``keepalive`` (aiohttp's default is an hour).
- **Draining**: once :meth:`Listener.drain` is called every response carries
  ``Connection: close`` and connections quiet between two requests are closed, so keep-alive
  clients move to another replica instead of being cut when the process exits.

A :class:`Listener` serves one ``async handler(request) -> response`` on one address; the
gateway's main and admin listeners are two of them. The main listener's plain requests (no
body, no upgrade: most of its traffic) are read and answered by the gateway's own HTTP/1.1
server, :mod:`gateway.plain`, which keeps the same guarantees.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, LineTooLong
from aiohttp.web_protocol import RequestHandler

from gateway.config.settings import ClientTimeouts
from gateway.plain import TIMEOUT_RESPONSE, PlainConnection, PlainHandler, bound_reads

log = logging.getLogger("gateway.listener")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

SERVER_HEADER = "gateway"
"""``Server`` of every response the gateway writes itself (no version: nothing to fingerprint)."""

MAX_FIELD_SIZE = 16384
"""Longest request header line: room for big cookies and tokens (aiohttp's default is 8190)."""

READ_CHUNK = 64 * 1024
"""Largest read from a client socket (and the request body reader's limit)."""

LINGER_S = 2.0
"""How long the rest of a refused request's body is read (and dropped) before closing."""

DRAIN_QUIET_S = 0.5
"""While draining, a keep-alive connection idle this long is closed (a client that sends its next
request sooner is answered, with ``Connection: close``)."""


class GatewayConnection(RequestHandler):
    """aiohttp's HTTP/1.1 protocol with a request-head timeout and answers that echo nothing.

    The head timer runs while the connection waits for a request head: from the connection's
    first byte (or its opening) until a handler starts, and again from the first byte of the
    next request on a keep-alive connection. Idle time between requests is the keep-alive
    timeout's business (aiohttp's own, set from ``server.timeouts.keepalive``).
    """

    __slots__ = (
        "_gw_active",
        "_gw_drain_quiet",
        "_gw_first_head_s",
        "_gw_head_timeout",
        "_gw_head_timer",
        "_gw_idle_timer",
        "_gw_next_head_since",
        "_gw_request",
    )

    def __init__(
        self,
        manager: web.Server,
        *,
        head_timeout: float,
        first_head_s: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._gw_head_timeout = head_timeout
        self._gw_first_head_s = head_timeout if first_head_s is None else first_head_s
        self._gw_head_timer: asyncio.TimerHandle | None = None
        self._gw_active = 0
        self._gw_next_head_since: float | None = None
        self._gw_request: web.BaseRequest | None = None
        self._gw_drain_quiet: float | None = None
        self._gw_idle_timer: asyncio.TimerHandle | None = None

    @property
    def idle(self) -> bool:
        """No request is being handled on this connection."""
        return self._gw_active == 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        bound_reads(transport, READ_CHUNK)
        super().connection_made(transport)
        self._gw_arm(self._gw_first_head_s)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._gw_disarm()
        self._gw_cancel_idle_close()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._gw_active == 0:
            if self._gw_head_timer is None and data:
                self._gw_arm(self._gw_head_timeout)
        elif data and self._gw_next_head_since is None and self._gw_body_done():
            # Bytes after the current request's body: the start of the next request's head.
            # (Not aiohttp's own ``data_received(b"")``, which re-parses what it has buffered.)
            self._gw_next_head_since = self._loop.time()
        super().data_received(data)

    # -- called around each request by Listener -------------------------------------------------

    def request_started(self, request: web.BaseRequest) -> None:
        self._gw_disarm()
        self._gw_cancel_idle_close()
        self._gw_active += 1
        self._gw_next_head_since = None
        self._gw_request = request

    def request_finished(self) -> None:
        self._gw_active -= 1
        self._gw_request = None
        since = self._gw_next_head_since
        if self._gw_active == 0 and since is not None:
            # A pipelined head started arriving during the last request: its clock is running.
            self._gw_next_head_since = None
            self._gw_arm(max(0.0, since + self._gw_head_timeout - self._loop.time()))
        if self._gw_active == 0 and self._gw_drain_quiet is not None:
            self._gw_close_when_quiet()

    def drain(self, quiet_s: float) -> None:
        """The process drains: close this connection once it has been idle for ``quiet_s``
        (a request arriving meanwhile is answered, with ``Connection: close``)."""
        self._gw_drain_quiet = quiet_s
        if self._gw_active == 0:
            self._gw_close_when_quiet()

    # -- errors ---------------------------------------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to a request aiohttp could not parse (or a handler that crashed).

        SECURITY: aiohttp's own page quotes the offending request bytes (a Cookie header with an
        HttpOnly session included) for any script on the site to read: this one is fixed text.
        """
        kind = type(exc).__name__ if exc is not None else "error"
        if status == 400 and isinstance(exc, LineTooLong):
            status, text = 431, "Request header fields too large\n"
        elif status == 400:
            text = "Bad request\n"
        else:
            text = "Internal error\n"
        if status >= 500:
            log.error("unexpected error in a handler (%s)", kind, extra={"reason": "internal"})
        elif not isinstance(exc, BadHttpMethod):  # port scanners, TLS on a plain port: noise
            # Only the exception's type: its message quotes the request line or header.
            log.warning("refused a malformed request (%s)", kind, extra={"reason": "bad_http"})
        response = web.Response(
            status=status, text=text, headers={"Server": SERVER_HEADER, "Cache-Control": "no-store"}
        )
        response.force_close()
        return response

    # -- internals ------------------------------------------------------------------------------

    def _gw_body_done(self) -> bool:
        request = self._gw_request
        return request is None or request.content.is_eof()

    def _gw_close_when_quiet(self) -> None:
        self._gw_cancel_idle_close()
        assert self._gw_drain_quiet is not None
        self._gw_idle_timer = self._loop.call_later(self._gw_drain_quiet, self._gw_quiet)

    def _gw_quiet(self) -> None:
        self._gw_idle_timer = None
        if self._gw_active == 0:
            # SECURITY/robustness: a client sending at this very instant could lose its request
            # (the keep-alive race every server has); after a quiet period that is unlikely.
            self.force_close()

    def _gw_cancel_idle_close(self) -> None:
        if self._gw_idle_timer is not None:
            self._gw_idle_timer.cancel()
            self._gw_idle_timer = None

    def _gw_arm(self, delay: float) -> None:
        self._gw_disarm()
        self._gw_head_timer = self._loop.call_later(delay, self._gw_head_expired)

    def _gw_disarm(self) -> None:
        if self._gw_head_timer is not None:
            self._gw_head_timer.cancel()
            self._gw_head_timer = None

    def _gw_head_expired(self) -> None:
        self._gw_head_timer = None
        transport = self.transport
        if self._gw_active or transport is None or transport.is_closing():
            return
        # Nothing of ours is being written (no handler runs): a 408 cannot cut a response.
        transport.write(TIMEOUT_RESPONSE)
        self.force_close()


class _Server(web.Server):
    """aiohttp's low-level server, making :class:`GatewayConnection` protocols, or
    :class:`~gateway.plain.PlainConnection` ones that hand over to those when a request is
    not plain."""

    def __init__(
        self,
        handler: Handler,
        *,
        head_timeout: float,
        plain: PlainHandler | None,
        read_chunk: int,
        send_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._head_timeout = head_timeout
        self._send_timeout = send_timeout
        self._plain = plain
        self._read_chunk = read_chunk
        self.plain_connections: set[PlainConnection] = set()

    def __call__(self) -> asyncio.Protocol:  # type: ignore[override]  # a protocol factory
        if self._plain is None:
            return self.aiohttp_connection()
        return PlainConnection(
            self._plain,
            self.aiohttp_connection,
            self.plain_connections,
            head_timeout=self._head_timeout,
            keepalive_timeout=float(self._kwargs["keepalive_timeout"]),
            send_timeout=self._send_timeout,
            read_chunk=self._read_chunk,
        )

    def aiohttp_connection(self, first_head_s: float | None = None) -> GatewayConnection:
        """aiohttp's protocol for a connection; ``first_head_s``: what is left of the
        request_header time of a head already arriving (a connection handed over)."""
        return GatewayConnection(
            self,
            loop=self._loop,
            head_timeout=self._head_timeout,
            first_head_s=first_head_s,
            read_bufsize=self._read_chunk,
            **self._kwargs,
        )

    def pre_shutdown(self) -> None:
        super().pre_shutdown()
        for connection in self.plain_connections:
            if connection.idle and connection.transport is not None:
                connection.transport.close()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (aiohttp's)
        plain = [conn.shutdown(timeout or 0.0) for conn in list(self.plain_connections)]
        await asyncio.gather(super().shutdown(timeout), *plain)


class Listener:
    """Serves ``handler`` on one address until :meth:`stop`.

    ``handler`` is called with aiohttp's ``BaseRequest`` and returns a response (prepared and
    streamed already, or not yet: then it is written after the handler returns). Responses it
    has not given a ``Server`` header get ``Server: gateway``.

    With ``plain``, the gateway's own server (:mod:`gateway.plain`) reads every connection
    first and answers plain requests with ``plain``; a request that is not plain, or that
    ``plain`` declines, goes to ``handler`` with the rest of its connection.
    """

    def __init__(
        self, handler: Handler, timeouts: ClientTimeouts, *, plain: PlainHandler | None = None
    ) -> None:
        self._handler = handler
        self._timeouts = timeouts
        self.draining = False
        self._server = _Server(
            self._serve,
            head_timeout=timeouts.request_header_s,
            plain=plain,
            read_chunk=READ_CHUNK,
            send_timeout=timeouts.send_s,
            keepalive_timeout=timeouts.keepalive_s,
            # After an answer given before the body was all read (413, 408...): read and drop
            # the rest this long so the answer is not lost to a reset (aiohttp's default: 10 s).
            lingering_time=LINGER_S,
            max_field_size=MAX_FIELD_SIZE,
            access_log=None,
        )
        # The gateway drains itself (gateway.server); at cleanup whatever still runs is cut.
        self._runner = web.ServerRunner(self._server, handle_signals=False, shutdown_timeout=0.1)
        self._site: web.TCPSite | None = None
        self.port = 0

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, host, port, reuse_port=reuse_port or None)
        await self._site.start()
        self.port = int(self._runner.addresses[-1][1])  # the bound port when asked for 0

    @property
    def connections(self) -> int:
        return len(self._server.connections) + len(self._server.plain_connections)

    async def stop_accepting(self) -> None:
        """Close the listening socket; connections already open stay."""
        if self._site is not None:
            await self._site.stop()

    def drain(self, quiet_s: float = DRAIN_QUIET_S) -> None:
        """From now on every response says ``Connection: close`` (its connection closes once it
        is sent), and a connection between two requests closes after ``quiet_s`` without one:
        keep-alive clients then move to another replica, none of their requests cut."""
        self.draining = True
        for plain in list(self._server.plain_connections):
            plain.drain_connection(quiet_s)
        for connection in list(self._server.connections):
            if isinstance(connection, GatewayConnection):
                connection.drain(quiet_s)
            else:
                connection.close()

    async def stop(self) -> None:
        """Close everything; requests still running are cut."""
        await self._runner.cleanup()

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        connection = request.protocol
        assert isinstance(connection, GatewayConnection)
        connection.request_started(request)
        try:
            response = await self._handler(request)
        finally:
            connection.request_finished()
        if not response.prepared:
            if "Server" not in response.headers:
                response.headers["Server"] = SERVER_HEADER
            if self.draining:
                response.force_close()
        return response
