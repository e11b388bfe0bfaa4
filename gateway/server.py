"""Process model for ``gateway run``: one process, or ``server.workers`` processes sharing the
listening port through SO_REUSEPORT under a small supervisor.

Each worker serves with aiohttp's runner, which turns SIGINT/SIGTERM into a graceful stop:
no new connections, in-flight requests get ``server.shutdown_grace`` to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from prometheus_client import multiprocess

from gateway.app import Gateway
from gateway.bundle import Bundle, load
from gateway.config import ConfigError
from gateway.config.settings import Settings
from gateway.listener import Listener
from gateway.ops import MULTIPROC_ENV
from gateway.reload import Reloader
from gateway.runtime import RuntimeHolder
from gateway.websockets import GOING_AWAY

log = logging.getLogger("gateway")

# A worker that dies this soon after starting never served: restarting it would only loop.
_EARLY_EXIT_S = 2.0


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra ``reason``/``status`` fields are kept, and ``event``,
    ``user`` and ``client_ip`` of auth events."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("reason", "status", "event", "user", "client_ip"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class AiohttpSecretsFilter(logging.Filter):
    """aiohttp's own error records quote the offending request line or header line (a Cookie or
    an Authorization header included) in their message and traceback: keep only what failed."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("aiohttp") and (record.exc_info or record.args):
            # SECURITY: never a cookie or token in the log, even from a malformed request.
            exc = record.exc_info[1] if record.exc_info else None
            summary = type(exc).__name__ if exc is not None else "error"
            template = record.msg if isinstance(record.msg, str) else "aiohttp"
            record.msg = f"{template.split('%', 1)[0].strip()} ({summary})"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(AiohttpSecretsFilter())
    if settings.server.access_log == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def drain_delay_s(settings: Settings) -> float:
    """How long a draining process keeps accepting after readyz turned 503, so that load
    balancers and Kubernetes endpoints stop sending before connections are refused."""
    return min(2.0, settings.server.shutdown_grace_s / 4)


_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
_DRAIN_POLL_S = 0.02


async def _serve_async(bundle: Bundle, *, reuse_port: bool) -> None:
    settings = bundle.settings
    server = settings.server
    gateway = Gateway(bundle)
    holder = gateway.holder
    main = Listener(gateway.handle, server.timeouts, plain=gateway.handle_plain)
    listeners = [main]
    try:
        await gateway.start()
        await main.start(server.listen_host, server.listen_port, reuse_port=reuse_port)
        if server.admin_listen is not None:
            admin = Listener(gateway.handle_admin, server.timeouts)
            listeners.append(admin)
            host, port = server.admin_listen
            await admin.start(host, port, reuse_port=reuse_port)
        _settle_garbage_collector()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        if settings.source is not None:
            reloader = Reloader(holder, settings.source)
            loop.add_signal_handler(signal.SIGHUP, reloader.request)
        # A worker is forked with these signals blocked (see _supervise_workers): one sent while
        # it started is delivered now, to the handlers above, instead of being lost.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        await stop.wait()
        await _drain(holder, listeners)
    finally:
        for listener in reversed(listeners):
            await listener.stop()
        await gateway.close()


GC_THRESHOLDS = (10_000, 20, 20)
"""The collector's generation thresholds while serving (CPython's defaults are 700, 10, 10)."""


def _settle_garbage_collector() -> None:
    """Once serving: what start-up built (modules, configuration, keys, pools) is frozen out of
    the collector's sight, so a full collection never walks it again (it took tens of ms,
    setting the p99), and young collections run less often: a request's garbage is freed by
    reference counting, and the cycles it leaves are few and small."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _drain(holder: RuntimeHolder, listeners: list[Listener]) -> None:
    """CONTRACT section 6. readyz says 503 at once; the listener keeps accepting briefly so
    load balancers notice, then closes; from then on every response says ``Connection: close``
    and quiet keep-alive connections close, WebSockets are told the server is going away
    (1001); in-flight requests (long downloads included) get shutdown_grace; the process exits
    as soon as no connection is left."""
    settings = holder.current.settings
    holder.draining = True
    log.info("draining", extra={"reason": "drain"})
    await asyncio.sleep(drain_delay_s(settings))
    for listener in listeners:
        await listener.stop_accepting()
    holder.closing = True
    for listener in listeners:
        listener.drain()
    await holder.current.sockets.close_where(
        lambda entry: True, code=GOING_AWAY, reason=b"server draining"
    )
    deadline = time.monotonic() + settings.server.shutdown_grace_s
    while holder.inflight > 0 or any(listener.connections for listener in listeners):
        if time.monotonic() >= deadline:
            log.warning(
                "shutdown grace over: cutting %d request(s) still in flight",
                holder.inflight,
                extra={"reason": "grace_exceeded"},
            )
            return
        await asyncio.sleep(_DRAIN_POLL_S)


def _run_worker(bundle: Bundle, reuse_port: bool) -> None:
    asyncio.run(_serve_async(bundle, reuse_port=reuse_port))


def _worker_main(bundle: Bundle) -> None:
    setup_logging(bundle.settings)
    try:
        _run_worker(bundle, reuse_port=True)
    except OSError as exc:
        log.error("worker %d cannot listen: %s", os.getpid(), exc, extra={"reason": "listen"})
        raise SystemExit(1) from None


def serve(bundle: Bundle) -> int:
    """Serve until SIGINT/SIGTERM. Returns the process exit code.

    ``bundle`` is loaded with ``generate_key`` before any worker starts, so that a generated key
    is created once and shared; workers are forked with it and read nothing again."""
    settings = bundle.settings
    setup_logging(settings)
    for warning in bundle.warnings:
        log.warning("config: %s", warning, extra={"reason": "config_warning"})
    server = settings.server
    log.info(
        "gateway listening on %s:%d for %s (%d worker(s))",
        server.listen_host,
        server.listen_port,
        server.public_url,
        server.workers,
    )
    if server.workers == 1:
        try:
            _run_worker(bundle, reuse_port=False)
        except OSError as exc:
            log.error("cannot listen: %s", exc, extra={"reason": "listen"})
            return 1
        return 0
    return _supervise(bundle)


def _supervise(bundle: Bundle) -> int:
    try:
        return _supervise_workers(bundle)
    finally:
        metrics_dir = os.environ.get(MULTIPROC_ENV)
        if metrics_dir and os.environ.get("GATEWAY_OWNS_METRICS_DIR") == "1":
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise_workers(bundle: Bundle) -> int:
    ctx = multiprocessing.get_context("fork")
    stopping = False
    workers: dict[int, tuple[BaseProcess, float]] = {}

    # What a new or restarted worker starts with: the last configuration a SIGHUP loaded
    # successfully, the same as its siblings serve.
    settings = bundle.settings
    current = bundle
    hup_pending = False

    def start_one() -> None:
        # SECURITY/robustness: a forked worker runs our handlers until its event loop installs
        # its own; blocked signals wait for those instead (the worker unblocks them).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            proc = ctx.Process(target=_worker_main, args=(current,), daemon=False)
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        assert proc.pid is not None
        workers[proc.pid] = (proc, time.monotonic())

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc, _ in workers.values():
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

    def forward_hup(signum: int, frame: FrameType | None) -> None:
        nonlocal hup_pending
        hup_pending = True
        for proc, _ in workers.values():
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, forward_hup)
    for _ in range(settings.server.workers):
        start_one()

    exit_code = 0
    deadline: float | None = None
    while workers:
        if hup_pending and settings.source is not None:
            hup_pending = False
            # The workers log a bad file's errors; new workers keep the last good settings.
            with contextlib.suppress(ConfigError):
                current = load(settings.source, generate_key=True)
        if stopping and deadline is None:
            deadline = time.monotonic() + current.settings.server.shutdown_grace_s + 5.0
        if deadline is not None and time.monotonic() > deadline:
            for proc, _ in workers.values():
                proc.kill()
        for pid, (proc, started) in list(workers.items()):
            if proc.is_alive():
                continue
            proc.join()
            del workers[pid]
            if MULTIPROC_ENV in os.environ:
                multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
            if stopping:
                continue
            if time.monotonic() - started < _EARLY_EXIT_S:
                log.error("worker %d exited at start-up (code %s); stopping", pid, proc.exitcode)
                exit_code = 1
                stop(signal.SIGTERM, None)
            else:
                log.error(
                    "worker %d died (code %s); restarting",
                    pid,
                    proc.exitcode,
                    extra={"reason": "worker_died"},
                )
                start_one()
        time.sleep(0.1)
    return exit_code
