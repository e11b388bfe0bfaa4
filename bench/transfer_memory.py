"""Benchmark: 1 GiB upload and 1 GiB download through `gateway run`, gateway memory sampled.

Starts the bench upstream and the gateway as separate processes on loopback, streams the bodies,
samples the gateway's resident memory every 50 ms, and checks the target: the gateway's peak RSS
stays within ``--max-growth-mib`` (default 64) of its RSS before the transfers. Exit 1 if not.

    python bench/transfer_memory.py [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
from scenarios import transfer

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def wait_port(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise RuntimeError(f"nothing listening on {port}")


async def sample(pid: int, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mib(pid))
        await asyncio.sleep(0.05)


async def run(size_mib: int, max_growth: float) -> int:
    up_port, gw_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(
            f"""
server: {{ listen: "127.0.0.1:{gw_port}", public_url: "http://127.0.0.1:{gw_port}",
          access_log: off, data_dir: {tmp} }}
upstreams: {{ app: {{ url: "http://127.0.0.1:{up_port}" }} }}
routes:
  - {{ name: all, match: {{ path_prefix: / }}, upstream: app, access: public }}
"""
        )
        upstream = subprocess.Popen([sys.executable, str(HERE / "upstream.py"), str(up_port)])
        gateway = subprocess.Popen([sys.executable, "-m", "gateway", "run", "-c", str(config)])
        try:
            await wait_port(up_port)
            await wait_port(gw_port)
            base = f"http://127.0.0.1:{gw_port}"
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
                async with http.get(f"{base}/warm") as resp:
                    await resp.read()
                before = rss_mib(gateway.pid)
                peak = [before]
                stop = asyncio.Event()
                sampler = asyncio.create_task(sample(gateway.pid, peak, stop))

                up_s, down_s = await transfer(http, base, size_mib)
                stop.set()
                await sampler
        finally:
            gateway.terminate()
            upstream.terminate()
            gateway.wait(15)
            upstream.wait(15)
    growth = peak[0] - before
    print(f"upload   {size_mib} MiB in {up_s:.1f} s ({size_mib / up_s:.0f} MiB/s)")
    print(f"download {size_mib} MiB in {down_s:.1f} s ({size_mib / down_s:.0f} MiB/s)")
    print(f"gateway RSS before {before:.1f} MiB, peak {peak[0]:.1f} MiB, growth {growth:.1f} MiB")
    ok = growth <= max_growth
    print(f"target: growth <= {max_growth:.0f} MiB: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--max-growth-mib", type=float, default=64.0)
    args = parser.parse_args()
    return asyncio.run(run(args.size_mib, args.max_growth_mib))


if __name__ == "__main__":
    raise SystemExit(main())
