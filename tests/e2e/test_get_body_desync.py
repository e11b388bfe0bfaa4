"""Review finding 2: a body on GET must not desync a keep-alive upstream that never reads it.

The upstream is Python's ``http.server`` speaking HTTP/1.1 with keep-alive, whose handlers ignore
request bodies, as many legacy handlers do: a body the gateway forwarded would be read as the
next request on the pooled connection.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import GatewayProcess, config, login, raw_exchange, running
from tests.upstreams import KeepAliveHttpServer

SMUGGLED = b"GET /admin/secret HTTP/1.1\r\nHost: legacy\r\n\r\n"
UNFINISHED = b"GET /admin/steal HTTP/1.1\r\nHost: legacy\r\nX-User: "


def routes(upstream: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "static",
            "match": {"path_prefix": "/static"},
            "upstream": upstream,
            "access": "public",
        },
        {
            "name": "app",
            "match": {"path_prefix": "/"},
            "upstream": upstream,
            "access": "authenticated",
            "unauthenticated": "status",
        },
    ]


@pytest.fixture
def legacy() -> Iterator[KeepAliveHttpServer]:
    with KeepAliveHttpServer().running() as server:
        yield server


@pytest.fixture
async def gateway(tmp_path: Path, legacy: KeepAliveHttpServer) -> AsyncIterator[GatewayProcess]:
    document = config(
        tmp_path,
        upstreams={"legacy": {"url": legacy.url, "max_connections": 1}},
        routes=routes("legacy"),
    )
    async with running(tmp_path, document) as process:
        yield process


def request_bytes(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def status_and_body(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "get"])
@pytest.mark.parametrize("body", [SMUGGLED, UNFINISHED], ids=["complete", "unfinished"])
async def test_a_body_on_a_bodiless_method_is_refused(
    gateway: GatewayProcess, legacy: KeepAliveHttpServer, method: str, body: bytes
) -> None:
    answer = await raw_exchange(
        gateway.port,
        request_bytes(method, "/static/x", {"Content-Length": str(len(body))}, body),
    )
    assert status_and_body(answer)[0] == 400
    assert legacy.paths() == []


async def test_a_chunked_body_on_get_is_refused(
    gateway: GatewayProcess, legacy: KeepAliveHttpServer
) -> None:
    chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
    answer = await raw_exchange(
        gateway.port, request_bytes("GET", "/static/x", {"Transfer-Encoding": "chunked"}, chunk)
    )
    assert status_and_body(answer)[0] == 400
    assert legacy.paths() == []


async def test_get_with_an_empty_body_still_passes(
    gateway: GatewayProcess, legacy: KeepAliveHttpServer
) -> None:
    answer = await raw_exchange(
        gateway.port, request_bytes("GET", "/static/x", {"Content-Length": "0"})
    )
    assert status_and_body(answer)[0] == 200
    assert legacy.paths() == ["/static/x"]


async def test_the_next_user_gets_their_own_response_and_keeps_their_token(
    gateway: GatewayProcess, legacy: KeepAliveHttpServer
) -> None:
    alice = await login(gateway.base, "alice")
    for body in (SMUGGLED, UNFINISHED):
        await raw_exchange(
            gateway.port,
            request_bytes("GET", "/static/x", {"Content-Length": str(len(body))}, body),
        )
        answer = await raw_exchange(
            gateway.port, request_bytes("GET", "/mine", {"Cookie": f"gw_session={alice}"})
        )
        status, payload = status_and_body(answer)
        assert status == 200
        assert json.loads(payload)["path"] == "/mine"
    # The upstream never saw a smuggled request, nor a request carrying alice's token in X-User.
    assert set(legacy.paths()) <= {"/mine"}
    assert all(entry["x_user"] is None for entry in legacy.received)


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_a_body_the_upstream_never_reads_is_never_run_as_a_request(
    gateway: GatewayProcess, legacy: KeepAliveHttpServer, method: str
) -> None:
    # Found attacking the fixed gateway: the same smuggling through a POST (or DELETE) body, sent
    # to a handler that ignores it. The upstream is told to close after its answer instead.
    smuggled = (
        b"GET /admin/secret HTTP/1.1\r\nHost: legacy\r\nRemote-User: alice\r\n"
        b"X-WEBAUTH-USER: alice\r\nX-Ignore: "
    )
    for _ in range(3):
        answer = await raw_exchange(
            gateway.port,
            request_bytes(method, "/static/ping", {"Content-Length": str(len(smuggled))}, smuggled),
        )
        assert status_and_body(answer)[0] == 200
        answer = await raw_exchange(gateway.port, request_bytes("GET", "/static/next", {}))
        status, payload = status_and_body(answer)
        assert status == 200 and json.loads(payload)["path"] == "/static/next"
    assert "/admin/secret" not in legacy.paths()


async def test_a_late_body_to_head_never_answers_the_next_request(tmp_path: Path) -> None:
    with KeepAliveHttpServer(head_writes_body=True).running() as naive:
        document = config(
            tmp_path,
            upstreams={"legacy": {"url": naive.url, "max_connections": 1}},
            routes=routes("legacy"),
        )
        async with running(tmp_path, document) as gateway:
            for _ in range(10):
                answer = await raw_exchange(gateway.port, request_bytes("HEAD", "/static/h", {}))
                assert status_and_body(answer)[0] == 200
                answer = await raw_exchange(gateway.port, request_bytes("GET", "/static/v", {}))
                status, payload = status_and_body(answer)
                assert status == 200 and json.loads(payload)["path"] == "/static/v"
