"""Real upstreams of the kinds people put behind the gateway, each on a free loopback port.

- :class:`ServletUpstream`: maps paths the way Tomcat does (``;parameters`` stripped from every
  segment, then ``//`` collapsed, percent-decoding, dot-segments resolved) and serves an "admin
  servlet" under ``/admin``, like a Java app whose security lives in the gateway.
- :class:`KeepAliveHttpServer`: Python's ``http.server`` speaking HTTP/1.1 with keep-alive, whose
  handlers never read a request body (as many legacy handlers do): whatever body a client sends
  is read as the next request on the connection.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from tests.redis_support import free_port


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
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> ServletUpstream:
        async def serve(request: web.Request) -> web.Response:
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

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", serve)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


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
                + str(len(forged)).encode() + b"\r\n\r\n" + forged
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
        self.port = free_port()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), _IgnoresBodies)
        self._server.owner = self  # type: ignore[attr-defined]
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def paths(self) -> list[str]:
        with self.lock:
            return [entry["path"] for entry in self.received]

    @contextmanager
    def running(self) -> Iterator[KeepAliveHttpServer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()


class AppUpstream:
    """An ordinary aiohttp app: ``/ws...`` is a WebSocket echo, anything else answers
    ``ok <path>``; every request's path and Authorization are recorded."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> AppUpstream:
        async def serve(request: web.Request) -> web.StreamResponse:
            self.received.append(
                {
                    "path": request.path,
                    "authorization": request.headers.get("Authorization"),
                    "headers": list(request.headers.items()),
                }
            )
            if request.path.startswith("/ws"):
                ws = web.WebSocketResponse()
                await ws.prepare(request)
                async for message in ws:
                    await ws.send_str(message.data)
                return ws
            return web.Response(text=f"ok {request.path}")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", serve)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
