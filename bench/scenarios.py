"""The scenarios of ``bench/run.py`` that are not a req/s table: a login storm, streaming 1 GiB
each way, and the memory each session costs. Each returns its figures as a dict."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from harness import PASSWORD, Bench, Target, wrk

from gateway.passwords import hash_password

MiB = 1024 * 1024


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


# --- a login storm -------------------------------------------------------------------------------


async def login_storm(
    bench: Bench, *, duration: float, logins: int = 20, rounds: int = 3
) -> dict[str, Any]:
    """p99 of proxied requests (wrk -c50, authenticated, memory sessions) without and during
    ``logins`` concurrent sign-ins of a user whose hash has the production parameters, in
    ``rounds`` interleaved rounds (calm, then storm): medians, and the median of the rounds'
    ratios, as in the main table (one short window of p99 is noisy)."""
    storm_password = "storm-password"
    target = await bench.gateway(
        "storm",
        "gateway, authenticated, memory sessions",
        path="/app/x",
        credential="cookie",
        users=[{"username": "storm", "password_hash": hash_password(storm_password)}],
        # Every sign-in succeeds; the throttle would count concurrent ones as attempts.
        extra={"login": {"throttle": {"max_failures": 1_000_000}}},
    )
    done = 0
    signing_in = 0.0
    calm_runs: list[Any] = []
    storm_runs: list[Any] = []

    async def sign_in_again_and_again(http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        nonlocal done
        while not stop.is_set():
            async with http.post(
                target.url.rsplit("/app/", 1)[0] + "/.gateway/login",
                json={"username": "storm", "password": storm_password},
            ) as resp:
                assert resp.status == 200, await resp.text()
                done += 1

    for _ in range(rounds):
        calm_runs.append(_drive(target, duration))
        stop = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=logins)
        async with aiohttp.ClientSession(connector=connector) as http:
            storm = [
                asyncio.create_task(sign_in_again_and_again(http, stop)) for _ in range(logins)
            ]
            started = time.perf_counter()
            await asyncio.sleep(1.0)  # the storm is under way
            storm_runs.append(await asyncio.to_thread(_drive, target, duration))
            stop.set()
            await asyncio.gather(*storm)
            signing_in += time.perf_counter() - started
    calm_p99 = [run.p99_ms for run in calm_runs]
    storm_p99 = [run.p99_ms for run in storm_runs]
    return {
        "logins_concurrent": logins,
        "rounds": rounds,
        "logins_per_s": round(done / signing_in, 1),
        "calm_req_s": round(statistics.median(run.requests_per_s for run in calm_runs)),
        "calm_p99_ms": statistics.median(calm_p99),
        "storm_req_s": round(statistics.median(run.requests_per_s for run in storm_runs)),
        "storm_p99_ms": statistics.median(storm_p99),
        "p99_ratio": round(
            statistics.median(s / c for s, c in zip(storm_p99, calm_p99, strict=True)), 2
        ),
        "p99_ratios": [round(s / c, 2) for s, c in zip(storm_p99, calm_p99, strict=True)],
    }


def _drive(target: Target, duration: float) -> Any:
    result = wrk(
        target.url, target.headers, duration=duration, connections=50, script=target.script
    )
    if result.errors:
        raise SystemExit(f"refusing to report: {target.label} had errors: {result.errors}")
    return result


# --- streaming ------------------------------------------------------------------------------------


async def streaming(bench: Bench, *, size_mib: int) -> dict[str, Any]:
    """``size_mib`` up and down through the gateway (public route) and through the naive proxy,
    both in front of ``bench/upstream.py``; the gateway's RSS sampled every 50 ms."""
    upstream = await bench.bulk_upstream()
    gateway = await bench.gateway(
        "stream",
        "gateway",
        path="/",
        upstream=upstream,
        extra={
            "routes": [
                {
                    "name": "all",
                    "match": {"path_prefix": "/"},
                    "upstream": "app",
                    "access": "public",
                }
            ]
        },
    )
    naive = await bench.naive(upstream, name="naive-stream")
    base = gateway.url.rstrip("/")
    assert gateway.process is not None
    pid = gateway.process.pid
    figures: dict[str, Any] = {"size_mib": size_mib}
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.get(f"{base}/warm") as resp:
            await resp.read()
        before = rss_mib(pid)
        peak = [before]
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample(pid, peak, stop))
        for name, url in (("gateway", base), ("naive", naive.url)):
            up, down = await transfer(http, url, size_mib)
            figures[f"{name}_upload_mib_s"] = round(size_mib / up)
            figures[f"{name}_download_mib_s"] = round(size_mib / down)
        stop.set()
        await sampler
    figures["gateway_rss_growth_mib"] = round(peak[0] - before, 1)
    figures["upload_x_naive"] = round(
        figures["gateway_upload_mib_s"] / figures["naive_upload_mib_s"], 2
    )
    figures["download_x_naive"] = round(
        figures["gateway_download_mib_s"] / figures["naive_download_mib_s"], 2
    )
    return figures


async def transfer(http: aiohttp.ClientSession, base: str, size_mib: int) -> tuple[float, float]:
    """Upload then download ``size_mib`` MiB through ``base`` (bench/upstream.py behind it):
    the seconds each took."""
    started = time.perf_counter()
    async with http.post(f"{base}/upload", data=_body(size_mib * MiB)) as resp:
        received = (await resp.json())["received"]
    up_s = time.perf_counter() - started
    assert received == size_mib * MiB, received
    started = time.perf_counter()
    got = 0
    async with http.get(f"{base}/download?size={size_mib * MiB}") as resp:
        async for chunk in resp.content.iter_any():
            got += len(chunk)
    down_s = time.perf_counter() - started
    assert got == size_mib * MiB, got
    return up_s, down_s


async def _body(size: int) -> AsyncIterator[bytes]:
    chunk = b"\x5a" * MiB
    for _ in range(size // MiB):
        yield chunk


async def _sample(pid: int, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mib(pid))
        await asyncio.sleep(0.05)


# --- memory per session ---------------------------------------------------------------------------


async def session_memory(bench: Bench, *, sessions: int) -> dict[str, Any]:
    """RSS of the gateway (memory sessions) before and after ``sessions`` sign-ins of the
    cheap-hash user, each followed by one proxied request (so each also has an upstream token
    in the token cache, as far as the cache holds)."""
    target = await bench.gateway(
        "sessions",
        "gateway, memory sessions",
        path="/app/x",
        credential="cookie",
        extra={"login": {"throttle": {"max_failures": 1_000_000}}},
    )
    assert target.process is not None
    pid = target.process.pid
    base = target.url.rsplit("/app/", 1)[0]
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as http:
        await _sign_in_and_visit(http, base, 500)  # warm-up: pools, caches, code paths
        before = rss_mib(pid)
        started = time.perf_counter()
        queue: asyncio.Queue[None] = asyncio.Queue()
        for _ in range(sessions):
            queue.put_nowait(None)

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                await _sign_in_and_visit(http, base, 1)

        await asyncio.gather(*(worker() for _ in range(64)))
        elapsed = time.perf_counter() - started
        after = rss_mib(pid)
    growth = after - before
    return {
        "sessions": sessions,
        "seconds": round(elapsed, 1),
        "rss_before_mib": round(before, 1),
        "rss_after_mib": round(after, 1),
        "bytes_per_session": round(growth * MiB / sessions),
    }


async def _sign_in_and_visit(http: aiohttp.ClientSession, base: str, count: int) -> None:
    for _ in range(count):
        async with http.post(
            f"{base}/.gateway/login", json={"username": "bench", "password": PASSWORD}
        ) as resp:
            assert resp.status == 200, await resp.text()
            cookie = resp.headers["Set-Cookie"].split(";", 1)[0]
        async with http.get(f"{base}/app/x", headers={"Cookie": cookie}) as resp:
            assert resp.status == 200, resp.status
            await resp.read()
