"""Streaming upstream forwarding: request rewrite, header hygiene, bodies both ways, WebSockets.

What the upstream receives (CONTRACT section 4):

- the normalised path with the route's ``strip_prefix`` removed segment-wise
  (``ctx.upstream_path``), and the client's raw query byte-exact (an empty query, ``/x?``, is
  sent as ``/x``);
- the client's headers minus hop-by-hop ones (``Connection`` and those it names, ``Keep-Alive``,
  ``Proxy-*``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``), minus ``Authorization``,
  ``X-Auth-*`` (any case, ``_`` for ``-``), every client-sent ``X-Forwarded-*``, ``Forwarded`` and
  ``X-Real-IP``, and minus the session cookie; then ``Host`` (the client's with ``preserve_host``,
  else the upstream's), ``X-Forwarded-For/-Proto/-Host``, ``X-Request-ID``, ``X-Forwarded-Prefix``
  (when a prefix was stripped, as Traefik does) and finally ``ctx.add_headers``, which win.

What the client receives: the upstream's status, reason and headers minus hop-by-hop ones, with
``Location`` / ``Content-Location`` and ``Set-Cookie`` paths mapped back under the stripped
prefix and URLs on the upstream's own origin pointed at ``public_url`` (:mod:`gateway.rewrite`),
and the body streamed as it is produced.
If the upstream fails after the response head was sent, the client connection is aborted so the
truncated body can never look complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Final, NoReturn

from aiohttp import ClientWebSocketResponse, WSCloseCode, WSMsgType, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from gateway.context import RequestContext
from gateway.errors import (
    BadRequest,
    ClientStalled,
    GatewayError,
    PayloadTooLarge,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.headers import (
    filter_request_headers,
    filter_response_headers,
    header_tokens,
    list_items,
    normalised_names,
)
from gateway.http import Incoming, is_websocket_upgrade, send_continue
from gateway.plain import PlainRequest
from gateway.rewrite import REWRITTEN_HEADERS, Mount, rewrite_response_headers
from gateway.upstream.base import (
    UpstreamClient,
    UpstreamRequest,
    UpstreamResponse,
    WebSocketRefused,
    WebSocketUpstreamClient,
)

log = logging.getLogger("gateway.proxy")

BODILESS_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""Methods whose requests carry no body in practice (CONTRACT section 4)."""

_REFUSED_DROP = frozenset({"content-length", "content-encoding"})
# Close codes that must not be sent on the wire (RFC 6455 7.4.1): 0 is aiohttp's "no status".
_NO_WIRE_CODE = frozenset({0, 1005, 1006, 1015})

_NEVER_BLOCKS = 16 * 1024
"""A write that leaves at most this much in the client's send buffer cannot wait for the client
(asyncio pauses writers only above 64 KiB): no send timeout needs arming for it."""


class _OneWrite(web.StreamResponse):
    """A response whose head waits for its body: head and body leave in one ``send``. Only for
    bodies that are complete before the head goes out (a streamed response's head must reach
    the client at once)."""

    def __init__(self, *, status: int, reason: str | None, headers: list[tuple[str, str]]) -> None:
        super().__init__(status=status, reason=reason, headers=headers)
        # Set on the instance: in a module compiled by mypyc (gateway_build), a class attribute
        # of a subclass of an interpreted class is not kept unless declared ClassVar.
        self._send_headers_immediately = False


async def forward(
    request: Incoming,
    ctx: RequestContext,
    client: UpstreamClient,
    *,
    public_url: str,
) -> web.StreamResponse | None:
    """Forward ``request`` to ``ctx.upstream`` and stream the answer back.

    Call it once routing, identity and access have run (``ctx`` complete, ``ctx.add_headers`` and
    ``ctx.strip_cookies`` set). Errors before the response head is sent propagate as
    :class:`~gateway.errors.GatewayError` for the app to render: ``PayloadTooLarge`` (413, also
    raised before the upstream is contacted when ``Content-Length`` is over ``max_body``),
    ``UpstreamUnavailable`` (502), ``UpstreamTimeout`` (504), ``UpstreamError`` (502). After the
    head is sent, a failure aborts the client connection and is recorded in ``ctx.trace``.

    A WebSocket upgrade on a route with ``websocket: true`` is relayed message by message
    (``client`` must be a :class:`~gateway.upstream.base.WebSocketUpstreamClient`); on other
    routes it is forwarded as a plain request without ``Upgrade``.
    """
    route = ctx.route
    if (
        request.body_exists
        and request.method.upper() in BODILESS_METHODS
        and not ctx.upstream.allow_get_body
    ):
        # SECURITY: request desync. Many handlers never read a body on GET; a keep-alive upstream
        # then reads it as the NEXT request on the pooled connection: a smuggled request, or an
        # unfinished one that the next user's request (JWT included) completes. Refused unless
        # the upstream is known to read such bodies.
        raise BadRequest(f"a body on {request.method}", reason="body_not_allowed")
    path, prefix = ctx.upstream_path, ctx.prefix
    # An empty query ("/x?") goes upstream as "/x": yarl, under aiohttp's request line, drops it.
    target = path + "?" + ctx.query if ctx.query else path
    if route.websocket and isinstance(request, web.BaseRequest) and is_websocket_upgrade(request):
        return await _forward_websocket(request, ctx, client, target, prefix)

    limit = route.max_body_bytes
    length = request.content_length
    if limit is not None and length is not None and length > limit:
        raise PayloadTooLarge(f"Content-Length {length} over the route's max_body {limit}")
    body = (
        _RequestBody(request, limit, ctx.body_timeout_s)
        if request.body_exists and isinstance(request, web.BaseRequest)
        else None
    )
    upstream_request = UpstreamRequest(
        upstream=ctx.upstream,
        method=request.method,
        target=target,
        headers=_upstream_headers(request, ctx, prefix, websocket=False),
        body=body,
        content_length=length if body is not None else None,
    )
    try:
        upstream_response = await client.send(upstream_request)
    except GatewayError:
        if body is not None and body.error is not None:
            # The upstream request failed because the client's body did: report that instead.
            raise body.error from None
        raise
    try:
        return await _relay_response(request, ctx, upstream_response, body, public_url, prefix)
    finally:
        upstream_response.release()


class _RequestBody:
    """The client's body as the upstream client's async iterable: streamed, counted, capped.
    Iterated once."""

    __slots__ = (
        "_content",
        "_ended",
        "_limit",
        "_received",
        "_request",
        "_started",
        "_timeout_s",
        "error",
        "response_started",
    )

    def __init__(self, request: web.BaseRequest, limit: int | None, timeout_s: float) -> None:
        self._request = request
        self._content = request.content
        self._limit = limit
        self._timeout_s = timeout_s
        self._received = 0
        self._started = False
        self._ended = False
        self.error: GatewayError | None = None
        self.response_started = False

    def __aiter__(self) -> _RequestBody:
        return self

    async def __anext__(self) -> bytes:
        if self._ended:
            raise StopAsyncIteration
        if not self._started:
            self._started = True
            if not self.response_started:
                # Once the upstream's answer is on its way a late 100 Continue would land inside
                # it; a client still waiting for one sends its body when its own wait times out.
                await send_continue(self._request)
        try:
            # A client that sends nothing for timeouts.body must not hold the upstream
            # connection (and its pool permit) until the upstream gives up.
            async with asyncio.timeout(self._timeout_s):
                chunk = await self._content.readany()
        except TimeoutError:
            self._fail(
                ClientStalled(
                    f"client sent no body bytes for {self._timeout_s:g}s", reason="client_stalled"
                )
            )
        except ConnectionError as exc:
            self._fail(BadRequest(f"client went away mid-body: {exc!r}", reason="client_aborted"))
        except HttpProcessingError as malformed:
            self._fail(BadRequest(f"malformed request body: {malformed!r}", reason="bad_body"))
        if not chunk:
            self._ended = True
            raise StopAsyncIteration
        self._received += len(chunk)
        limit = self._limit
        if limit is not None and self._received > limit:
            self._fail(PayloadTooLarge(f"request body over the route's max_body {limit}"))
        return chunk

    def _fail(self, error: GatewayError) -> NoReturn:
        # Raising inside the upstream client's writer aborts the upstream request.
        self.error = error
        self._ended = True
        raise error


async def _relay_response(
    request: Incoming,
    ctx: RequestContext,
    upstream_response: UpstreamResponse,
    body: _RequestBody | None,
    public_url: str,
    prefix: str,
) -> web.StreamResponse | None:
    headers = filter_response_headers(upstream_response.headers, own_cookies=ctx.strip_cookies)
    if any(name.lower() in REWRITTEN_HEADERS for name, _ in headers):
        mount = Mount(
            upstream_url=ctx.upstream.url,
            public_url=public_url,
            prefix=prefix,
            upstream_path=ctx.upstream_path,
            request_host=ctx.client.host,
            request_scheme=ctx.client.proto,
            ignore_case=ctx.route.match.ignore_case,
        )
        rewrite_response_headers(headers, mount)
    if ctx.set_cookie is not None:
        headers.append(("Set-Cookie", ctx.set_cookie))
    complete = upstream_response.body_complete
    status, reason = upstream_response.status, upstream_response.reason
    answer: _AiohttpAnswer | _PlainAnswer
    if isinstance(request, PlainRequest):
        answer = _PlainAnswer(request, status, reason, headers, complete, ctx.close_connection)
    else:
        assert isinstance(request, web.BaseRequest)
        answer = _AiohttpAnswer(request, status, reason, headers, complete, ctx.close_connection)
    if body is not None:
        body.response_started = True
    sent = 0
    send_s = ctx.send_timeout_s
    transport = request.transport
    try:
        # The head, and with it a body that is complete already (or none, for HEAD).
        await _within(send_s, transport, len(complete or b""), answer.start())
        ctx.trace.status = status
        if complete is None and request.method != hdrs.METH_HEAD:
            async for chunk in upstream_response.iter_body():
                # A client that reads nothing must not pin the upstream connection (and its
                # pool permit) until the upstream gives up: it is dropped after send_s.
                await _within(send_s, transport, len(chunk), answer.write(chunk))
                sent += len(chunk)
            await _within(send_s, transport, 0, answer.finish())
        elif complete is not None and request.method != hdrs.METH_HEAD:
            sent = len(complete)
    except UpstreamError as exc:
        error = body.error if body is not None and body.error is not None else exc
        ctx.trace.outcome = _outcome(error)
        _abort(request, ctx, error)
    except ConnectionError as gone:
        ctx.trace.outcome = "client_aborted"
        log.debug("client went away while streaming %s: %r", ctx.client.request_id, gone)
    except TimeoutError:
        ctx.trace.outcome = "client_stalled"
        _abort(request, ctx, ClientStalled(f"client read nothing for {send_s:g}s"))
    finally:
        ctx.trace.sent = sent
    return answer.response


class _AiohttpAnswer:
    """The upstream's answer on aiohttp's server: a ``StreamResponse`` (one ``send`` for head
    and body when the body is complete already)."""

    __slots__ = ("_complete", "_request", "response")

    def __init__(
        self,
        request: web.BaseRequest,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        complete: bytes | None,
        close: bool,
    ) -> None:
        self._request = request
        self._complete = complete
        response = (web.StreamResponse if complete is None else _OneWrite)(
            status=status, reason=reason or None, headers=headers
        )
        if hdrs.SERVER not in response.headers:
            response.headers[hdrs.SERVER] = "gateway"  # not aiohttp's name and version
        if close:
            response.force_close()  # draining: the client moves to another replica
        self.response = response

    async def start(self) -> None:
        response = self.response
        await response.prepare(self._request)
        if self._request.method == hdrs.METH_HEAD:
            await response.write_eof()
        elif self._complete is not None:
            await response.write_eof(self._complete)

    async def write(self, chunk: bytes) -> None:
        await self.response.write(chunk)

    async def finish(self) -> None:
        await self.response.write_eof()


class _PlainAnswer:
    """The upstream's answer on the gateway's own server (:class:`PlainRequest`)."""

    __slots__ = ("_complete", "_headers", "_reason", "_request", "_status", "response")

    def __init__(
        self,
        request: PlainRequest,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        complete: bytes | None,
        close: bool,
    ) -> None:
        self._request = request
        self._status = status
        self._reason = reason
        self._headers = headers
        self._complete = complete
        if close:
            request.close = True  # draining: the client moves to another replica
        self.response: web.StreamResponse | None = None
        """Nothing for :func:`gateway.app.observe` to write: the answer is out."""

    async def start(self) -> None:
        self._request.start(self._status, self._reason, self._headers, self._complete)
        await self._request.drain()

    async def write(self, chunk: bytes) -> None:
        self._request.write(chunk)
        await self._request.drain()

    async def finish(self) -> None:
        self._request.finish()
        await self._request.drain()


async def _within(
    send_s: float, transport: asyncio.Transport | None, size: int, write: Awaitable[None]
) -> None:
    """Await ``write`` (of ``size`` bytes), bounded by ``send_s`` when it could wait for the
    client; a write that fits the send buffer completes at once and arms no timer."""
    buffered = transport.get_write_buffer_size() if transport is not None else 0
    if buffered + size <= _NEVER_BLOCKS:
        await write
        return
    async with asyncio.timeout(send_s):
        await write


def _outcome(error: GatewayError) -> str:
    """The access log's name for a response cut short by ``error``."""
    if isinstance(error, UpstreamTimeout):
        return "upstream_timeout"
    if isinstance(error, UpstreamError):
        return "upstream_aborted"
    return error.reason  # the client's body failed: client_aborted, body_too_large, bad_body


def _abort(request: Incoming, ctx: RequestContext, error: GatewayError) -> None:
    # SECURITY/integrity: the head is out, so an error page is impossible; a reset connection is
    # the only way to make sure the client never takes a truncated body for a complete one
    # (a clean close would look complete for a body without Content-Length).
    ctx.trace.error = error
    log.warning(
        "response from upstream %s cut short (%s), aborting client connection: %s",
        ctx.upstream.name,
        error.reason,
        error,
        extra={"request_id": ctx.client.request_id, "reason": error.reason},
    )
    transport = request.transport
    if transport is not None:
        transport.abort()


def _upstream_headers(
    request: Incoming, ctx: RequestContext, prefix: str, *, websocket: bool
) -> list[tuple[str, str]]:
    headers = request.headers
    replaced = ctx.strip_headers
    if ctx.add_headers:
        replaced = replaced | normalised_names(ctx.add_headers)
    out = filter_request_headers(
        headers.items(),
        normalised_names(header_tokens(headers.getall(hdrs.CONNECTION, ()))),
        strip_cookie_names=ctx.strip_cookies,
        replaced=replaced,
        websocket=websocket,
    )
    client = ctx.client
    host = (
        client.host
        if ctx.upstream.preserve_host and client.host
        else _upstream_host(ctx.upstream.url)
    )
    own = [
        ("Host", host),
        ("X-Forwarded-For", client.forwarded_for),
        ("X-Forwarded-Proto", client.proto),
        ("X-Request-ID", client.request_id),
    ]
    if client.host:
        own.append(("X-Forwarded-Host", client.host))
    if prefix:
        own.append(("X-Forwarded-Prefix", prefix))
    if replaced:
        own = [(name, value) for name, value in own if name.lower() not in replaced]
    out += own
    out += ctx.add_headers.items()
    return out


@functools.lru_cache(maxsize=256)
def _upstream_host(url: str) -> str:
    """The ``Host`` header for the upstream at ``url`` (its host, and its port unless default)."""
    return URL(url).host_port_subcomponent or ""


# --- WebSocket ---------------------------------------------------------------------------------

_WebSocket = web.WebSocketResponse | ClientWebSocketResponse[bool]


async def _forward_websocket(
    request: web.BaseRequest,
    ctx: RequestContext,
    client: UpstreamClient,
    target: str,
    prefix: str,
) -> web.StreamResponse:
    if not isinstance(client, WebSocketUpstreamClient):
        raise UpstreamError("the upstream client cannot open WebSockets", reason="no_websocket")
    protocols = list_items(request.headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL, ()))
    # Check the client's handshake before dialling the upstream (offering its own protocols
    # keeps aiohttp from logging a "no overlap" warning for this probe).
    if not web.WebSocketResponse(protocols=protocols).can_prepare(request).ok:
        raise BadRequest("invalid WebSocket handshake", reason="bad_websocket_handshake")
    upstream_request = UpstreamRequest(
        upstream=ctx.upstream,
        method=hdrs.METH_GET,
        target=target,
        headers=_upstream_headers(request, ctx, prefix, websocket=True),
        body=None,
    )
    try:
        async with client.websocket(upstream_request, protocols) as upstream_ws:
            chosen = upstream_ws.protocol
            # Offer the client exactly what the upstream picked (it was among the client's).
            client_ws = web.WebSocketResponse(
                protocols=(chosen,) if chosen else (), autoclose=False
            )
            if ctx.set_cookie is not None:
                client_ws.headers.add("Set-Cookie", ctx.set_cookie)
            await client_ws.prepare(request)
            ctx.trace.status = client_ws.status
            relay = _Relay(ctx.send_timeout_s)

            async def end(code: int, reason: bytes) -> None:
                # The user's sessions ended (revoked, credentials changed), the route no longer
                # admits them, or the process drains: close both sides, telling the client why.
                relay.closing = True
                await client_ws.close(code=code, message=reason)
                await upstream_ws.close(code=WSCloseCode.GOING_AWAY)

            entry = ctx.sockets.add(ctx.user, ctx.route.name, end, ctx.sid_hash, ctx.roles)
            watch = None
            if ctx.still_valid is not None:
                watch = asyncio.create_task(_watch(ctx.still_valid, ctx.recheck_s, entry.end))
            try:
                await _relay_websocket(request, relay, client_ws, upstream_ws)
            finally:
                ctx.sockets.discard(entry)
                if watch is not None:
                    watch.cancel()
            return client_ws
    except WebSocketRefused as exc:
        # The upstream said no (401/403/404...): pass its status and headers on, without a body.
        # SECURITY: filtered like every response: no Set-Cookie for the gateway's own cookies.
        return web.Response(
            status=exc.upstream_status,
            headers=filter_response_headers(
                exc.headers, extra_drop=_REFUSED_DROP, own_cookies=ctx.strip_cookies
            ),
        )


async def _watch(
    still_valid: Callable[[], Awaitable[bool]],
    every_s: float,
    end: Callable[[int, bytes], Awaitable[None]],
) -> None:
    """Close a WebSocket once the session it was opened with ends (expiry, logout elsewhere),
    checked every ``every_s``."""
    while True:
        await asyncio.sleep(every_s)
        if not await still_valid():
            with contextlib.suppress(ConnectionError):
                await end(WSCloseCode.POLICY_VIOLATION, b"session ended")
            return


async def _relay_websocket(
    request: web.BaseRequest,
    relay: _Relay,
    client_ws: web.WebSocketResponse,
    upstream_ws: ClientWebSocketResponse[bool],
) -> None:
    send_s = relay.send_s
    to_upstream = asyncio.create_task(relay.pump(client_ws, upstream_ws, WSCloseCode.GOING_AWAY))
    to_client = asyncio.create_task(relay.pump(upstream_ws, client_ws, WSCloseCode.BAD_GATEWAY))
    try:
        await asyncio.gather(to_upstream, to_client)
    except TimeoutError:
        # One side took no message for send_s: it holds the other (and a pool permit) hostage.
        log.warning("WebSocket peer stopped reading: closing", extra={"reason": "client_stalled"})
        transport = request.transport
        if transport is not None:
            transport.abort()
    finally:
        to_upstream.cancel()
        to_client.cancel()
        if not upstream_ws.closed:  # cancelled (client connection lost, shutdown, stalled)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(send_s):
                    await upstream_ws.close(code=WSCloseCode.GOING_AWAY)


class _Relay:
    """Two pumps, one per direction; whichever sees its side end first runs the close sequence.

    Both sides run with ``autoclose=False`` so a close frame is answered only after it has been
    passed on: the peer that closed with 4001 makes the other peer see 4001, and the gateway is
    never torn down (e.g. by handler cancellation) between the two halves of the handshake.
    """

    __slots__ = ("closing", "send_s")

    def __init__(self, send_s: float) -> None:
        self.closing = False
        self.send_s = send_s
        """A side that takes no message this long is dropped (``server.timeouts.send``)."""

    async def pump(self, src: _WebSocket, dst: _WebSocket, lost_code: int) -> None:
        """Relay messages from ``src`` to ``dst`` until ``src`` ends, then close both ends with
        ``src``'s close code and reason (``lost_code`` if ``src`` was lost without a close)."""
        try:
            while True:
                msg = await src.receive()
                if msg.type is WSMsgType.TEXT:
                    async with asyncio.timeout(self.send_s):
                        await dst.send_str(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    async with asyncio.timeout(self.send_s):
                        await dst.send_bytes(msg.data)
                elif msg.type is WSMsgType.CLOSING:
                    return  # the other pump is closing both ends
                elif msg.type is WSMsgType.CLOSE:
                    code = WSCloseCode.OK if msg.data in _NO_WIRE_CODE else msg.data
                    reason = (msg.extra or "").encode()
                    if not self.closing:
                        self.closing = True
                        await dst.close(code=code, message=reason)
                    await src.close(code=code, message=reason)  # answer src's close frame
                    return
                else:  # CLOSED, ERROR: src was lost or broke the protocol
                    if not self.closing:
                        self.closing = True
                        await dst.close(code=lost_code)
                    return
        except ConnectionError:
            return  # dst is gone: the pump reading from it sees that and closes src
