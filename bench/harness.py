"""What every benchmark of ``bench/`` shares: free ports, wrk, and :class:`Bench`, which starts
nginx, the naive proxy, the bench upstream and ``gateway run`` processes on loopback and stops
them all at the end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from argon2 import PasswordHasher

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PASSWORD = "bench-password"
# A real argon2id hash with the cheapest parameters: sessions are made fast, logins are not timed.
CHEAP_HASH = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1).hash(PASSWORD)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    for _ in range(400):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for port {port} exited ({proc.returncode})")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise RuntimeError(f"nothing listening on {port}")


# --- wrk ---------------------------------------------------------------------------------------


@dataclass
class WrkRun:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: list[str]


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(
    url: str,
    headers: dict[str, str],
    *,
    duration: float,
    connections: int,
    script: str | None = None,
) -> WrkRun:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", url]
    if script is not None:
        argv[1:1] = ["-s", script]
    for name, value in headers.items():
        argv[1:1] = ["-H", f"{name}: {value}"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    errors = re.findall(r"(Non-2xx or 3xx responses: \d+|Socket errors: .*)", out)
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rate is None or not percentiles:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return WrkRun(float(rate[1]), _ms(percentiles["50"]), _ms(percentiles["99"]), errors)


# --- what runs -------------------------------------------------------------------------------


@dataclass
class Target:
    """Something wrk can drive: a URL, the headers to send, a process that serves it."""

    name: str
    label: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    script: str | None = None
    """A wrk Lua script (``bench/cookie_jar.lua`` keeps the session cookie up to date)."""


def compiled_tree(source: Path, dest: Path) -> Path:
    """The gateway of the checkout ``source`` as the container image builds it: the wheel built
    with ``GATEWAY_COMPILE=1`` (gateway_build: the request path compiled by mypyc), unpacked
    into ``dest``. ``python -m gateway`` run from there imports that build."""
    wheels = dest / "wheel"
    print(f"building the compiled wheel of {source}...", file=sys.stderr, flush=True)
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
    subprocess.run(
        [*pip, "--wheel-dir", str(wheels), str(source)],
        env={**os.environ, "GATEWAY_COMPILE": "1"},
        check=True,
    )
    (wheel,) = wheels.glob("gateway-*.whl")
    tree = dest / "tree"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tree)
    if not list((tree / "gateway").glob("*.so")):
        raise RuntimeError(f"{wheel.name} holds no compiled module")
    return tree


class Bench:
    def __init__(self, tmp: Path, tree: Path | None = None) -> None:
        """``tree``: where the gateway runs from (default this checkout's source)."""
        self.tmp = tmp
        self.tree = tree or REPO
        self.processes: list[subprocess.Popen[bytes]] = []
        self.static_port = free_port()
        self.redis_prefix = f"gwbench:{os.getpid()}:"

    def spawn(self, argv: list[str], log: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        with (self.tmp / log).open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=out, cwd=cwd)
        self.processes.append(proc)
        return proc

    async def nginx(self) -> Target:
        """The static upstream, and nginx proxying to it (keep-alive pool): the ceiling."""
        ceiling = free_port()
        conf = self.tmp / "nginx.conf"
        conf.write_text(
            f"""
worker_processes 1;
daemon off;
pid {self.tmp}/nginx.pid;
error_log {self.tmp}/nginx.error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream static {{ server 127.0.0.1:{self.static_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{self.static_port};
    location / {{ return 200 "hello from the upstream\\n"; }}
  }}
  server {{
    listen 127.0.0.1:{ceiling};
    location / {{
      proxy_pass http://static;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""
        )
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        proc = self.spawn([nginx, "-c", str(conf), "-p", str(self.tmp)], "nginx.log")
        await wait_port(self.static_port, proc)
        await wait_port(ceiling, proc)
        return Target("nginx", "nginx proxy_pass", self.url(ceiling), process=proc)

    async def naive(self, upstream: str | None = None, name: str = "naive") -> Target:
        port = free_port()
        proc = self.spawn(
            [
                sys.executable,
                str(HERE / "naive_proxy.py"),
                str(port),
                upstream or self.url(self.static_port),
            ],
            f"{name}.log",
        )
        await wait_port(port, proc)
        return Target(name, "naive aiohttp proxy", self.url(port), process=proc)

    async def probe(self, raw: bool = False) -> Target:
        """``bench/probe.py``: aiohttp's server and the gateway's upstream client, nothing else;
        ``raw``: ``bench/probe_raw.py``, the same relay on a bare httptools protocol (run from
        the repository root, where ``gateway`` imports from)."""
        port = free_port()
        script, name, label = (
            ("probe_raw.py", "rawprobe", "raw probe: httptools protocol + lean client, no auth")
            if raw
            else ("probe.py", "probe", "lean probe: aiohttp server + lean client, no auth")
        )
        proc = self.spawn(
            [sys.executable, str(HERE / script), str(port), self.url(self.static_port)],
            f"{name}.log",
            cwd=HERE.parent,
        )
        await wait_port(port, proc)
        return Target(name, label, self.url(port), process=proc)

    async def bulk_upstream(self) -> str:
        """``bench/upstream.py``: streams and swallows large bodies (the static nginx cannot)."""
        port = free_port()
        proc = self.spawn([sys.executable, str(HERE / "upstream.py"), str(port)], "bulk.log")
        await wait_port(port, proc)
        return self.url(port)

    async def gateway(
        self,
        name: str,
        label: str,
        *,
        path: str,
        session: dict[str, Any] | None = None,
        workers: int = 1,
        credential: str | None = None,
        extra: dict[str, Any] | None = None,
        tree: Path | None = None,
        upstream: str | None = None,
        users: list[dict[str, Any]] | None = None,
    ) -> Target:
        """``tree``: run the gateway of another checkout (``--against``) instead of this one;
        ``upstream``: its upstream's URL (default the static nginx); ``users``: more users
        besides ``bench`` (cheap hash, password ``PASSWORD``)."""
        port = free_port()
        config: dict[str, Any] = {
            "server": {
                "listen": f"127.0.0.1:{port}",
                "public_url": f"http://127.0.0.1:{port}",
                "data_dir": str(self.tmp / f"data-{name}"),
                "workers": workers,
            },
            "session": session or {"backend": "memory"},
            "users": {
                "inline": [
                    {
                        "username": "bench",
                        "password_hash": CHEAP_HASH,
                        "email": "bench@example.com",
                        "roles": ["staff"],
                    },
                    *(users or []),
                ]
            },
            "tokens": {"api_tokens": {"enabled": True}},
            "upstreams": {"app": {"url": upstream or self.url(self.static_port)}},
            "routes": [
                {
                    "name": "public",
                    "match": {"path_prefix": "/public"},
                    "upstream": "app",
                    "access": "public",
                },
                {
                    "name": "api",
                    "match": {"path_prefix": "/api"},
                    "upstream": "app",
                    "access": "authenticated",
                    "accept_bearer": True,
                    "unauthenticated": "status",
                },
                {
                    "name": "app",
                    "match": {"path_prefix": "/"},
                    "upstream": "app",
                    "access": "authenticated",
                    "unauthenticated": "status",
                },
            ],
            **(extra or {}),
        }
        path_yaml = self.tmp / f"{name}.yaml"
        path_yaml.write_text(json.dumps(config))  # JSON is YAML
        proc = self.spawn(
            [sys.executable, "-m", "gateway", "run", "-c", str(path_yaml)],
            f"{name}.log",
            cwd=tree or self.tree,  # python -m imports the package from the working directory
        )
        await wait_port(port, proc)
        headers: dict[str, str] = {}
        script = None
        if credential == "cookie":
            headers["Cookie"] = f"{await self.session_cookie(port)}"
            script = str(HERE / "cookie_jar.lua")
        elif credential == "bearer":
            headers["Authorization"] = f"Bearer {await self.api_token(port)}"
        return Target(name, label, self.url(port) + path, headers, proc, script)

    async def session_cookie(self, port: int) -> str:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                self.url(port) + "/.gateway/login", json={"username": "bench", "password": PASSWORD}
            ) as resp,
        ):
            assert resp.status == 200, await resp.text()
            name = next(iter(resp.cookies))
            return f"{name}={resp.cookies[name].value}"

    async def api_token(self, port: int) -> str:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                self.url(port) + "/.gateway/token", json={"username": "bench", "password": PASSWORD}
            ) as resp,
        ):
            assert resp.status == 200, await resp.text()
            token: str = (await resp.json())["access_token"]
            return token

    @staticmethod
    def url(port: int) -> str:
        return f"http://127.0.0.1:{port}"

    def close(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
            if proc.poll() is None:
                proc.kill()
        with contextlib.suppress(Exception):
            import redis

            client = redis.Redis()
            for key in client.scan_iter(match=self.redis_prefix + "*"):
                client.delete(key)
