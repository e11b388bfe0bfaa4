"""The raw probe: the floor of the gateway's own server for plain requests (gateway/plain.py).
An asyncio protocol parsing requests with httptools (llhttp) and relaying each through the
gateway's own upstream client, with no routing, authentication, header rules or logging.

    python bench/probe_raw.py PORT UPSTREAM_URL

Beside ``bench/probe.py`` (the same relay behind aiohttp's server) it shows what aiohttp's
request and response objects cost per request; ``python bench/run.py --only probe rawprobe``.
GET and HEAD without bodies only: a measuring instrument, not a server.
"""

from __future__ import annotations

import asyncio
import sys

import httptools

from gateway.config.settings import UpstreamSettings
from gateway.upstream.base import UpstreamRequest
from gateway.upstream.lean_client import LeanUpstreamClient

HOP = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade", b"host"}
)
RESPONSE_HOP = frozenset({"connection", "keep-alive", "transfer-encoding"})


class Relay(asyncio.Protocol):
    def __init__(self, client: LeanUpstreamClient, upstream: UpstreamSettings, host: str) -> None:
        self.client = client
        self.upstream = upstream
        self.host = host
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.queue: asyncio.Queue[tuple[str, str, list[tuple[str, str]]] | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.task = asyncio.get_running_loop().create_task(self.serve())

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.put_nowait(None)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in HOP:
            self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode("ascii")
        self.queue.put_nowait((method, self.url.decode("latin-1"), self.headers))
        self.url, self.headers = b"", []

    async def serve(self) -> None:
        while (item := await self.queue.get()) is not None:
            method, target, headers = item
            headers.append(("Host", self.host))
            answer = await self.client.send(
                UpstreamRequest(
                    upstream=self.upstream,
                    method=method,
                    target=target,
                    headers=headers,
                    body=None,
                )
            )
            try:
                body = b"".join([chunk async for chunk in answer.iter_body()])
                head = [f"HTTP/1.1 {answer.status} {answer.reason}\r\n".encode("latin-1")]
                for name, value in answer.headers:
                    if name.lower() not in RESPONSE_HOP and name.lower() != "content-length":
                        head.append(f"{name}: {value}\r\n".encode("latin-1"))
                head.append(f"Content-Length: {len(body)}\r\n\r\n".encode("ascii"))
                assert self.transport is not None
                if not self.transport.is_closing():
                    self.transport.write(b"".join(head) + (b"" if method == "HEAD" else body))
            finally:
                answer.release()


async def main(port: int, upstream_url: str) -> None:
    upstream = UpstreamSettings(name="static", url=upstream_url.rstrip("/"))
    client = LeanUpstreamClient({"static": upstream})
    host = upstream.url.partition("://")[2]
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Relay(client, upstream, host), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
