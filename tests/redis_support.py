"""Redis for tests: the shared server (skip, or fail under CI, when absent) and private servers.

tests/conftest.py makes the fixtures available to the whole suite.

- ``redis_url``: URL of the shared test Redis (``$GATEWAY_TEST_REDIS_URL``, default
  ``redis://127.0.0.1:6379/0``). Unreachable: skip, or fail when ``CI=true``.
- ``redis_prefix``: a unique key prefix for one test; its keys are deleted afterwards (and only
  its keys: the server may be shared).
- ``own_redis_server``: URL of a private ``redis-server`` on a free port, for tests that stop it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from urllib.parse import urlsplit
from uuid import uuid4

import pytest
import redis

DEFAULT_URL = "redis://127.0.0.1:6379/0"

_reachable: dict[str, str | None] = {}


def shared_redis_url() -> str:
    """``$GATEWAY_TEST_REDIS_URL``, else the default local server."""
    return os.environ.get("GATEWAY_TEST_REDIS_URL") or DEFAULT_URL


def skip_or_fail(reason: str) -> None:
    """Fail under CI (where nothing may be skipped), else skip with ``reason``."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"Redis required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _ping(url: str) -> str | None:
    """``None`` when Redis at ``url`` answers, else why not."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def require_redis() -> str:
    """The shared test Redis URL, or skip/fail the test when it does not answer."""
    url = shared_redis_url()
    if url not in _reachable:
        _reachable[url] = _ping(url)
    problem = _reachable[url]
    if problem is not None:
        where = urlsplit(url)._replace(netloc=urlsplit(url).netloc.rpartition("@")[2]).geturl()
        skip_or_fail(
            f"needs Redis at {where} ({problem}): start one with "
            '`redis-server --port 6379 --save ""` (set GATEWAY_TEST_REDIS_URL to use another)'
        )
    return url


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key starting with ``prefix`` (and nothing else)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        pattern = "".join(f"[{c}]" if c in "*?[]\\" else c for c in prefix) + "*"
        batch = list(client.scan_iter(match=pattern, count=500))
        while batch:
            client.delete(*batch[:500])
            batch = batch[500:]
    finally:
        client.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def closed_port_url() -> str:
    """A Redis URL nobody listens on (connections are refused at once)."""
    return f"redis://127.0.0.1:{free_port()}/0"


class RedisServer:
    """A private ``redis-server`` subprocess on a free loopback port, without persistence."""

    def __init__(self, *extra: str, url: str | None = None) -> None:
        """``extra``: more redis-server options; ``url``: how clients reach it then (in both,
        ``{port}`` is replaced by the server's port)."""
        binary = shutil.which("redis-server")
        if binary is None:
            skip_or_fail("needs the redis-server binary on PATH to start a private server")
        assert binary is not None
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += [arg.format(port=self.port) for arg in extra]
        if url is not None:
            self.url = url.format(port=self.port)
        self._process = subprocess.Popen(
            [*argv, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while _ping(self.url) is not None:
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"private redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its connections but answers nothing (a hung Redis)."""
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Terminate the server (idempotent)."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)  # a frozen server cannot terminate
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


@pytest.fixture
def redis_url() -> str:
    """URL of the shared test Redis; skips (fails under CI) when it is unreachable."""
    return require_redis()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test; every key under it is deleted afterwards."""
    prefix = f"gwtest:{uuid4().hex}:"
    yield prefix
    delete_prefix(redis_url, prefix)


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A private redis-server the test may stop (``.stop()``); ``.url`` to connect."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()
