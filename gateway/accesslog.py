"""The access log: one line per request, as it went (status sent, bytes, outcome), with every
secret in its path and query redacted; and the per-request metrics, counted in the same place
(:data:`gateway.metrics.REQUEST_TALLY`).

Lines are formatted here (no ``logging.LogRecord`` per request) and written to stderr in
batches (:class:`BatchedWriter`): at most every 100 ms, at once when 64 KiB are waiting, and when
the gateway closes, so nothing is lost at SIGTERM. Each ``write`` holds whole lines and at most
``PIPE_BUF`` bytes (unless one line is longer), so the lines of several workers sharing one pipe
never interleave mid-line.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import time
from collections.abc import Callable
from typing import Protocol
from urllib.parse import unquote

from gateway import metrics
from gateway.context import Trace
from gateway.errors import UpstreamError
from gateway.http import Incoming

FLUSH_INTERVAL_S = 0.1
"""Longest time an access-log line waits in memory before it is written."""

_FLUSH_BYTES = 64 * 1024

_q: Callable[[str], str] = json.encoder.encode_basestring_ascii
"""A JSON string literal, as ``json.dumps`` writes it (C, ASCII-only)."""
_PIPE_BUF = select.PIPE_BUF


class LineSink(Protocol):
    """Where finished access-log lines go."""

    def append(self, line: str) -> None: ...

    def flush(self) -> None: ...


class BatchedWriter:
    """Access-log lines for a file descriptor (stderr), written in batches."""

    def __init__(self, fd: int = 2, interval_s: float = FLUSH_INTERVAL_S) -> None:
        self._fd = fd
        self._interval_s = interval_s
        self._lines: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None

    def append(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line) + 1
        if self._size >= _FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self._interval_s, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines, self._lines, self._size = self._lines, [], 0
        batch: list[bytes] = []
        size = 0
        for line in lines:
            data = line.encode("utf-8", "backslashreplace") + b"\n"
            if batch and size + len(data) > _PIPE_BUF:
                self._write(b"".join(batch))
                batch, size = [], 0
            batch.append(data)
            size += len(data)
        if batch:
            self._write(b"".join(batch))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except InterruptedError:
                continue
            except BlockingIOError:
                select.select([], [self._fd], [], 1.0)  # a non-blocking stderr that is full
                continue
            except OSError:
                return  # stderr is gone: there is nowhere left to report it
            view = view[written:]


class AccessLog:
    """The access log and per-request metrics of one gateway process."""

    def __init__(self, sink: LineSink | None = None) -> None:
        self.sink: LineSink = sink if sink is not None else BatchedWriter()
        self._second = -1
        self._stamps = ("", "")

    def record(
        self,
        request: Incoming,
        *,
        trace: Trace,
        client_ip: str,
        request_id: str,
        started: float,
        log_format: str,
    ) -> None:
        """The metrics and the access-log line of one finished request: the status the client
        was sent (0 when no answer went out), the body bytes sent, how it ended
        (``trace.outcome``) and an upstream's failure (``trace.error``)."""
        duration = time.perf_counter() - started
        status = trace.status
        metrics.REQUEST_TALLY.count(trace.route, method_label(request.method), status, duration)
        if isinstance(trace.error, UpstreamError):
            metrics.UPSTREAM_ERRORS.labels(trace.upstream, trace.error.reason).inc()
        if log_format == "off":
            return
        raw_path, _, query = request.raw_path.partition("?")
        path = redact_path(raw_path[:2048]) + ("?" + redact_query(query) if query else "")
        now = time.time()
        json_time, text_time = self._time(now)
        if log_format == "json":
            # What json.dumps gives for these keys, in this order, without building a dict.
            line = (
                f'{{"time": {_q(json_time)}, "request_id": {_q(request_id)}, '
                f'"client_ip": {_q(client_ip)}, "method": {_q(request.method)}, '
                f'"path": {_q(path)}, "status": {status}, "bytes": {trace.sent}, '
                f'"duration_ms": {round(duration * 1000, 3)!r}, "route": {_q(trace.route)}, '
                f'"upstream": {_q(trace.upstream)}, "user": {_q(trace.user)}, '
                f'"outcome": {_q(trace.outcome)}}}'
            )
        else:
            # The layout of the gateway's other text-format log lines (gateway.server).
            line = (
                f"{text_time},{int(now % 1 * 1000):03d} INFO gateway.access: "
                f'{client_ip} {trace.user} "{request.method} {path}" {status} {trace.sent} '
                f"{duration * 1000:.3f}ms route={trace.route} upstream={trace.upstream} "
                f"rid={request_id} outcome={trace.outcome}"
            )
        self.sink.append(line)

    def flush(self) -> None:
        """Write every waiting line and count every waiting request now (the gateway is
        closing)."""
        self.sink.flush()
        metrics.REQUEST_TALLY.close()

    def _time(self, now: float) -> tuple[str, str]:
        """The JSON and text timestamps of this second, formatted once per second."""
        second = int(now)
        if second != self._second:
            local = time.localtime(second)
            self._stamps = (
                time.strftime("%Y-%m-%dT%H:%M:%S%z", local),
                time.strftime("%Y-%m-%d %H:%M:%S", local),
            )
            self._second = second
        return self._stamps


_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)
# Query keys whose values are secrets by name, and values that look like tokens whatever the key.
_SECRET_KEY = re.compile(
    r"token|secret|passw|pwd|key|code|session|auth|sig|credential|ticket|jwt|nonce|otp",
    re.IGNORECASE,
)
# ...and names that are secrets exactly (too short to look for inside other names).
_SECRET_NAMES = frozenset(
    {"pw", "pass", "passwd", "pwd", "api_key", "apikey", "code", "state", "session", "sig"}
)
_SECRET_VALUE = re.compile(r"[A-Za-z0-9_\-+/=.~%]{24,}")
_QUERY_SPLIT = re.compile(r"[&;]")
_NAME_PARTS = re.compile(r"[^a-z0-9]+")


def method_label(method: str) -> str:
    # Bounded label values: a client inventing methods must not invent series.
    return method if method in _METHODS else "OTHER"


def redact_query(query: str, _depth: int = 0) -> str:
    """The query as sent, with every value that could be a secret replaced by ``REDACTED``.

    Split on ``&`` and on ``;`` (which some servers also treat as a separator). A value is a
    secret by its name (``token``, ``user[pass]``...), by its looks (a long token-like string),
    or when it holds a URL or query that has one (``rd=/reset?token=...``)."""
    if not query:
        return ""
    parts = []
    for part, separator in zip(
        _QUERY_SPLIT.split(query), [*_QUERY_SPLIT.findall(query), ""], strict=True
    ):
        key, equals, value = part.partition("=")
        if equals and (_secret_name(unquote(key)) or _secret_value(value, _depth)):
            value = "REDACTED"
        elif not equals and _SECRET_VALUE.fullmatch(key):
            key = "REDACTED"  # a bare token: ?eyJhbGciOi...
        parts.append(f"{key}{equals}{value}{separator}")
    return "".join(parts)


def redact_path(path: str) -> str:
    """The path as sent, with the values of secret ``;parameters`` (``;jsessionid=...``)
    replaced by ``REDACTED``."""
    if ";" not in path:
        return path
    segments = []
    for segment in path.split("/"):
        name, *params = segment.split(";")
        kept = [name]
        for param in params:
            key, equals, value = param.partition("=")
            secret = equals and (_secret_name(unquote(key)) or _SECRET_VALUE.fullmatch(value))
            kept.append(f"{key}=REDACTED" if secret else param)
        segments.append(";".join(kept))
    return "/".join(segments)


def _secret_name(name: str) -> bool:
    lowered = name.lower()
    if lowered in _SECRET_NAMES or _SECRET_KEY.search(lowered):
        return True
    # Structured names: user[pass], form.pw, auth-state.
    return any(part in _SECRET_NAMES for part in _NAME_PARTS.split(lowered))


def _secret_value(value: str, depth: int) -> bool:
    if _SECRET_VALUE.fullmatch(value):
        return True
    if depth >= 2:
        return False
    decoded = unquote(value)
    if "=" not in decoded:
        return False
    # A URL or a query inside the value (a return path, a redirect_uri) with a secret of its own.
    inner = decoded.partition("?")[2] if "?" in decoded else decoded
    return redact_query(inner, depth + 1) != inner
