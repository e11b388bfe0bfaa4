"""The lean probe: how fast this design can go at all. aiohttp's low-level server and the
gateway's own pooled upstream client (asyncio + httptools), relaying every request with no
routing, no authentication, no header rules and no logging.

    python bench/probe.py PORT UPSTREAM_URL

It is the floor under every gateway scenario in bench/run.py (``--probe`` adds it to the
table): what the gateway spends above it is its own work; what the probe spends is aiohttp's
server and the event loop.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from gateway.config.settings import UpstreamSettings
from gateway.upstream.base import UpstreamRequest
from gateway.upstream.lean_client import LeanUpstreamClient

HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "host"}
)


async def main(port: int, upstream_url: str) -> None:
    upstream = UpstreamSettings(name="static", url=upstream_url.rstrip("/"))
    client = LeanUpstreamClient({"static": upstream})
    host = upstream.url.partition("://")[2]

    async def relay(request: web.BaseRequest) -> web.StreamResponse:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP]
        headers.append(("Host", host))
        answer = await client.send(
            UpstreamRequest(
                upstream=upstream,
                method=request.method,
                target=request.raw_path,
                headers=headers,
                body=None,
            )
        )
        try:
            response = web.StreamResponse(
                status=answer.status,
                headers=[(k, v) for k, v in answer.headers if k.lower() not in HOP],
            )
            await response.prepare(request)
            async for chunk in answer.iter_body():
                await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            answer.release()

    server = web.Server(relay, access_log=None)
    runner = web.ServerRunner(server)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
