"""What the gateway's own work costs per request, without sockets: CPU microseconds per plain
request through ``Gateway.handle_plain`` (planning, authentication, header rules, the answer
written, metrics and the access-log line), with an upstream client that answers at once and a
transport that takes every write.

    python bench/pipeline_cost.py [--requests 20000]

Beside ``bench/run.py`` it splits a route's cost into the pipeline (this) and what sockets, the
event loop and the upstream client add (the raw probe's share). No target: an instrument.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.app import Gateway
from gateway.bundle import load
from gateway.plain import PlainRequest

UPSTREAM_HEADERS = [
    ("Server", "nginx"),
    ("Date", "Mon, 30 Nov 2026 12:00:00 GMT"),
    ("Content-Type", "text/plain"),
    ("Content-Length", "48"),
    ("Connection", "keep-alive"),
]


class _Transport:
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        pass

    def writelines(self, data: Any) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


class _Connection:
    draining = False
    transport = _Transport()

    async def drain(self) -> None:
        pass


class _Answer:
    status = 200
    reason = "OK"
    headers = UPSTREAM_HEADERS
    body_complete = b"x" * 48

    def release(self) -> None:
        pass


class _Upstream:
    async def send(self, request: Any) -> _Answer:
        return _Answer()

    async def close(self) -> None:
        pass


class _Discard:
    last = ""

    def append(self, line: str) -> None:
        self.last = line

    def flush(self) -> None:
        pass


def _config(tmp: Path) -> Path:
    document = {
        "server": {
            "listen": "127.0.0.1:8080",
            "public_url": "http://127.0.0.1:8080",
            "data_dir": str(tmp / "data"),
        },
        "session": {"backend": "memory"},
        "users": {
            "inline": [
                {
                    "username": "bench",
                    "password_hash": PasswordHasher(time_cost=1, memory_cost=64).hash("pw"),
                    "roles": ["staff"],
                }
            ]
        },
        "upstreams": {"app": {"url": "http://127.0.0.1:9"}},
        "routes": [
            {
                "name": "public",
                "match": {"path_prefix": "/public"},
                "upstream": "app",
                "access": "public",
            },
            {
                "name": "app",
                "match": {"path_prefix": "/"},
                "upstream": "app",
                "access": "authenticated",
                "unauthenticated": "status",
            },
        ],
    }
    path = tmp / "gateway.yaml"
    path.write_text(json.dumps(document))  # JSON is YAML
    return path


async def _cost(gateway: Gateway, path: str, headers: list[tuple[str, str]], n: int) -> float:
    conn = _Connection()
    proxy = CIMultiDictProxy(CIMultiDict([("Host", "127.0.0.1:8080"), *headers]))

    def request() -> PlainRequest:
        return PlainRequest(conn, "GET", path, proxy, "127.0.0.1:8080", False)  # type: ignore[arg-type]

    for _ in range(min(n, 2000)):  # warm caches (token cache, metric children, path caches)
        assert await gateway.handle_plain(request())
    sink = gateway.access.sink
    assert isinstance(sink, _Discard) and '"status": 200' in sink.last, sink.last  # forwarded
    started = time.process_time()
    for _ in range(n):
        await gateway.handle_plain(request())
    return (time.process_time() - started) / n * 1e6


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        gateway = Gateway(
            load(_config(Path(tmp))),
            client_factory=lambda *args, **kwargs: _Upstream(),  # type: ignore[arg-type,return-value]
            access_sink=_Discard(),
        )
        runtime = gateway.holder.current
        user = runtime.users.get("bench")
        assert user is not None
        cookie, _ = await runtime.sessions.create("bench", now=time.time(), stamp=user.stamp)
        session = [("Cookie", f"{runtime.settings.session.cookie_name}={cookie}")]
        public = await _cost(gateway, "/public/x", [], n)
        memory = await _cost(gateway, "/app/x", session, n)
        await gateway.close()
    print(f"pipeline CPU per plain request ({n} requests, no sockets):")
    print(f"  public route:                    {public:6.1f} us")
    print(f"  authenticated, memory sessions:  {memory:6.1f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    asyncio.run(main(parser.parse_args().requests))
