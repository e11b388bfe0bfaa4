"""``gateway explain`` and ``gateway run`` answer every request the same way: the same cases go
to a real ``gateway run`` process (over a raw socket, byte-exact) and through ``explain`` on the
same configuration file, malformed Hosts and cross-site WebSockets included."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

from gateway.bundle import Bundle, load
from gateway.explain import explain
from tests.e2e.harness import GatewayProcess, config, login, running
from tests.upstreams import Upstream

WEBSOCKET = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    target: str
    expected: str
    """``forwarded``, ``own``, or the status the gateway answers with itself."""
    user: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


CASES = [
    Case("malformed-host", "GET", "/app/x", "400", headers={"Host": "a..b"}),
    Case("host-bad-port", "GET", "/app/x", "400", headers={"Host": "admin.example.com:abc"}),
    Case("host-list", "GET", "/app/x", "400", user="alice", headers={"Host": "a, b"}),
    Case(
        "cross-site-websocket",
        "GET",
        "/app/ws",
        "403",
        user="alice",
        headers={**WEBSOCKET, "Origin": "https://evil.example"},
    ),
    Case("same-site-websocket", "GET", "/app/ws", "forwarded", user="alice", headers=WEBSOCKET),
    Case(
        "anonymous-websocket",
        "GET",
        "/public/ws",
        "forwarded",
        headers={**WEBSOCKET, "Origin": "https://evil.example"},
    ),
    Case("anonymous-browser", "GET", "/app/x", "302", headers={"Accept": "text/html"}),
    Case("anonymous-api", "GET", "/app/x", "401", headers={"Accept": "application/json"}),
    Case("anonymous-post", "POST", "/app/x", "401", headers={"Accept": "text/html"}),
    Case("roles-denied", "GET", "/admin/x", "403", user="bob"),
    Case("roles-allowed", "GET", "/admin/x", "forwarded", user="alice"),
    Case("deny", "GET", "/closed/x", "403", user="alice"),
    Case("traversal", "GET", "/a/%2e%2e/%2e%2e/x", "400"),
    Case("encoded-slash", "GET", "/app%2Fx", "400"),
    Case("servlet-parameters", "GET", "/;x/admin/x", "403", user="bob"),
    Case("no-route", "GET", "/nothing/here", "404"),
    Case("reserved-prefix", "GET", "/%2egateway/jwks.json", "own"),
    Case("public", "GET", "/public/x", "forwarded"),
    Case("anonymous-favicon", "GET", "/favicon.ico", "own", headers={"Accept": "image/*"}),
    Case("anonymous-robots", "HEAD", "/robots.txt", "own"),
    Case("anonymous-favicon-post", "POST", "/favicon.ico", "401"),
    Case("signed-in-favicon", "GET", "/favicon.ico", "forwarded", user="alice"),
]


@dataclass
class Served:
    gateway: GatewayProcess
    bundle: Bundle
    base: str
    port: int
    cookies: dict[str, str]


# One gateway process for every case: the fixture and the tests share the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    tmp_path: Path = tmp_path_factory.mktemp("explain-agrees")
    upstream = await Upstream().start()
    document = config(
        tmp_path,
        upstreams={"app": upstream.url},
        routes=[
            {
                "name": "admin",
                "match": {"path_prefix": "/admin"},
                "upstream": "app",
                "access": {"roles": ["admin"]},
            },
            {
                "name": "closed",
                "match": {"path_prefix": "/closed"},
                "upstream": "app",
                "access": "deny",
            },
            {
                "name": "public",
                "match": {"path_prefix": "/public"},
                "upstream": "app",
                "access": "public",
                "websocket": True,
            },
            {
                "name": "app",
                "match": {"path_prefix": "/app"},
                "upstream": "app",
                "access": "authenticated",
                "websocket": True,
            },
            {
                "name": "site-files",
                "match": {"path_regex": "/(favicon[.]ico|robots[.]txt)"},
                "upstream": "app",
                "access": "authenticated",
            },
        ],
    )
    async with running(tmp_path, document) as gateway:
        path = next(tmp_path.glob("gateway-*.yaml"))
        base = document["server"]["public_url"]
        port = int(base.rpartition(":")[2])
        cookies = {name: await login(base, name) for name in ("alice", "bob")}
        yield Served(gateway, load(path), base, port, cookies)
    await upstream.stop()


async def served_status(served: Served, case: Case) -> str:
    headers = {"Host": f"127.0.0.1:{served.port}", **case.headers}
    if "Origin" not in headers and case.headers is WEBSOCKET:
        headers["Origin"] = served.base
    if case.user is not None:
        headers["Cookie"] = f"gw_session={served.cookies[case.user]}"
    lines = [f"{case.method} {case.target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    if case.method == "POST":
        lines.append("Content-Length: 0")
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    status = head.split()[1].decode()
    if case.target.startswith("/%2egateway/"):
        return "own" if status == "200" else status
    if case.target in ("/favicon.ico", "/robots.txt") and status == "200":
        # The upstream answers JSON; the gateway's stand-ins are an icon and plain text.
        own = re.search(rb"(?im)^content-type: (image/x-icon|text/plain)", head)
        return "own" if own else "forwarded"
    # Only the upstream answers 200 or switches protocols here; the gateway's own answers are
    # the refusals, the redirect and the 401.
    return "forwarded" if status in ("200", "101") else status


def explained_status(report: str) -> str:
    fields = dict(re.findall(r"^([a-z ]+):\s+(.*)$", report, re.MULTILINE))
    result = fields.get("result", "")
    if result.startswith("served by the gateway itself"):
        return "own"
    if result:
        return result[:3]
    decision = fields["decision"]
    if decision == "allow":
        return "forwarded"
    if decision.startswith(("deny (403)", "refused (403)")):
        return "403"
    assert decision == "login required", report
    answer = fields["anonymous"]
    return "302" if answer.startswith("302 to ") else answer[:3]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_explain_and_run_agree(served: Served, case: Case) -> None:
    headers = {"Host": f"127.0.0.1:{served.port}", **case.headers}
    if case.headers is WEBSOCKET:
        headers["Origin"] = served.base
    report = explain(
        served.bundle,
        case.method,
        case.target,
        user=case.user,
        headers=[f"{name}: {value}" for name, value in headers.items()],
    )
    assert explained_status(report) == case.expected, report
    assert await served_status(served, case) == case.expected


async def test_the_configuration_explained_is_the_one_served(served: Served) -> None:
    document = yaml.safe_load(served.gateway.config.read_text())
    assert [route["name"] for route in document["routes"]] == [
        route.name for route in served.bundle.settings.routes
    ]
