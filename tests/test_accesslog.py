"""gateway.accesslog.BatchedWriter: access-log lines leave in batches of whole lines, each
write at most PIPE_BUF bytes (so several workers' lines on one pipe never interleave), within
the flush interval."""

from __future__ import annotations

import select
import socket

from gateway.accesslog import BatchedWriter
from tests.support import wait_for


def _writes(sock: socket.socket) -> list[bytes]:
    """Every write() made to the other end so far (SOCK_SEQPACKET keeps their boundaries)."""
    out = []
    while True:
        try:
            out.append(sock.recv(1 << 20, socket.MSG_DONTWAIT))
        except BlockingIOError:
            return out


def _pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


async def test_each_write_holds_whole_lines_within_pipe_buf() -> None:
    ours, theirs = _pair()
    with ours, theirs:
        writer = BatchedWriter(ours.fileno(), interval_s=60)
        lines = [f"line {i} " + "x" * (i % 300) for i in range(500)]
        for line in lines:
            writer.append(line)
        writer.flush()
        writes = _writes(theirs)
    assert len(writes) < len(lines) / 10  # batched...
    assert all(w.endswith(b"\n") and len(w) <= select.PIPE_BUF for w in writes)  # ...whole
    assert b"".join(writes).decode().splitlines() == lines


async def test_lines_wait_for_the_interval_then_leave_in_one_batch() -> None:
    ours, theirs = _pair()
    with ours, theirs:
        writer = BatchedWriter(ours.fileno(), interval_s=0.05)
        for i in range(20):
            writer.append(f"request {i}")
        assert _writes(theirs) == []  # nothing written per line
        writes = await wait_for(lambda: _writes(theirs), what="the batch")
    assert writes == ["".join(f"request {i}\n" for i in range(20)).encode()]


async def test_a_line_longer_than_pipe_buf_is_written_alone_and_whole() -> None:
    ours, theirs = _pair()
    with ours, theirs:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        writer = BatchedWriter(ours.fileno())
        long = "y" * (select.PIPE_BUF * 3)
        writer.append("short")
        writer.append(long)
        writer.append("after")
        writer.flush()
        writes = _writes(theirs)
    assert b"".join(writes) == f"short\n{long}\nafter\n".encode()
    assert f"{long}\n".encode() in writes


async def test_flush_writes_what_waits_and_cancels_the_timer() -> None:
    ours, theirs = _pair()
    with ours, theirs:
        writer = BatchedWriter(ours.fileno(), interval_s=60)
        writer.append("at exit")
        writer.flush()
        assert _writes(theirs) == [b"at exit\n"]
        writer.flush()
        assert _writes(theirs) == []
