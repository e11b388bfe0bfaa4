"""Process model for ``gateway run``: one process, or ``server.workers`` processes sharing the
listening port through SO_REUSEPORT under a small supervisor.

Each worker serves with aiohttp's runner, which turns SIGINT/SIGTERM into a graceful stop:
no new connections, in-flight requests get ``server.shutdown_grace`` to finish.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import sys
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from aiohttp import web

from gateway.app import build_app
from gateway.config.settings import Settings
from gateway.tokens import KeyConfigError, load_keyset

log = logging.getLogger("gateway")

# A worker that dies this soon after starting never served: restarting it would only loop.
_EARLY_EXIT_S = 2.0


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra ``reason``/``status`` fields are kept."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("reason", "status"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.server.access_log == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def _run_worker(settings: Settings, reuse_port: bool) -> None:
    server = settings.server
    web.run_app(
        build_app(settings),
        host=server.listen_host,
        port=server.listen_port,
        reuse_port=reuse_port or None,
        shutdown_timeout=server.shutdown_grace_s,
        access_log=None,
        print=None,
        handle_signals=True,
    )


def _worker_main(settings: Settings) -> None:
    setup_logging(settings)
    try:
        _run_worker(settings, reuse_port=True)
    except OSError as exc:
        log.error("worker %d cannot listen: %s", os.getpid(), exc, extra={"reason": "listen"})
        raise SystemExit(1) from None


def serve(settings: Settings, *, warnings: list[str]) -> int:
    """Serve until SIGINT/SIGTERM. Returns the process exit code."""
    setup_logging(settings)
    for warning in warnings:
        log.warning("config: %s", warning, extra={"reason": "config_warning"})
    server = settings.server
    try:
        # Before any worker starts, so that a generated key is created once and shared.
        load_keyset(settings.tokens, server.data_dir)
    except KeyConfigError as exc:
        for path, message in exc.issues:
            log.error("%s: %s", path, message, extra={"reason": "keys"})
        return 1
    log.info(
        "gateway listening on %s:%d for %s (%d worker(s))",
        server.listen_host, server.listen_port, server.public_url, server.workers,
    )
    if server.workers == 1:
        try:
            _run_worker(settings, reuse_port=False)
        except OSError as exc:
            log.error("cannot listen: %s", exc, extra={"reason": "listen"})
            return 1
        return 0
    return _supervise(settings)


def _supervise(settings: Settings) -> int:
    ctx = multiprocessing.get_context("fork")
    stopping = False
    workers: dict[int, tuple[BaseProcess, float]] = {}

    def start_one() -> None:
        proc = ctx.Process(target=_worker_main, args=(settings,), daemon=False)
        proc.start()
        assert proc.pid is not None
        workers[proc.pid] = (proc, time.monotonic())

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc, _ in workers.values():
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(settings.server.workers):
        start_one()

    exit_code = 0
    deadline: float | None = None
    while workers:
        if stopping and deadline is None:
            deadline = time.monotonic() + settings.server.shutdown_grace_s + 5.0
        if deadline is not None and time.monotonic() > deadline:
            for proc, _ in workers.values():
                proc.kill()
        for pid, (proc, started) in list(workers.items()):
            if proc.is_alive():
                continue
            proc.join()
            del workers[pid]
            if stopping:
                continue
            if time.monotonic() - started < _EARLY_EXIT_S:
                log.error("worker %d exited at start-up (code %s); stopping", pid, proc.exitcode)
                exit_code = 1
                stop(signal.SIGTERM, None)
            else:
                log.error("worker %d died (code %s); restarting", pid, proc.exitcode,
                          extra={"reason": "worker_died"})
                start_one()
        time.sleep(0.1)
    return exit_code
