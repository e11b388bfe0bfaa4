"""Review hardening: identity headers that legacy apps trust are the gateway's alone.

Client-sent ``Remote-User``, ``X-Remote-User``, ``X-Forwarded-User``/``-Email``/
``-Preferred-Username``/``-Groups``, ``X-WEBAUTH-*`` and every header named in any route's
``identity_headers`` mapping are removed in any letter case and with ``_`` for ``-``, on every
route; a mapping sends the identity in the headers an app such as Grafana's auth proxy reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import GatewayProcess, config, login, raw_exchange, running
from tests.upstreams import Upstream

ROUTES = [
    {
        "name": "grafana",
        "match": {"path_prefix": "/grafana"},
        "upstream": "app",
        "access": "authenticated",
        "unauthenticated": "status",
        "identity_headers": {
            "X-WEBAUTH-USER": "sub",
            "X-WEBAUTH-EMAIL": "email",
            "X-Grafana-Org-Roles": "roles",
            "X-Display-Name": "name",
        },
    },
    {"name": "public", "match": {"path_prefix": "/"}, "upstream": "app", "access": "public"},
]
SPOOFED = [
    "Remote-User",
    "REMOTE_USER",
    "remote_user",
    "X-Remote-User",
    "X_Remote_User",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Preferred-Username",
    "X-Forwarded-Groups",
    "X-WEBAUTH-USER",
    "x_webauth_user",
    "X-Webauth-Login",
    "X-Grafana-Org-Roles",
    "X_Display_Name",
    "X-Auth-User",
]


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    app = await Upstream().start()
    yield app
    await app.stop()


@pytest.fixture
async def gateway(tmp_path: Path, upstream: Upstream) -> AsyncIterator[GatewayProcess]:
    async with running(
        tmp_path, config(tmp_path, upstreams={"app": upstream.url}, routes=ROUTES)
    ) as process:
        yield process


async def send_spoofed(gateway: GatewayProcess, path: str, cookie: str | None = None) -> int:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: evil-{i}" for i, name in enumerate(SPOOFED)]
    if cookie is not None:
        lines.append(f"Cookie: gw_session={cookie}")
    answer = await raw_exchange(gateway.port, ("\r\n".join(lines) + "\r\n\r\n").encode())
    return int(answer.split(b" ", 2)[1])


def spoofed_values(upstream: Upstream) -> list[tuple[str, str]]:
    return [(k, v) for k, v in upstream.received[-1].headers if v.startswith("evil-")]


@pytest.mark.parametrize("path", ["/public/page", "/grafana/api"])
async def test_spoofed_identity_headers_never_reach_the_upstream(
    gateway: GatewayProcess, upstream: Upstream, path: str
) -> None:
    alice = await login(gateway.base, "alice")
    assert await send_spoofed(gateway, path, alice) == 200
    assert spoofed_values(upstream) == []
    assert await send_spoofed(gateway, "/public/anonymous") == 200
    assert spoofed_values(upstream) == []


async def test_a_mapping_sends_the_identity_in_the_headers_the_app_reads(
    gateway: GatewayProcess, upstream: Upstream
) -> None:
    alice = await login(gateway.base, "alice")
    assert await send_spoofed(gateway, "/grafana/dashboards", alice) == 200
    headers = dict(upstream.received[-1].headers)
    assert headers["X-WEBAUTH-USER"] == "alice"
    assert headers["X-WEBAUTH-EMAIL"] == "alice@example.com"
    assert headers["X-Grafana-Org-Roles"] == "admin"
    assert headers["X-Display-Name"] == "Alice Example"
    assert headers["Authorization"].startswith("Bearer ")
    # The default X-Auth-* set is not sent when a mapping names the headers.
    assert "X-Auth-User" not in headers
