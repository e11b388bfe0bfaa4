"""Operations endpoints: liveness, readiness and the Prometheus metrics exposition."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway import metrics

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

_NO_STORE = {"Cache-Control": "no-store"}


class Health:
    """Health, readiness and metrics of the process.

    ``store_ready`` pings the current session store; ``draining`` says whether a drain began;
    ``sessions`` counts live sessions where the store can (memory)."""

    def __init__(
        self,
        *,
        store_ready: Callable[[], Awaitable[bool]],
        draining: Callable[[], bool],
        sessions: Callable[[], int | None],
    ) -> None:
        self._store_ready = store_ready
        self._draining = draining
        self._sessions = sessions

    async def healthz(self, request: web.BaseRequest) -> web.StreamResponse:
        """Liveness: the process answers."""
        return web.json_response({"status": "ok"}, headers=_NO_STORE)

    async def readiness(self) -> dict[str, bool]:
        """Every condition of readiness: config and keys loaded, store reachable, not draining."""
        return {
            # A runtime exists only for a configuration, users and keys that all loaded: these
            # two are true by construction, and listed so the answer shows every condition.
            "config": True,
            "keys": True,
            "session_store": await self._store_ready(),
            "not_draining": not self._draining(),
        }

    async def readyz(self, request: web.BaseRequest) -> web.StreamResponse:
        """The admin listener's readiness, with every check."""
        checks = await self.readiness()
        ready = all(checks.values())
        return web.json_response(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status=200 if ready else 503,
            headers=_NO_STORE,
        )

    async def public_readyz(self, request: web.BaseRequest) -> web.StreamResponse:
        """``/.gateway/readyz`` on the public listener: ready or not, without the checks."""
        ready = all((await self.readiness()).values())
        return web.json_response(
            {"status": "ready" if ready else "not ready"},
            status=200 if ready else 503,
            headers=_NO_STORE,
        )

    async def metrics(self, request: web.BaseRequest) -> web.StreamResponse:
        """Prometheus text; with several workers, summed over all of them."""
        count = self._sessions()
        if count is not None:
            metrics.SESSIONS_ACTIVE.set(count)
        if MULTIPROC_ENV in os.environ:
            metrics.REQUEST_TALLY.fold()  # this worker's own counts, into its files
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            payload = generate_latest(registry)
        else:
            payload = generate_latest(REGISTRY)
        return web.Response(
            body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST, **_NO_STORE}
        )
