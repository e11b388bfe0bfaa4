"""SIGTERM drains (CONTRACT section 6; issue 5 point 4): readyz turns 503 at once, new
connections are refused after a short delay (min(2s, shutdown_grace/4)), and in-flight requests,
long downloads included, get ``shutdown_grace`` to finish.

A real ``gateway run`` in front of an upstream that streams a download over several seconds.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from dataclasses import dataclass, field

import aiohttp

from tests.ops.ops_harness import (
    CHUNK,
    expected_download,
    free_port,
    get,
    wait_for,
    write_config,
)


@dataclass
class Download:
    """A GET read chunk by chunk, with when each part happened."""

    url: str
    started: float = 0.0
    first_byte: asyncio.Event = field(default_factory=asyncio.Event)
    body: bytearray = field(default_factory=bytearray)
    content_length: int | None = None
    finished: float | None = None
    error: BaseException | None = None

    async def run(self) -> None:
        self.started = time.monotonic()
        try:
            async with aiohttp.ClientSession() as http, http.get(self.url) as resp:
                assert resp.status == 200
                self.content_length = resp.content_length
                async for chunk in resp.content.iter_any():
                    self.body += chunk
                    self.first_byte.set()
        except (aiohttp.ClientError, OSError) as exc:
            self.error = exc
        finally:
            self.finished = time.monotonic()
            self.first_byte.set()


async def _refused(port: int) -> bool:
    """A new TCP connection to the gateway is refused (nobody listens any more)."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    try:
        await writer.wait_closed()
    except ConnectionResetError:
        # Completed the handshake in the backlog as the listener closed: the kernel reset it.
        return True
    return False


async def _start(spawn, tmp_path, upstream, grace: str):
    port = free_port()
    config = write_config(
        tmp_path / "config.yaml",
        port=port,
        upstream_port=upstream.port,
        data_dir=tmp_path,
        grace=grace,
    )
    gateway = spawn(config, port)
    await gateway.wait_ready()
    return gateway, port


async def test_sigterm_during_a_five_second_download_lets_it_finish(upstream, spawn, tmp_path):
    gateway, port = await _start(spawn, tmp_path, upstream, grace="8s")  # drain delay: 2s
    chunks = 11
    download = Download(f"{gateway.base}/public/download?s=5&chunks={chunks}")
    task = asyncio.ensure_future(download.run())
    try:
        await asyncio.wait_for(download.first_byte.wait(), timeout=10)
        await asyncio.sleep(max(0.0, download.started + 1.0 - time.monotonic()))
        gateway.signal(signal.SIGTERM)
        sigterm = time.monotonic()

        # At once: not ready, still alive, still accepting and serving.
        async def not_ready() -> bytes | None:
            status, body = await get(f"{gateway.base}/.gateway/readyz")
            return body if status == 503 else None

        body = await wait_for(not_ready, timeout=1.5, interval=0.02)
        assert json.loads(body) == {"status": "not ready"}
        assert (await get(f"{gateway.base}/.gateway/healthz"))[0] == 200
        assert await get(f"{gateway.base}/public/late-comer") == (200, b"ok /public/late-comer")

        # After the drain delay: the listener is closed while the download goes on.
        await wait_for(lambda: _refused(port), timeout=10, interval=0.02)
        refused_after = time.monotonic() - sigterm
        assert gateway.alive()
        assert download.finished is None, "the download ended before the listener closed"
        drain_delay = 2.0
        assert drain_delay - 0.1 <= refused_after <= drain_delay + 1.5, refused_after

        await asyncio.wait_for(task, timeout=20)
    finally:
        task.cancel()
    assert download.error is None, repr(download.error)
    assert download.content_length == chunks * CHUNK
    assert len(download.body) == chunks * CHUNK
    assert bytes(download.body) == expected_download(chunks)
    assert await gateway.wait_exit() == 0
    assert "draining" in gateway.log


async def test_a_download_outlasting_the_grace_is_cut_and_the_process_exits(
    upstream, spawn, tmp_path
):
    gateway, port = await _start(spawn, tmp_path, upstream, grace="2s")  # drain delay: 0.5s
    chunks = 17  # one every 0.5s: 8s in all, 7s of it after the SIGTERM
    download = Download(f"{gateway.base}/public/download?s=8&chunks={chunks}")
    task = asyncio.ensure_future(download.run())
    try:
        await asyncio.wait_for(download.first_byte.wait(), timeout=10)
        await asyncio.sleep(max(0.0, download.started + 1.0 - time.monotonic()))
        gateway.signal(signal.SIGTERM)
        sigterm = time.monotonic()
        await asyncio.wait_for(task, timeout=15)
    finally:
        task.cancel()
    assert download.finished is not None
    cut_after = download.finished - sigterm
    # Cut, not completed: the client can tell (an error, fewer bytes than announced).
    assert download.error is not None
    assert download.content_length == chunks * CHUNK
    assert 0 < len(download.body) < chunks * CHUNK
    assert bytes(download.body) == expected_download(chunks)[: len(download.body)]
    code = await gateway.wait_exit(timeout=10)
    assert code == 0, gateway.log
    assert await _refused(port)
    # The cut comes once the grace given to in-flight requests after the drain delay is over:
    # not before, and not much later either (1s of slack for a slow machine).
    drain_delay, grace = 0.5, 2.0
    assert drain_delay + grace - 0.2 <= cut_after, f"cut {cut_after:.2f}s after SIGTERM"
    assert cut_after <= drain_delay + grace + 1.0, f"cut only {cut_after:.2f}s after SIGTERM"
