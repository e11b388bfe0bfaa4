"""Benchmark: many clients abort large uploads half way; the gateway's memory must not stay high.

Starts the bench upstream and `gateway run` as separate processes on loopback. Then ``--clients``
clients at once each send ``POST /upload`` announcing ``--size-mib`` MiB and abort (TCP reset)
after half of it; then as many complete their uploads. The gateway's resident memory is sampled
every 50 ms; the target: its RSS grows by less than ``--max-growth-mib`` (default 64) over its RSS
before, at the peak and after the clients are gone. Exit 1 if not.

    python bench/upload_abort_memory.py [--clients 200] [--size-mib 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from transfer_memory import free_port, rss_mib, sample, wait_port  # noqa: E402

MiB = 1024 * 1024
CHUNK = b"\x5a" * (64 * 1024)


async def upload(port: int, size: int, *, abort_at: int | None) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Length: {size}\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    writer.write(head.encode())
    sent = 0
    limit = size if abort_at is None else abort_at
    try:
        while sent < limit:
            piece = CHUNK[: min(len(CHUNK), limit - sent)]
            writer.write(piece)
            sent += len(piece)
            await writer.drain()
        if abort_at is not None:
            # A reset, as a client killed half way through (or a network dropping it) leaves.
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()


async def run(clients: int, size_mib: int, max_growth: float) -> int:
    up_port, gw_port = free_port(), free_port()
    size = size_mib * MiB
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(
            f"""
server: {{ listen: "127.0.0.1:{gw_port}", public_url: "http://127.0.0.1:{gw_port}",
          access_log: off, data_dir: {tmp} }}
upstreams: {{ app: {{ url: "http://127.0.0.1:{up_port}", max_connections: {clients * 2},
                     keepalive_after_body: true }} }}
routes:
  - {{ name: all, match: {{ path_prefix: / }}, upstream: app, access: public }}
"""
        )
        upstream = subprocess.Popen([sys.executable, str(HERE / "upstream.py"), str(up_port)])
        gateway = subprocess.Popen([sys.executable, "-m", "gateway", "run", "-c", str(config)])
        try:
            await wait_port(up_port)
            await wait_port(gw_port)
            await asyncio.sleep(0.5)
            before = rss_mib(gateway.pid)
            results = {"before_mib": round(before, 1)}
            for name, abort_at in (("aborted", size // 2), ("completed", None)):
                peak = [before]
                stop = asyncio.Event()
                sampler = asyncio.create_task(sample(gateway.pid, peak, stop))
                started = time.monotonic()
                outcomes = await asyncio.gather(
                    *(upload(gw_port, size, abort_at=abort_at) for _ in range(clients)),
                    return_exceptions=True,
                )
                failures = [o for o in outcomes if isinstance(o, BaseException)]
                await asyncio.sleep(2.0)  # let the gateway notice and let go of everything
                stop.set()
                await sampler
                after = rss_mib(gateway.pid)
                results[name] = {
                    "seconds": round(time.monotonic() - started, 2),
                    "client_errors": len(failures),
                    "peak_mib": round(peak[0], 1),
                    "after_mib": round(after, 1),
                    "peak_growth_mib": round(peak[0] - before, 1),
                    "after_growth_mib": round(after - before, 1),
                }
        finally:
            gateway.terminate()
            upstream.terminate()
            gateway.wait(15)
            upstream.wait(15)
    print(json.dumps(results, indent=2))
    worst = max(results[name]["peak_growth_mib"] for name in ("aborted", "completed"))
    ok = worst < max_growth
    print(
        f"{clients} clients x {size_mib} MiB: RSS {results['before_mib']} MiB before, "
        f"at most +{worst} MiB; target < +{max_growth} MiB: {'met' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--size-mib", type=int, default=10)
    parser.add_argument("--max-growth-mib", type=float, default=64.0)
    args = parser.parse_args()
    return asyncio.run(run(args.clients, args.size_mib, args.max_growth_mib))


if __name__ == "__main__":
    raise SystemExit(main())
