"""A minimal upstream for benchmarks: GET /download?size=N streams N bytes; POST /upload counts.

Run as ``python bench/upstream.py PORT``.
"""

from __future__ import annotations

import sys

from aiohttp import web

CHUNK = b"\xa5" * (256 * 1024)


async def download(request: web.Request) -> web.StreamResponse:
    size = int(request.query.get("size", "0"))
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.content_length = size
    await resp.prepare(request)
    left = size
    while left > 0:
        piece = CHUNK if left >= len(CHUNK) else CHUNK[:left]
        await resp.write(piece)
        left -= len(piece)
    await resp.write_eof()
    return resp


async def upload(request: web.Request) -> web.Response:
    total = 0
    async for chunk in request.content.iter_any():
        total += len(chunk)
    return web.json_response({"received": total})


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


def main() -> None:
    app = web.Application(client_max_size=0)
    app.router.add_get("/download", download)
    app.router.add_post("/upload", upload)
    app.router.add_get("/{tail:.*}", hello)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
