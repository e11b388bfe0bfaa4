"""``gateway demo``: the demo upstream behind a real gateway, and the command's start and stop.

Everything runs on loopback with free ports (never the example's 8080/9000, which a developer's
own demo may be using); the example configuration is copied into ``tmp_path`` so the signing
key the gateway generates lands there too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestServer
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.app import Gateway
from gateway.bundle import build
from gateway.config import load_settings
from gateway.demo import (
    ANY_PORT,
    DEMO_PASSWORDS,
    DemoError,
    demo_main,
    demo_settings,
    demo_upstream_app,
    find_example_config,
    run_demo,
)
from gateway.listener import Listener

REPO = Path(__file__).resolve().parents[1]
JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def example_copy(tmp_path: Path) -> Path:
    config = tmp_path / "config.example.yaml"
    shutil.copyfile(REPO / "config.example.yaml", config)
    return config


class Demo:
    """The gateway (example configuration) in front of the demo upstream, both on free ports."""

    def __init__(self, url: str, upstream: TestServer) -> None:
        self.url = url
        self.upstream = upstream

    async def session(self, username: str | None) -> aiohttp.ClientSession:
        # unsafe=True: keep cookies for an IP-address host (127.0.0.1).
        session = aiohttp.ClientSession(self.url, cookie_jar=aiohttp.CookieJar(unsafe=True))
        if username is not None:
            login = {"username": username, "password": DEMO_PASSWORDS[username]}
            async with session.post("/.gateway/login", json=login) as resp:
                assert resp.status == 200, await resp.text()
        return session


@pytest.fixture
async def demo(aiohttp_server: Any, example_copy: Path) -> AsyncIterator[Demo]:
    port = free_port()
    jwks_url = f"http://127.0.0.1:{port}/.gateway/jwks.json"
    upstream = await aiohttp_server(demo_upstream_app(jwks_url, issuer=f"http://127.0.0.1:{port}"))
    settings = demo_settings(example_copy, gateway_port=port, upstream_port=upstream.port)
    gateway = Gateway(build(settings, generate_key=True))
    listener = Listener(gateway.handle, settings.server.timeouts, plain=gateway.handle_plain)
    await listener.start("127.0.0.1", port)
    yield Demo(f"http://127.0.0.1:{port}", upstream)
    await listener.stop()
    await gateway.close()


# --- the demo upstream behind a real gateway -----------------------------------------------------


async def test_the_upstream_shows_the_verified_jwt_and_headers_it_received(demo):
    session = await demo.session("alice")
    async with session, session.get("/api/v1/items?x=1", headers=JSON) as resp:
        assert resp.status == 200
        data = await resp.json()
    token = data["token"]
    assert token["claims"]["sub"] == "alice"
    assert token["claims"]["aud"] == "app"
    assert token["claims"]["roles"] == ["admin"]
    assert token["header"]["alg"] == "EdDSA"
    assert token["verified"] is True
    assert token["verification"].startswith(f"signature verified with kid {token['header']['kid']}")
    assert data["method"] == "GET"
    assert data["path"] == "/v1/items"  # strip_prefix /api
    assert data["query"] == "x=1"
    headers = {name.lower(): value for name, value in data["headers"]}
    assert headers["authorization"].startswith("Bearer ey")
    assert headers["x-forwarded-prefix"] == "/api"
    assert data["identity_headers"] == {
        "X-Auth-User": "alice",
        "X-Auth-Email": "alice@example.com",
        "X-Auth-Roles": "admin",
    }


async def test_the_html_page_escapes_what_it_shows_and_has_a_strict_csp(demo):
    evil = "<script>alert(1)</script>"
    session = await demo.session("bob")
    headers = {**HTML, "X-Test": evil}
    async with session, session.get("/reports", headers=headers) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        body = await resp.text()
        csp = resp.headers["Content-Security-Policy"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script" not in body
    assert "signature verified with kid" in body
    assert "&quot;sub&quot;: &quot;bob&quot;" in body
    assert 'href="/.gateway/logout"' in body
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    # The only style is the inline one, allowed by its hash: nothing else can run or load.
    [style] = re.findall(r"<style>(.*?)</style>", body, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in csp
    assert "unsafe-inline" not in csp


async def test_an_anonymous_caller_on_a_public_route_carries_no_token(demo):
    async with await demo.session(None) as session:
        async with session.get("/static/app.css", headers=JSON) as resp:
            data = await resp.json()
        async with session.get("/static/app.css", headers=HTML) as resp:
            body = await resp.text()
    assert data["token"] is None
    assert data["identity_headers"] == {}
    assert "No token" in body


async def test_the_upstream_refuses_to_verify_a_forged_token(demo):
    """Called directly (bypassing the gateway) with tokens the gateway did not sign."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{demo.url}/.gateway/jwks.json") as resp:
            kid = (await resp.json())["keys"][0]["kid"]
        now = int(time.time())
        claims = {
            "iss": demo.url,
            "sub": "mallory",
            "aud": "app",
            "iat": now,
            "nbf": now,
            "exp": now + 60,
        }
        other_key = ed25519.Ed25519PrivateKey.generate()
        cases = {
            "same kid, wrong key": jwt.encode(claims, other_key, "EdDSA", headers={"kid": kid}),
            "unknown kid": jwt.encode(claims, other_key, "EdDSA", headers={"kid": "nope"}),
        }
        upstream = str(demo.upstream.make_url("/x"))
        for case, token in cases.items():
            auth = {"Authorization": f"Bearer {token}"}
            async with session.get(upstream, headers={**JSON, **auth}) as resp:
                data = await resp.json()
            assert data["token"]["claims"]["sub"] == "mallory", case
            assert data["token"]["verified"] is False, case
            assert data["token"]["verification"].startswith("verification failed"), case
        assert "is not in the JWKS" in data["token"]["verification"]
        async with session.get(upstream, headers={**JSON, "Authorization": "Basic eDp5"}) as resp:
            data = await resp.json()
        assert data["token"] == {"error": "Authorization is not a Bearer token", "verified": False}


async def test_an_unreachable_jwks_is_reported_not_raised(aiohttp_server):
    upstream = await aiohttp_server(
        demo_upstream_app(f"http://127.0.0.1:{free_port()}/.gateway/jwks.json")
    )
    key = ed25519.Ed25519PrivateKey.generate()
    token = jwt.encode({"sub": "x"}, key, "EdDSA", headers={"kid": "k"})
    headers = {**JSON, "Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(upstream.make_url("/"), headers=headers) as resp,
    ):
        assert resp.status == 200
        data = await resp.json()
    assert data["token"]["verified"] is False
    assert "cannot fetch the JWKS" in data["token"]["verification"]


# --- configuration --------------------------------------------------------------------------------


def test_the_example_config_is_found_next_to_the_package():
    assert find_example_config() == REPO / "config.example.yaml"


def test_the_package_links_to_the_one_example_config_at_the_root():
    packaged = REPO / "gateway" / "config.example.yaml"
    assert packaged.is_symlink()
    assert packaged.resolve() == REPO / "config.example.yaml"


def test_the_demo_passwords_match_the_example_users():
    settings = load_settings(REPO / "config.example.yaml")
    hashes = {user.username: user.password_hash for user in settings.users.entries}
    assert set(hashes) == set(DEMO_PASSWORDS)
    for username, password in DEMO_PASSWORDS.items():
        assert PasswordHasher().verify(hashes[username], password)


def test_demo_settings_move_the_ports_and_keep_the_rest(example_copy):
    settings = demo_settings(example_copy, gateway_port=18081, upstream_port=19001)
    assert settings.server.listen_port == 18081
    assert settings.server.public_url == "http://127.0.0.1:18081"
    assert settings.tokens.issuer == "http://127.0.0.1:18081"
    assert settings.upstreams["app"].url == "http://127.0.0.1:19001"
    unchanged = demo_settings(example_copy)
    assert unchanged.server.public_url == "http://127.0.0.1:8080"
    assert unchanged.upstreams["app"].url == "http://127.0.0.1:9000"
    assert unchanged.routes == settings.routes


def test_an_invalid_config_is_a_demo_error(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("server: {}\n")
    with pytest.raises(DemoError, match="invalid configuration"):
        demo_settings(config)


# --- start-up and shut-down -----------------------------------------------------------------------


async def _read_banner(stream: asyncio.StreamReader) -> str:
    lines = []
    while True:
        line = (await asyncio.wait_for(stream.readline(), 30)).decode()
        assert line, "the demo exited before it was ready:\n" + "".join(lines)
        lines.append(line)
        if line.startswith("Press Ctrl+C"):
            return "".join(lines)


async def test_the_demo_command_starts_prints_credentials_serves_and_stops_on_sigterm(
    example_copy,
):
    port, upstream_port = free_port(), free_port()
    code = (
        "import sys; from pathlib import Path; from gateway.demo import demo_main; "
        f"sys.exit(demo_main(config_path=Path({str(example_copy)!r}), gateway_port={port}, "
        f"upstream_port={upstream_port}))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=example_copy.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        banner = await _read_banner(proc.stdout)
        url = f"http://127.0.0.1:{port}"
        assert f"gateway demo: open {url}/" in banner
        assert re.search(r"alice / wonderland +roles: admin", banner)
        assert re.search(r"bob +/ builder +roles: staff", banner)
        assert re.search(rf"{url}/admin +alice by role admin \(route admin\)", banner)
        assert re.search(rf"{url}/api/v1/hello +alice by name, bob by role staff", banner)
        assert f"http://127.0.0.1:{upstream_port}" in banner

        cookies = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(url, cookie_jar=cookies) as session:
            async with session.get("/.gateway/login", headers=HTML) as resp:
                assert resp.status == 200
                assert "<form" in await resp.text()
            async with session.get("/admin", headers=HTML, allow_redirects=False) as resp:
                assert resp.status == 302
            login = {"username": "bob", "password": "builder"}
            async with session.post("/.gateway/login", json=login) as resp:
                assert resp.status == 200
            async with session.get("/api/v1/hello", headers=JSON) as resp:
                data = await resp.json()
            assert data["token"]["claims"]["sub"] == "bob"
            assert data["token"]["verified"] is True, data["token"]
        assert (example_copy.parent / ".gateway" / "signing-key.pem").is_file()

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        rest = (await proc.stdout.read()).decode()
        assert "stopping" in rest
        errors = (await proc.stderr.read()).decode()
        assert "Traceback" not in errors
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_run_demo_serves_until_stopped(example_copy):
    port, upstream_port = free_port(), free_port()
    out = io.StringIO()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_demo(
            config_path=example_copy,
            gateway_port=port,
            upstream_port=upstream_port,
            out=out,
            stop=stop,
            handle_signals=False,
        )
    )
    try:
        for _ in range(200):
            if "Press Ctrl+C" in out.getvalue() or task.done():
                break
            await asyncio.sleep(0.05)
        assert "Press Ctrl+C" in out.getvalue(), out.getvalue()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/.gateway/healthz") as resp:
                assert resp.status == 200
            async with session.get(f"http://127.0.0.1:{upstream_port}/x", headers=JSON) as resp:
                assert json.loads(await resp.text())["path"] == "/x"
        stop.set()
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


async def test_the_bundled_demo_on_another_port_puts_the_upstream_on_a_free_port(
    tmp_path, monkeypatch
):
    """``gateway demo --port N``: the package's example configuration, the gateway on N, the
    demo upstream on whatever port the system gives, the key in a temporary data_dir."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    port = free_port()
    out = io.StringIO()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_demo(
            gateway_port=port, upstream_port=ANY_PORT, out=out, stop=stop, handle_signals=False
        )
    )
    try:
        for _ in range(200):
            if "Press Ctrl+C" in out.getvalue() or task.done():
                break
            await asyncio.sleep(0.05)
        banner = out.getvalue()
        assert "Press Ctrl+C" in banner, banner
        assert f"config     {REPO / 'config.example.yaml'}" in banner
        upstream = re.search(r"demo app on http://127\.0\.0\.1:(\d+)", banner)
        assert upstream is not None and int(upstream[1]) not in (9000, port), banner
        (data_dir,) = tmp_path.glob("gateway-demo-*")
        assert (data_dir / "signing-key.pem").is_file()
        cookies = aiohttp.CookieJar(unsafe=True)
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(url, cookie_jar=cookies) as session:
            login = {"username": "alice", "password": "wonderland"}
            async with session.post("/.gateway/login", json=login) as resp:
                assert resp.status == 200
            async with session.get("/api/v1/hello", headers=JSON) as resp:
                data = await resp.json()
        assert data["token"]["verified"] is True, data
        stop.set()
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("busy", ["gateway", "upstream"])
def test_a_busy_port_is_a_one_line_error_and_exit_1(example_copy, capsys, busy):
    port, upstream_port = free_port(), free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port if busy == "gateway" else upstream_port))
        sock.listen()
        code = demo_main(config_path=example_copy, gateway_port=port, upstream_port=upstream_port)
    assert code == 1
    captured = capsys.readouterr()
    taken = port if busy == "gateway" else upstream_port
    what = "the gateway" if busy == "gateway" else "the demo upstream"
    assert captured.err == (
        f"gateway demo: port {taken} on 127.0.0.1 is already in use, so {what} cannot listen "
        "there (is another gateway or demo running? `gateway demo --port N` picks other ports)\n"
    )
    assert "Press Ctrl+C" not in captured.out


def test_a_missing_config_is_a_one_line_error(tmp_path, capsys):
    assert demo_main(config_path=tmp_path / "nope.yaml") == 1
    err = capsys.readouterr().err
    assert err.startswith("gateway demo: ")
    assert err.count("\n") == 1
