"""SIGTERM drains (CONTRACT section 6; issue 5 point 4): readyz turns 503 at once, new
connections are refused after a short delay (min(2s, shutdown_grace/4)), and in-flight requests,
long downloads included, get ``shutdown_grace`` to finish.

A real ``gateway run`` in front of an upstream that streams a download over several seconds.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from dataclasses import dataclass, field

import aiohttp

from tests.e2e.ops.ops_harness import (
    CHUNK,
    expected_download,
    free_port,
    get,
    write_config,
)
from tests.support import wait_for
from tests.upstreams import echoed


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
        status, body = await get(f"{gateway.base}/public/late-comer")
        assert (status, echoed(body).raw_path) == (200, "/public/late-comer")

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
    # The access log says what happened: the head (200) went out, then the drain cut it.
    [line] = [line for line in gateway.log.splitlines() if "/public/download" in line]
    assert '" 200 ' in line and line.endswith("outcome=drain_cut"), line
    # The cut comes once the grace given to in-flight requests after the drain delay is over:
    # not before, and not much later either (1s of slack for a slow machine).
    drain_delay, grace = 0.5, 2.0
    assert drain_delay + grace - 0.2 <= cut_after, f"cut {cut_after:.2f}s after SIGTERM"
    assert cut_after <= drain_delay + grace + 1.0, f"cut only {cut_after:.2f}s after SIGTERM"


class KeepAliveClient:
    """A client sending request after request on one keep-alive connection, reconnecting when
    the gateway says ``Connection: close``, stopping when connections are refused. Counts the
    requests that got an answer and those cut (sent, never answered)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answered: list[float] = []
        self.cut = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                return  # refused: the gateway is gone, as a drain ends
            try:
                await self._requests(reader, writer, stop)
            finally:
                writer.close()

    async def _requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            try:
                writer.write(b"GET /public/x HTTP/1.1\r\nHost: gw.test\r\n\r\n")
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: (\d+)", head)[1])
                await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError):
                self.cut += 1
                return
            self.answered.append(time.monotonic())
            if re.search(rb"(?i)\r\nconnection: close\r\n", head):
                return


async def test_keep_alive_clients_lose_no_request_and_the_process_exits_once_idle(
    upstream, spawn, tmp_path
):
    gateway, port = await _start(spawn, tmp_path, upstream, grace="8s")  # drain delay: 2s
    clients = [KeepAliveClient(port) for _ in range(20)]
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(client.run(stop)) for client in clients]
    try:
        await asyncio.sleep(0.5)  # steady load: none of these connections is ever idle long
        gateway.signal(signal.SIGTERM)
        sigterm = time.monotonic()
        code = await gateway.wait_exit(timeout=15)
        exited = time.monotonic()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert code == 0, gateway.log
    assert sum(client.cut for client in clients) == 0
    assert "cutting" not in gateway.log
    last_answer = max(t for client in clients for t in client.answered)
    assert last_answer > sigterm  # they were served during the drain delay...
    # ...and nothing slow was in flight: the process went as soon as the listener closed.
    assert exited - sigterm < 2.0 + 1.0, f"exited {exited - sigterm:.2f}s after SIGTERM"
    assert exited - last_answer < 1.0


async def test_the_process_exits_within_a_second_of_its_last_slow_request(
    upstream, spawn, tmp_path
):
    gateway, _ = await _start(spawn, tmp_path, upstream, grace="8s")  # drain delay: 2s
    slow = asyncio.ensure_future(get(f"{gateway.base}/public/slow?s=4"))
    await wait_for(lambda: upstream.hits == 1, what="the slow request reaching the upstream")
    gateway.signal(signal.SIGTERM)
    status, _ = await slow
    answered = time.monotonic()
    assert status == 200
    await gateway.wait_exit(timeout=10)
    assert time.monotonic() - answered < 1.0
