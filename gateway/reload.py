"""SIGHUP: reload configuration, users and keys atomically; a bad file changes nothing."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from gateway import metrics
from gateway.bundle import load
from gateway.config import ConfigError
from gateway.revoke import after_reload
from gateway.runtime import Runtime, RuntimeHolder

log = logging.getLogger("gateway.reload")


async def reload(holder: RuntimeHolder, source: Path) -> bool:
    """Build a new runtime from ``source`` and swap it in for new requests.

    In-flight requests finish on the runtime they started with, which is closed once the last
    one is done. On any error the old runtime keeps serving and the errors are logged.
    """
    old = holder.current
    try:
        bundle = await asyncio.to_thread(load, source, generate_key=True)
        new = Runtime.build(bundle, previous=old)
    except ConfigError as exc:
        metrics.CONFIG_RELOADS.labels("failure").inc()
        log.error(
            "reload refused, still serving the previous configuration: %s",
            str(exc).replace("\n", "; "),
            extra={"reason": "reload_invalid"},
        )
        return False
    except (OSError, ValueError) as exc:
        # e.g. an unreadable file, or a Redis URL the client library refuses
        metrics.CONFIG_RELOADS.labels("failure").inc()
        log.error("reload refused: %s", type(exc).__name__, extra={"reason": "reload_error"})
        return False
    holder.current = new
    metrics.CONFIG_RELOADS.labels("success").inc()
    log.info("configuration reloaded from %s", source, extra={"reason": "reload_ok"})
    holder.retiring.add(asyncio.create_task(_retire(holder, old, new)))
    # SECURITY: a new password, a removed or disabled user ends their sessions and tokens now;
    # open WebSockets follow the new users and routes.
    await after_reload(old, new, now=time.time())
    return True


async def _retire(holder: RuntimeHolder, old: Runtime, new: Runtime) -> None:
    try:
        if old.inflight > 0:
            old.idle = asyncio.Event()
            await old.idle.wait()
    finally:
        await old.close(keep=new)
        task = asyncio.current_task()
        if task is not None:
            holder.retiring.discard(task)


class Reloader:
    """Runs reloads one at a time: a SIGHUP during a reload queues exactly one more (however
    many arrive), which then reads the file as it is by then. Two reloads never build from the
    same runtime, so every replaced runtime is retired, its Redis client and pools closed."""

    def __init__(self, holder: RuntimeHolder, source: Path) -> None:
        self._holder = holder
        self._source = source
        self._task: asyncio.Task[None] | None = None
        self._again = False

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The reload running now, if any (for shutdown)."""
        return self._task

    def request(self) -> None:
        """A SIGHUP: reload now, or once more after the reload in progress."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self._again = False
            await reload(self._holder, self._source)
            if not self._again:
                return
