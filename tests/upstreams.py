"""Real upstreams on loopback for the gateway to forward to.

- :class:`Upstream`: THE recording upstream. A real aiohttp server on a free port that records
  every request it receives (method, raw path, headers as a list, body) before answering it.
  By default it answers with what it received, as JSON (:meth:`Received.to_json`; read it back
  with :meth:`Received.from_json`), and echoes WebSocket messages; ``answer`` supplies other
  responses (slow, streamed, sized, cookies...) and falls back to the echo by returning
  ``None``. Use it wherever a test needs an upstream that tells what reached it.

Upstreams of a different kind, because the kind of server is what the test is about:

- :class:`ServletUpstream`: maps paths the way Tomcat does (``;parameters`` stripped from every
  segment, then ``//`` collapsed, percent-decoding, dot-segments resolved) and serves an "admin
  servlet" under ``/admin``, like a Java app whose security lives in the gateway.
- :class:`KeepAliveHttpServer`: Python's ``http.server`` speaking HTTP/1.1 with keep-alive, whose
  handlers never read a request body (as many legacy handlers do): whatever body a client sends
  is read as the next request on the connection.

Upstreams that misbehave on the wire (garbage, a cut connection) are raw asyncio servers written
in the tests that need them.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from aiohttp import WSMsgType, web

# --- the recording upstream --------------------------------------------------------------------


@dataclass
class Received:
    """One request as the upstream received it."""

    method: str
    raw_path: str
    """The request target as sent: path and query, never decoded."""
    headers: list[tuple[str, str]]
    """Every header line in order, names as sent (repeats and case variants kept)."""
    body: bytes = b""
    """The body, when the answer read it (the default answer does)."""

    def values(self, name: str) -> list[str]:
        """Every value of header ``name`` (any letter case)."""
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def value(self, name: str) -> str | None:
        """The value of header ``name``, ``None`` when absent; fails when it came twice."""
        values = self.values(name)
        assert len(values) <= 1, f"{name} received {len(values)} times: {self.headers}"
        return values[0] if values else None

    def one(self, name: str) -> str:
        """The value of header ``name``, which must have come exactly once."""
        values = self.values(name)
        assert len(values) == 1, f"expected one {name}, got {values} in {self.headers}"
        return values[0]

    @property
    def names(self) -> set[str]:
        """The header names, lower-cased."""
        return {key.lower() for key, _ in self.headers}

    def auth_like(self) -> list[tuple[str, str]]:
        """Every header an upstream could read as ``X-Auth-*`` (any case, ``_`` for ``-``)."""
        return [
            (key, value)
            for key, value in self.headers
            if key.lower().replace("_", "-").startswith("x-auth-")
        ]

    @property
    def bearer(self) -> str:
        """The gateway's JWT from the one ``Authorization: Bearer`` header."""
        scheme, _, token = self.one("Authorization").partition(" ")
        assert scheme == "Bearer" and token.count(".") == 2, self.headers
        return token

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "raw_path": self.raw_path,
            "headers": [list(pair) for pair in self.headers],
            "body": self.body.decode("latin-1"),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Received:
        """What the default answer reported (as the client of the gateway got it)."""
        return cls(
            method=data["method"],
            raw_path=data["raw_path"],
            headers=[(key, value) for key, value in data["headers"]],
            body=data["body"].encode("latin-1"),
        )


Answer = Callable[[web.Request, Received], Awaitable[web.StreamResponse | None]]
"""A response of one's own for a request (already recorded as the :class:`Received` given), or
``None`` for the default answer."""


class Upstream:
    """A real upstream on ``127.0.0.1`` (a free port) that records every request.

    ``await Upstream().start()`` or ``async with Upstream() as upstream``; ``url`` and ``port``
    say where it listens, ``received`` what it got, oldest first.
    """

    def __init__(self, answer: Answer | None = None) -> None:
        self.received: list[Received] = []
        self._answer = answer
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hits(self) -> int:
        return len(self.received)

    @property
    def last(self) -> Received:
        assert self.received, "the upstream received nothing"
        return self.received[-1]

    async def start(self) -> Upstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Upstream:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = Received(request.method, request.raw_path, list(request.headers.items()))
        self.received.append(received)
        if self._answer is not None:
            response = await self._answer(request, received)
            if response is not None:
                return response
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await echo_websocket(request)
        received.body = await request.read()
        return web.json_response(received.to_json())


async def echo_websocket(request: web.Request) -> web.WebSocketResponse:
    """Send every text and binary message back as it came."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            await ws.send_str(message.data)
        elif message.type is WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


def echoed(payload: bytes | str) -> Received:
    """The :class:`Received` in a default answer's body."""
    data: dict[str, Any] = json.loads(payload)
    assert "raw_path" in data, data
    return Received.from_json(data)


# --- a servlet container -------------------------------------------------------------------------


def servlet_path(raw_path: str) -> str:
    """What Tomcat's mapper makes of a request path (without the query)."""
    segments = [segment.partition(";")[0] for segment in raw_path.split("/")]
    path = "/".join(segments)
    while "//" in path:
        path = path.replace("//", "/")
    stack: list[str] = []
    for segment in unquote(path).split("/")[1:]:
        if segment == "..":
            if stack:
                stack.pop()
        elif segment not in ("", "."):
            stack.append(segment)
    trailing = path.endswith("/") and len(path) > 1
    return "/" + "/".join(stack) + ("/" if trailing and stack else "")


class ServletUpstream:
    """An aiohttp app standing in for a servlet container; records what it served."""

    def __init__(self) -> None:
        self.served: list[dict[str, Any]] = []
        self._upstream = Upstream(self._serve)

    @property
    def url(self) -> str:
        return self._upstream.url

    async def start(self) -> ServletUpstream:
        await self._upstream.start()
        return self

    async def stop(self) -> None:
        await self._upstream.stop()

    async def _serve(self, request: web.Request, received: Received) -> web.StreamResponse:
        raw_path = request.raw_path.partition("?")[0]
        mapped = servlet_path(raw_path)
        servlet = "admin" if mapped == "/admin" or mapped.startswith("/admin/") else "default"
        entry = {
            "servlet": servlet,
            "mapped": mapped,
            "raw_path": raw_path,
            "authorization": request.headers.get("Authorization"),
        }
        self.served.append(entry)
        return web.json_response(entry)


# --- http.server with keep-alive, ignoring bodies -----------------------------------------------


class _IgnoresBodies(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as production servers speak

    def do_GET(self) -> None:
        # Like many legacy handlers: never reads a body it does not expect.
        self._answer()

    do_OPTIONS = do_GET
    do_DELETE = do_GET  # a DELETE body is ignored too

    def do_HEAD(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        if self.path.startswith("/ping"):
            self._answer()  # a handler that never looks at the body it was sent
            return
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._answer()

    def _answer(self) -> None:
        server: KeepAliveHttpServer = self.server.owner  # type: ignore[attr-defined]
        entry = {
            "method": self.command,
            "path": self.path,
            "authorization": self.headers.get("Authorization"),
            "x_user": self.headers.get("X-User"),
        }
        with server.lock:
            server.received.append(entry)
        body = json.dumps(entry).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        elif server.head_writes_body:
            # A naive handler writes a body to HEAD too, a little late; here one that reads as
            # a whole response, as an attacker reflecting input into it would make it.
            time.sleep(0.05)
            forged = b'{"path": "/forged"}'
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(forged)).encode()
                + b"\r\n\r\n"
                + forged
            )

    def log_message(self, format: str, *args: Any) -> None:
        pass


class KeepAliveHttpServer:
    """``http.server.ThreadingHTTPServer`` on a free port, in a thread."""

    def __init__(self, *, head_writes_body: bool = False) -> None:
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.head_writes_body = head_writes_body
        """Answer HEAD with a body too (``do_HEAD = do_GET``), as naive handlers do."""
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _IgnoresBodies)
        self._server.owner = self  # type: ignore[attr-defined]
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def paths(self) -> list[str]:
        with self.lock:
            return [entry["path"] for entry in self.received]

    @contextlib.contextmanager
    def running(self) -> Iterator[KeepAliveHttpServer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
