"""The gateway side by side with nginx and a naive aiohttp proxy, under wrk, on loopback.

    python bench/run.py [--rounds 3] [--duration 5] [--connections 50] [--only NAME ...]
                        [--against OTHER_CHECKOUT] [--python]
                        [--json bench/results.json]

The gateway measured is the container image's build: this checkout's wheel built with
``GATEWAY_COMPILE=1`` (gateway_build: the request path compiled by mypyc), unpacked into a
temporary directory; ``--python`` measures the source as it is instead. ``--against`` runs the
other checkout's compiled build too when it has one (gateway_build/), else its source.

Starts nginx (Debian package) twice, as the static upstream every proxy forwards to and as a
``proxy_pass`` in front of it (the ceiling); the naive aiohttp proxy of ``bench/naive_proxy.py``
(the baseline); the lean probe of ``bench/probe.py`` (aiohttp's server and the gateway's
upstream client with nothing else: the floor of this design); and one ``gateway run`` per
scenario, each with its own configuration. Then, in interleaved rounds, wrk drives the baseline
and each scenario in turn for ``--duration`` seconds (``-t1 -c50``), so a machine that drifts
shows in the ratio, not in the figure. A run with any socket error or non-2xx answer is refused:
nothing is reported from it. Prints a table (median req/s, p50, p99, ratio to the naive proxy,
ratio to nginx).

Then, each with processes of its own (``bench/scenarios.py``): a login storm (p99 of proxied
requests while 20 sign-ins of a production-hash user run at once, against without, in 3
interleaved rounds: medians, and each round's ratio), streaming
1 GiB up and down through the gateway and the naive proxy (MiB/s, the gateway's peak RSS
growth), and the memory of 100 000 sessions (RSS growth after as many sign-ins of a cheap-hash
user, each followed by a proxied request). Last, issue 11's targets, met or missed, and
everything as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import scenarios as extra
from harness import HERE, REPO, Bench, Target, WrkRun, compiled_tree, wrk


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
    chosen = [plan for plan in plans if wanted(plan[0], only)]
    targets = [await bench.probe()] if wanted("probe", only) else []
    if wanted("rawprobe", only):
        targets.append(await bench.probe(raw=True))
    targets += [await bench.gateway(name, label, **options) for name, label, options in chosen]
    if against is not None:
        # The same scenarios on another checkout, in the same interleaved rounds.
        for name, label, options in chosen:
            other = f"{label} [{against.name}]"
            targets.append(await bench.gateway(f"{name}@against", other, tree=against, **options))
    return targets


EXTRA = ("storm", "streaming", "sessions")
"""The scenarios after the table (bench/scenarios.py)."""


def wanted(name: str, only: set[str]) -> bool:
    return not only or name in only


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def main_async(args: argparse.Namespace) -> int:
    only = set(args.only or ())
    with tempfile.TemporaryDirectory(prefix="gateway-build-") as build_name:
        tree, against = REPO, args.against
        if not args.python:
            tree = compiled_tree(REPO, Path(build_name) / "this")
            if against is not None and (against / "gateway_build").is_dir():
                against = compiled_tree(against, Path(build_name) / "against")
        return await _measure(args, only, tree, against)


async def _measure(
    args: argparse.Namespace, only: set[str], tree: Path, against: Path | None
) -> int:
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp_name:
        bench = Bench(Path(tmp_name), tree)
        try:
            nginx = await bench.nginx()
            naive = await bench.naive()
            targets = await scenarios(bench, only, against)
            figures = run_rounds(args, naive, nginx, targets)
        finally:
            bench.close()
    figures["build"] = "python" if args.python else "compiled"
    for name in EXTRA:
        if not wanted(name, only):
            continue
        print(f"{name}...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp_name:
            bench = Bench(Path(tmp_name), tree)
            try:
                await bench.nginx()
                if name == "storm":
                    figures[name] = await extra.login_storm(bench, duration=args.storm_seconds)
                elif name == "streaming":
                    figures[name] = await extra.streaming(bench, size_mib=args.stream_mib)
                else:
                    figures[name] = await extra.session_memory(bench, sessions=args.sessions)
            finally:
                bench.close()
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
    build = "compiled wheel" if figures["build"] == "compiled" else "Python source"
    print(f"\n{figures['date']}, {figures['command']} (wrk {figures['wrk']}; {build})\n")
    print("| system | req/s | p50 | p99 | x naive | x nginx |")
    print("|---|---|---|---|---|---|")
    for row in figures["rows"]:
        print(
            f"| {row['label']} | {row['requests_per_s']:,} | {row['p50_ms']} ms | "
            f"{row['p99_ms']} ms | {row['x_naive']} | {row['x_nginx']} |"
        )
    storm = figures.get("storm")
    if storm:
        print(
            f"\nlogin storm ({storm['logins_concurrent']} concurrent sign-ins, "
            f"{storm['logins_per_s']}/s; {storm['rounds']} interleaved rounds, medians): "
            f"proxied p99 {storm['calm_p99_ms']} ms without, {storm['storm_p99_ms']} ms during "
            f"(x{storm['p99_ratio']}; rounds "
            f"{', '.join(f'x{ratio}' for ratio in storm['p99_ratios'])}); req/s "
            f"{storm['calm_req_s']:,} without, {storm['storm_req_s']:,} during"
        )
    stream = figures.get("streaming")
    if stream:
        print(
            f"streaming {stream['size_mib']} MiB: upload {stream['gateway_upload_mib_s']} MiB/s "
            f"(naive {stream['naive_upload_mib_s']}, x{stream['upload_x_naive']}), download "
            f"{stream['gateway_download_mib_s']} MiB/s (naive {stream['naive_download_mib_s']}, "
            f"x{stream['download_x_naive']}); gateway RSS growth "
            f"{stream['gateway_rss_growth_mib']} MiB"
        )
    sessions = figures.get("sessions")
    if sessions:
        print(
            f"memory per session: {sessions['sessions']:,} sessions (each with one proxied "
            f"request) grew RSS from {sessions['rss_before_mib']} to "
            f"{sessions['rss_after_mib']} MiB: {sessions['bytes_per_session']} bytes each"
        )
    checks = targets(figures)
    if checks:
        print("\n| target | measured | |\n|---|---|---|")
        for what, measured, ok in checks:
            print(f"| {what} | {measured} | {'met' if ok else 'MISSED'} |")
    figures["targets"] = [
        {"target": what, "measured": measured, "met": ok} for what, measured, ok in checks
    ]
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


def targets(figures: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Issue 11's targets, for what this run measured."""
    rows = {row["name"]: row for row in figures["rows"]}
    checks: list[tuple[str, str, bool]] = []
    for name, floor in (
        ("memory", 1.5),
        ("public", 1.8),
        ("cookie", 1.4),
        ("bearer", 1.4),
        ("redis", 1.2),
    ):
        if name in rows:
            ratio = rows[name]["x_naive"]
            checks.append((f"{rows[name]['label']} >= {floor}x naive", f"{ratio}x", ratio >= floor))
    if "memory" in rows:
        p99, naive_p99 = rows["memory"]["p99_ms"], rows["naive"]["p99_ms"]
        checks.append(
            ("authenticated p99 <= naive p99", f"{p99} vs {naive_p99} ms", p99 <= naive_p99)
        )
    storm = figures.get("storm")
    if storm:
        checks.append(
            (
                "login storm: proxied p99 <= 1.5x without",
                f"x{storm['p99_ratio']}",
                storm["p99_ratio"] <= 1.5,
            )
        )
    stream = figures.get("streaming")
    if stream:
        low = min(stream["upload_x_naive"], stream["download_x_naive"])
        checks.append(("streaming >= 0.8x naive MB/s each way", f"x{low}", low >= 0.8))
        growth = stream["gateway_rss_growth_mib"]
        checks.append(("streaming RSS growth < 64 MiB", f"{growth} MiB", growth < 64))
    sessions = figures.get("sessions")
    if sessions:
        each = sessions["bytes_per_session"]
        checks.append(("memory sessions <= 1 KiB each", f"{each} B", each <= 1024))
    return checks


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--only",
        nargs="*",
        help="scenarios to run: probe, rawprobe, public, memory, cookie, "
        "redis, bearer, workers2, storm, streaming, sessions (default: all)",
    )
    parser.add_argument("--storm-seconds", type=float, default=10.0)
    parser.add_argument("--stream-mib", type=int, default=1024)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument(
        "--against",
        type=Path,
        help="also run each scenario on the gateway of this checkout (e.g. a git worktree of an "
        "earlier commit), interleaved with this one",
    )
    parser.add_argument(
        "--python",
        action="store_true",
        help="measure this checkout's source as it is, not its compiled build",
    )
    parser.add_argument("--json", default=str(HERE / "results.json"))
    return parser.parse_args(argv)


def main() -> int:
    return asyncio.run(main_async(parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
