"""A real ``gateway run`` process in front of real upstreams, configured by YAML written here.

:class:`GatewayProcess` runs ``python -m gateway run -c FILE`` in a process group of its own
and reads its log, workers and listening sockets (from /proc).

``config(...)`` builds the YAML document as Python data (:func:`tests.configs.config`, with the
test users of :mod:`tests.configs` and their cheap argon2id hashes unless the test gives its
own); ``running(...)`` writes it, starts ``python -m gateway run -c FILE``, waits for healthz
and kills the process group afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests import configs
from tests.configs import PASSWORDS, dump
from tests.redis_support import free_port


class GatewayProcess:
    """``python -m gateway run -c CONFIG`` in its own process group; stderr goes to a file
    (a pipe nobody reads could fill up and block the gateway's logging)."""

    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.port = port
        self.log_path = config.with_suffix(".stderr.log")
        self.base = f"http://127.0.0.1:{port}"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        self.pid = self.proc.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def children(self) -> list[int]:
        text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        return [int(pid) for pid in text.split()]

    def environ(self) -> dict[str, str]:
        raw = Path(f"/proc/{self.pid}/environ").read_bytes()
        pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
        return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}

    def listening(self) -> set[int]:
        """Pids of this gateway's processes holding a listening socket on its port (each
        worker listens itself, through SO_REUSEPORT)."""
        return listening_pids(self.port, [self.pid, *self.children()])

    async def wait_workers_listening(self, count: int, timeout: float = 30.0) -> list[int]:
        """Until ``count`` worker processes listen on the port; their pids."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.alive(), f"gateway exited ({self.proc.returncode}):\n{self.log}"
            workers = self.children()
            if len(workers) == count and self.listening() == set(workers):
                return workers
            assert time.monotonic() < deadline, f"workers never all listened:\n{self.log}"
            await asyncio.sleep(0.02)

    async def wait_ready(self, url: str | None = None, timeout: float = 30.0) -> None:
        """Until ``url`` (default: the main port's healthz) answers 200."""
        url = url or f"{self.base}/.gateway/healthz"
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.alive(), f"gateway exited ({self.proc.returncode}):\n{self.log}"
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(url) as resp:
                        if resp.status == 200:
                            return
                assert time.monotonic() < deadline, f"{url} never answered 200:\n{self.log}"
                await asyncio.sleep(0.05)

    async def wait_log(self, text: str, count: int = 1, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.log.count(text) < count:
            assert self.alive(), f"gateway exited ({self.proc.returncode}):\n{self.log}"
            assert time.monotonic() < deadline, f"{text!r} x{count} never logged:\n{self.log}"
            await asyncio.sleep(0.05)

    async def wait_exit(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"gateway did not exit:\n{self.log}"
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def kill(self) -> None:
        """Kill the whole process group (the supervisor and its workers) if anything is left,
        and remove the metrics directory a killed multi-worker gateway could not remove."""
        metrics_dir = None
        if self.alive():
            with contextlib.suppress(OSError):
                metrics_dir = self.environ().get("PROMETHEUS_MULTIPROC_DIR")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if metrics_dir and Path(metrics_dir).name.startswith("gateway-metrics-"):
            shutil.rmtree(metrics_dir, ignore_errors=True)


def listening_pids(port: int, pids: Iterable[int]) -> set[int]:
    """Which of ``pids`` hold a TCP socket listening on ``port`` (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    holders = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        holders.add(pid)
                        break
    return holders


def config(
    tmp_path: Path,
    *,
    upstreams: Mapping[str, Any],
    routes: list[dict[str, Any]],
    port: int | None = None,
    server: Mapping[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A whole configuration document for ``gateway run`` on ``127.0.0.1:port`` (a free port by
    default), ``server.data_dir`` in ``tmp_path``; ``upstreams`` maps names to a URL or a
    settings mapping, ``server`` and ``sections`` as the YAML spells them."""
    port = port or free_port()
    sections.setdefault("users", {"inline": configs.users()})
    sections.setdefault("login", {"throttle": {"max_failures": 1000}})
    return configs.config(
        upstreams,
        routes,
        public_url=f"http://127.0.0.1:{port}",
        listen=f"127.0.0.1:{port}",
        data_dir=tmp_path / "data",
        server={"access_log": "text", "shutdown_grace": "5s", **(server or {})},
        **sections,
    )


def listen_port(document: Mapping[str, Any]) -> int:
    return int(str(document["server"]["listen"]).rpartition(":")[2])


@asynccontextmanager
async def running(tmp_path: Path, document: Mapping[str, Any]) -> AsyncIterator[GatewayProcess]:
    """``gateway run`` with ``document`` as its configuration, ready to serve."""
    path = tmp_path / f"gateway-{listen_port(document)}.yaml"
    path.write_text(dump(document), encoding="utf-8")
    gateway = GatewayProcess(path, listen_port(document))
    admin = document["server"].get("admin_listen")
    try:
        await gateway.wait_ready(f"http://{admin}/healthz" if admin else None)
        yield gateway
    finally:
        gateway.kill()


async def login(base: str, username: str) -> str:
    """Sign in with JSON credentials; the session cookie's value."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base}/.gateway/login",
            json={"username": username, "password": PASSWORDS[username]},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        cookie = resp.cookies.get("gw_session")
        assert cookie is not None
        return cookie.value


async def raw_exchange(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Write ``data`` on a fresh connection and read until the gateway closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
