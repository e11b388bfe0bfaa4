"""`gateway run` as a user runs it: a real process, real sockets, real signals."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.support import wait_for
from tests.upstreams import Received, Upstream

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="needs SO_REUSEPORT and /proc")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp_path: Path, port: int, upstream_port: int, extra: str = "") -> Path:
    (tmp_path / "session.key").write_bytes(os.urandom(31) + b"k")  # no trailing newline
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
server:
  listen: "127.0.0.1:{port}"
  public_url: "http://127.0.0.1:{port}"
  shutdown_grace: 5s
  access_log: text
{extra}
upstreams:
  app:
    url: "http://127.0.0.1:{upstream_port}"
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: app
    access: public
"""
    )
    return config


async def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Until the gateway answers an HTTP request (healthz), not merely accepts a connection:
    the kernel accepts connections as soon as the socket listens, before the gateway has set up
    its signal handlers, and a signal sent in between would find the default action."""
    url = f"http://127.0.0.1:{port}/.gateway/healthz"
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert asyncio.get_running_loop().time() < deadline, "gateway did not start serving"
            await asyncio.sleep(0.05)


async def slow(request: web.Request, received: Received) -> web.Response:
    """``?s=S``: answer after S seconds."""
    await asyncio.sleep(float(request.query.get("s", "0")))
    return web.Response(text=f"served {request.path} pid-agnostic")


@pytest.fixture
async def upstream():
    async with Upstream(slow) as up:
        yield up


def start(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


async def finish(proc: subprocess.Popen[bytes], timeout: float = 15) -> int:
    for _ in range(int(timeout * 20)):
        if proc.poll() is not None:
            break
        await asyncio.sleep(0.05)
    else:
        proc.kill()
        raise AssertionError("gateway did not exit")
    proc.communicate()
    return proc.returncode


async def test_run_serves_and_stops_cleanly_on_sigterm_letting_inflight_finish(tmp_path, upstream):
    port = free_port()
    proc = start(write_config(tmp_path, port, upstream.port))
    try:
        await wait_listening(port, proc)
        async with aiohttp.ClientSession() as http:
            inflight = asyncio.ensure_future(http.get(f"http://127.0.0.1:{port}/slow?s=1"))
            await wait_for(lambda: upstream.hits == 1, what="the request reaching the upstream")
            proc.send_signal(signal.SIGTERM)
            resp = await inflight
            assert resp.status == 200
            assert await resp.text() == "served /slow pid-agnostic"
        assert await finish(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


async def test_sigint_stops_the_gateway_with_exit_code_zero(tmp_path, upstream):
    port = free_port()
    proc = start(write_config(tmp_path, port, upstream.port))
    try:
        await wait_listening(port, proc)
        proc.send_signal(signal.SIGINT)
        assert await finish(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


async def test_workers_share_the_port_and_all_stop_on_sigterm(tmp_path, upstream):
    port = free_port()
    extra = f"""  workers: 2
session:
  backend: cookie
  cookie:
    secret_file: {tmp_path / "session.key"}
"""
    proc = start(write_config(tmp_path, port, upstream.port, extra))
    try:
        await wait_listening(port, proc)
        workers = children(proc.pid)
        assert len(workers) == 2
        async with aiohttp.ClientSession() as http:
            for _ in range(20):
                async with http.get(
                    f"http://127.0.0.1:{port}/x", headers={"Connection": "close"}
                ) as resp:
                    assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert await finish(proc) == 0
        # the supervisor joined its workers before exiting: none is left running
        assert [pid for pid in workers if Path(f"/proc/{pid}").exists()] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


async def test_invalid_config_prints_every_error_and_serves_nothing(tmp_path):
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
server:
  listen: "127.0.0.1:{port}"
  public_url: "ftp://nope"
  workerz: 2
upstreams: {{}}
routes: []
"""
    )
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert "server.public_url" in proc.stderr
    assert "server.workerz" in proc.stderr
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
