"""The :class:`~gateway.upstream.base.UpstreamClient` on aiohttp: one pooled session per process.

- One ``ClientSession`` over one ``TCPConnector`` sized to the sum of every upstream's
  ``max_connections``; each upstream's own ``max_connections`` is a per-upstream semaphore held from
  ``send()`` until the response is released (a WebSocket holds one for its lifetime). A connector
  per upstream would need a session per upstream, and ``limit_per_host`` would merge upstreams that
  share a host:port. Waiting for a permit counts against ``connect_timeout``, as waiting for a
  pooled connection does in aiohttp.
- Nothing is added or interpreted on the way: no cookie jar, no redirects followed, no
  decompression, no ``User-Agent`` / ``Accept`` / ``Accept-Encoding`` / default ``Content-Type``;
  the target goes on the request line byte-exact (``URL(..., encoded=True)``).
- Bodies stream both ways: the request body is an async iterable written as it is produced
  (``Content-Length`` when known, chunked otherwise), the response body is read chunk by chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from aiohttp import hdrs
from aiohttp.payload import AsyncIterablePayload
from yarl import URL

from gateway.config.settings import UpstreamSettings
from gateway.errors import (
    GatewayError,
    UpstreamAborted,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.upstream.base import Headers, UpstreamRequest, WebSocketRefused

# Headers aiohttp would otherwise add of its own accord.
_SKIP_AUTO_HEADERS = (hdrs.USER_AGENT, hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.CONTENT_TYPE)
_NO_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=None, sock_read=None)


@dataclass(slots=True)
class _Pool:
    settings: UpstreamSettings
    permits: asyncio.Semaphore
    timeout: aiohttp.ClientTimeout


class AiohttpUpstreamClient:
    """Upstream HTTP and WebSocket client over one pooled :class:`aiohttp.ClientSession`.

    The session is created by :meth:`start` (or lazily by the first request) inside the running
    loop; :meth:`close` closes it and every pooled connection.
    """

    def __init__(self, upstreams: Mapping[str, UpstreamSettings]) -> None:
        self._pools: dict[str, _Pool] = {name: _new_pool(up) for name, up in upstreams.items()}
        self._limit = sum(up.max_connections for up in upstreams.values()) or 100
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Create the session and its connector (idempotent)."""
        self._get_session()

    async def close(self) -> None:
        """Close the session and all pooled connections (idempotent)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(self, request: UpstreamRequest) -> _AiohttpResponse:
        """Send ``request`` and return once the response head has arrived.

        Raises :class:`UpstreamUnavailable` (``connect_failed``), :class:`UpstreamTimeout`
        (``pool_timeout``, ``connect_timeout``, ``read_timeout``), :class:`UpstreamAborted`
        (connection lost before the head) or :class:`UpstreamError` (malformed response).
        """
        session = self._get_session()
        pool = self._pool(request.upstream)
        await _acquire(pool)
        headers: Headers = request.headers
        data: AsyncIterablePayload | None = None
        guard: _BodyGuard | None = None
        if request.body is not None:
            guard = _BodyGuard(request.body)
            data = AsyncIterablePayload(guard)
            if request.content_length is not None:
                headers = [*headers, (hdrs.CONTENT_LENGTH, str(request.content_length))]
        try:
            resp = await session.request(
                request.method,
                URL(request.upstream.url + request.target, encoded=True),
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=pool.timeout,
            )
        except BaseException as exc:
            pool.permits.release()
            if isinstance(exc, Exception):
                raise _map_error(exc, request.upstream) from exc
            raise
        if guard is not None:
            guard.attach(resp)
        return _AiohttpResponse(resp, pool.permits, request.upstream)

    @asynccontextmanager
    async def websocket(
        self, request: UpstreamRequest, protocols: Sequence[str]
    ) -> AsyncIterator[aiohttp.ClientWebSocketResponse[bool]]:
        """Open a WebSocket to the upstream; see
        :meth:`gateway.upstream.base.WebSocketUpstreamClient.websocket`."""
        session = self._get_session()
        up = request.upstream
        pool = self._pool(up)
        await _acquire(pool)
        try:
            try:
                # ws_connect takes no per-request ClientTimeout: bound the whole handshake.
                async with asyncio.timeout(up.connect_timeout_s + up.read_timeout_s):
                    ws = await session.ws_connect(
                        URL(up.url + request.target, encoded=True),
                        headers=request.headers,
                        protocols=protocols,
                        autoclose=False,  # the relay answers close frames once passed on
                    )
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status != 101:
                    raise WebSocketRefused(exc.status, list((exc.headers or {}).items())) from exc
                raise UpstreamError(
                    f"{up.name}: invalid WebSocket handshake: {exc.message}",
                    reason="bad_handshake",
                ) from exc
            except TimeoutError as exc:
                raise UpstreamTimeout(
                    f"{up.name}: WebSocket handshake timed out", reason="handshake_timeout"
                ) from exc
            except Exception as exc:
                raise _map_error(exc, up) from exc
            try:
                yield ws
            finally:
                await ws.close()
        finally:
            pool.permits.release()

    def _get_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None:
            connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=0)
            session = self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                auto_decompress=False,
                timeout=_NO_TIMEOUT,
                trust_env=False,
                requote_redirect_url=False,
                # Room for big Set-Cookie / CSP headers from upstream applications.
                max_line_size=16384,
                max_field_size=16384,
            )
        return session

    def _pool(self, upstream: UpstreamSettings) -> _Pool:
        pool = self._pools.get(upstream.name)
        if pool is None or (pool.settings is not upstream and pool.settings != upstream):
            # An upstream this client was not built with (e.g. added by a reload): start its pool.
            pool = self._pools[upstream.name] = _new_pool(upstream)
        return pool


class _BodyGuard:
    """Passes the request body through; if producing it fails once the response head is in,
    closes the response so the failure reaches its reader and the upstream connection is dropped.

    (aiohttp reports a failed body write only to a reader still waiting for the head.)
    """

    __slots__ = ("_body", "_failed", "_response")

    def __init__(self, body: AsyncIterable[bytes]) -> None:
        self._body = body
        self._response: aiohttp.ClientResponse | None = None
        self._failed = False

    def attach(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        if self._failed:
            response.close()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._body:
                yield chunk
        except Exception:
            self._failed = True
            if self._response is not None:
                self._response.close()
            raise


class _AiohttpResponse:
    """:class:`~gateway.upstream.base.UpstreamResponse` over an aiohttp ``ClientResponse``."""

    __slots__ = (
        "_permits",
        "_released",
        "_resp",
        "_upstream",
        "body_complete",
        "headers",
        "reason",
        "status",
    )

    def __init__(
        self,
        resp: aiohttp.ClientResponse,
        permits: asyncio.Semaphore,
        upstream: UpstreamSettings,
    ) -> None:
        self.status: int = resp.status
        self.body_complete: bytes | None = None  # aiohttp streams every body
        self.reason: str = resp.reason or ""
        self.headers: Headers = list(resp.headers.items())
        self._resp = resp
        self._permits = permits
        self._upstream = upstream
        self._released = False

    async def iter_body(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive; raises ``UpstreamAborted`` / ``UpstreamTimeout``."""
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except Exception as exc:
            self._resp.close()
            raise _map_error(exc, self._upstream, body=True) from exc

    def release(self) -> None:
        """Return the connection to the pool, or close it if the body was not fully read."""
        if self._released:
            return
        self._released = True
        # aiohttp closes instead of pooling a connection whose body is unread or failed.
        self._resp.release()
        self._permits.release()


def _new_pool(upstream: UpstreamSettings) -> _Pool:
    return _Pool(
        settings=upstream,
        permits=asyncio.Semaphore(upstream.max_connections),
        timeout=aiohttp.ClientTimeout(
            total=None,
            connect=upstream.connect_timeout_s,
            sock_connect=upstream.connect_timeout_s,
            sock_read=upstream.read_timeout_s,
        ),
    )


async def _acquire(pool: _Pool) -> None:
    if not pool.permits.locked():
        await pool.permits.acquire()
        return
    try:
        async with asyncio.timeout(pool.settings.connect_timeout_s):
            await pool.permits.acquire()
    except TimeoutError:
        raise UpstreamTimeout(
            f"{pool.settings.name}: all {pool.settings.max_connections} connections busy",
            reason="pool_timeout",
        ) from None


def _describe(exc: Exception) -> str:
    """What went wrong, for the log, without the request: aiohttp's reprs carry the full URL
    (query included) and the request headers, i.e. the JWT we sent."""
    # SECURITY: never log an aiohttp exception's repr or str.
    os_error = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(os_error, OSError) and os_error.strerror:
        return f"{type(exc).__name__}: {os_error.strerror}"
    return type(exc).__name__


def _map_error(exc: Exception, upstream: UpstreamSettings, *, body: bool = False) -> GatewayError:
    """Translate an aiohttp/OS error into the gateway's exception tree (detail for the log)."""
    detail = f"{upstream.name} ({upstream.url}): {_describe(exc)}"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout(detail, reason="connect_timeout")
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return UpstreamTimeout(detail, reason="read_timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnavailable(detail, reason="connect_failed")
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientConnectionError | OSError):
        # Lost mid-way: disconnected, reset, or a body cut short of its Content-Length / last chunk.
        return UpstreamAborted(detail)
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientError):
        return UpstreamError(detail, reason="bad_response")
    if body:
        return UpstreamAborted(detail)
    return UpstreamError(detail)
