"""The gateway side by side with nginx and a naive aiohttp proxy, under wrk, on loopback.

    python bench/run.py [--rounds 3] [--duration 5] [--connections 50] [--only NAME ...]
                        [--against OTHER_CHECKOUT]
                        [--json bench/results.json]

Starts nginx (Debian package) twice, as the static upstream every proxy forwards to and as a
``proxy_pass`` in front of it (the ceiling); the naive aiohttp proxy of ``bench/naive_proxy.py``
(the baseline); and one ``gateway run`` per scenario, each with its own configuration. Then, in
interleaved rounds, wrk drives the baseline and each scenario in turn for ``--duration`` seconds
(``-t1 -c50``), so a machine that drifts shows in the ratio, not in the figure. A run with any
socket error or non-2xx answer is refused: nothing is reported from it. Prints a table (median
req/s, p50, p99, ratio to the naive proxy, ratio to nginx) and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
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


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
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

    async def naive(self) -> Target:
        port = free_port()
        proc = self.spawn(
            [sys.executable, str(HERE / "naive_proxy.py"), str(port), self.url(self.static_port)],
            "naive.log",
        )
        await wait_port(port, proc)
        return Target("naive", "naive aiohttp proxy", self.url(port), process=proc)

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
    ) -> Target:
        """``tree``: run the gateway of another checkout (``--against``) instead of this one."""
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
                    }
                ]
            },
            "tokens": {"api_tokens": {"enabled": True}},
            "upstreams": {"app": {"url": self.url(self.static_port)}},
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
            cwd=tree or REPO,  # python -m imports the package from the working directory
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


async def scenarios(bench: Bench, only: set[str], against: Path | None) -> list[Target]:
    cookie_secret = bench.tmp / "cookie.key"
    cookie_secret.write_bytes(os.urandom(31) + b"k")
    cookie = {"backend": "cookie", "cookie": {"secret_file": str(cookie_secret)}}
    redis_session = {"backend": "redis", "redis": {"key_prefix": bench.redis_prefix}}
    plans: list[tuple[str, str, dict[str, Any]]] = [
        ("public", "gateway, public route", {"path": "/public/x"}),
        (
            "memory",
            "gateway, authenticated, memory sessions",
            {"path": "/app/x", "credential": "cookie"},
        ),
        (
            "cookie",
            "gateway, authenticated, cookie sessions",
            {"path": "/app/x", "credential": "cookie", "session": cookie},
        ),
        (
            "redis",
            "gateway, authenticated, redis sessions",
            {"path": "/app/x", "credential": "cookie", "session": redis_session},
        ),
        ("bearer", "gateway, API bearer token", {"path": "/api/x", "credential": "bearer"}),
        (
            "workers2",
            "gateway, authenticated, cookie sessions, 2 workers",
            {"path": "/app/x", "credential": "cookie", "session": cookie, "workers": 2},
        ),
    ]
    chosen = [plan for plan in plans if not only or plan[0] in only]
    targets = [await bench.gateway(name, label, **options) for name, label, options in chosen]
    if against is not None:
        # The same scenarios on another checkout, in the same interleaved rounds.
        for name, label, options in chosen:
            other = f"{label} [{against.name}]"
            targets.append(await bench.gateway(f"{name}@against", other, tree=against, **options))
    return targets


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp_name:
        bench = Bench(Path(tmp_name))
        try:
            nginx = await bench.nginx()
            naive = await bench.naive()
            targets = await scenarios(bench, set(args.only or ()), args.against)
            figures = run_rounds(args, naive, nginx, targets)
        finally:
            bench.close()
    if figures is None:
        return 1
    report(figures, args)
    return 0


def run_rounds(
    args: argparse.Namespace, naive: Target, nginx: Target, targets: list[Target]
) -> dict[str, Any] | None:
    runs: dict[str, list[WrkRun]] = {t.name: [] for t in [naive, nginx, *targets]}
    ratios: dict[str, list[float]] = {t.name: [] for t in [nginx, *targets]}

    def drive(target: Target) -> WrkRun:
        result = wrk(
            target.url,
            target.headers,
            duration=args.duration,
            connections=args.connections,
            script=target.script,
        )
        if result.errors:
            raise SystemExit(
                f"refusing to report: {target.label} had errors: {'; '.join(result.errors)}"
            )
        runs[target.name].append(result)
        return result

    for target in [naive, nginx, *targets]:  # warm-up, not counted
        wrk(
            target.url,
            target.headers,
            duration=1,
            connections=args.connections,
            script=target.script,
        )
    for round_ in range(args.rounds):
        for target in [nginx, *targets]:
            baseline = drive(naive)
            result = drive(target)
            ratios[target.name].append(result.requests_per_s / baseline.requests_per_s)
            print(
                f"round {round_ + 1}/{args.rounds}: {target.label}: "
                f"{result.requests_per_s:,.0f} req/s vs naive {baseline.requests_per_s:,.0f}",
                file=sys.stderr,
                flush=True,
            )
    nginx_rate = median([r.requests_per_s for r in runs["nginx"]])
    rows = []
    for target in [nginx, naive, *targets]:
        rates = [r.requests_per_s for r in runs[target.name]]
        rows.append(
            {
                "name": target.name,
                "label": target.label,
                "requests_per_s": round(median(rates)),
                "p50_ms": round(median([r.p50_ms for r in runs[target.name]]), 2),
                "p99_ms": round(median([r.p99_ms for r in runs[target.name]]), 2),
                "x_naive": round(median(ratios[target.name]), 2) if target is not naive else 1.0,
                "x_nginx": round(median(rates) / nginx_rate, 2),
            }
        )
    return {
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", "bench/run.py", *sys.argv[1:]]),
        "wrk": f"-t1 -c{args.connections} -d{args.duration:g}s, {args.rounds} interleaved rounds",
        "rows": rows,
    }


def report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\n{figures['date']}, {figures['command']} (wrk {figures['wrk']})\n")
    print("| system | req/s | p50 | p99 | x naive | x nginx |")
    print("|---|---|---|---|---|---|")
    for row in figures["rows"]:
        print(
            f"| {row['label']} | {row['requests_per_s']:,} | {row['p50_ms']} ms | "
            f"{row['p99_ms']} ms | {row['x_naive']} | {row['x_nginx']} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--only", nargs="*", help="scenario names (public, memory, ...)")
    parser.add_argument(
        "--against",
        type=Path,
        help="also run each scenario on the gateway of this checkout (e.g. a git worktree of an "
        "earlier commit), interleaved with this one",
    )
    parser.add_argument("--json", default=str(HERE / "results.json"))
    return parser.parse_args(argv)


def main() -> int:
    return asyncio.run(main_async(parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
