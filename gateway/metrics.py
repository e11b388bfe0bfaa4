"""Prometheus metrics of CONTRACT section 6, as module-level objects in the default registry.

Served as Prometheus text on the admin listener's ``/metrics``; with ``server.workers > 1``
summed over every worker through prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set up by ``gateway run``).

The two series every request updates (``gateway_requests_total`` and
``gateway_request_duration_seconds``) are counted first in :data:`REQUEST_TALLY`, plain dicts
with no lock, and added to prometheus_client's series in one batch: whenever the default
registry is read (every scrape) and at least every :data:`FOLD_INTERVAL_S` (what the other
workers' files hold in multiprocess mode), and when the gateway closes.

Label values must come from configuration or fixed vocabularies (route and upstream names,
result and reason codes, HTTP methods and status codes), never from request data, so the number
of series stays bounded.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Iterable
from typing import Final, cast

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Upper bounds of ``gateway_request_duration_seconds``'s buckets (and ``+Inf``)."""

FOLD_INTERVAL_S: Final = 1.0
"""Longest time a request's counts wait in :data:`REQUEST_TALLY` while nothing reads them."""


class _Durations:
    """One route's request durations since the last fold: a count per bucket and their sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)  # the last one: +Inf
        self.total = 0.0


class RequestTally:
    """The per-request series of this process, counted without prometheus_client (whose
    updates take a lock each) and added to it in batches by :meth:`fold`."""

    __slots__ = ("_counts", "_durations", "_timer")

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, int], int] = {}
        self._durations: dict[str, _Durations] = {}
        self._timer: asyncio.TimerHandle | None = None

    def count(self, route: str, method: str, status: int, duration: float) -> None:
        """One answered request: ``gateway_requests_total{route,method,code}`` and its
        duration in ``gateway_request_duration_seconds{route}``."""
        counts = self._counts
        key = (route, method, status)
        counts[key] = counts.get(key, 0) + 1
        durations = self._durations.get(route)
        if durations is None:
            durations = self._durations[route] = _Durations()
        # The first bucket whose upper bound is >= duration, as Histogram.observe picks it.
        durations.counts[bisect_left(DURATION_BUCKETS, duration)] += 1
        durations.total += duration
        if self._timer is None:
            self._arm()

    def fold(self) -> None:
        """Add everything counted since the last fold to prometheus_client's series."""
        counts, self._counts = self._counts, {}
        durations, self._durations = self._durations, {}
        for (route, method, status), n in counts.items():
            REQUESTS.labels(route, method, str(status)).inc(n)
        for route, tally in durations.items():
            # prometheus_client has no public way to add n observations at once: its
            # histogram keeps a sum and one count per bucket (tests/test_metrics_tally.py
            # checks the result against observe()).
            child = REQUEST_DURATION.labels(route)
            child._sum.inc(tally.total)
            for index, n in enumerate(tally.counts):
                if n:
                    child._buckets[index].inc(n)

    def close(self) -> None:
        """Fold now and stop the timer (the gateway is closing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.fold()

    def _arm(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop to wait in: folded when the registry is read
        self._timer = loop.call_later(FOLD_INTERVAL_S, self._timed_fold)

    def _timed_fold(self) -> None:
        self._timer = None
        self.fold()


REQUEST_TALLY: Final = RequestTally()
"""The process's tally (process-wide, as prometheus_client's default registry is)."""


class _FoldOnRead:
    """Registered ahead of the gateway's series: reading the default registry (a scrape,
    ``REGISTRY.get_sample_value``) first folds :data:`REQUEST_TALLY` into them."""

    def collect(self) -> Iterable[Metric]:
        REQUEST_TALLY.fold()
        return ()

    def describe(self) -> Iterable[Metric]:
        return ()


REGISTRY.register(cast(Collector, _FoldOnRead()))

REQUESTS = Counter(
    "gateway_requests_total",
    "Requests answered, by route name (or a fixed placeholder), method and status code.",
    ["route", "method", "code"],
)
REQUEST_DURATION = Histogram(
    "gateway_request_duration_seconds",
    "Time from request received to response complete, by route name.",
    ["route"],
    buckets=DURATION_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors_total",
    "Upstream requests that failed, by upstream name and reason code (connect_failed, ...).",
    ["upstream", "reason"],
)
PASSWORD_VERIFICATIONS = Counter(
    "gateway_password_verifications_total",
    "Password hashes verified (each costs the hash's CPU time and memory; a locked-out attempt "
    "costs none).",
)
LOGIN_ATTEMPTS = Counter(
    "gateway_login_attempts_total",
    "Login attempts by result (success, failure, locked, ...).",
    ["result"],
)
TOKENS_MINTED = Counter(
    "gateway_tokens_minted_total",
    "JWTs signed: upstream tokens minted on a cache miss, and API bearer tokens.",
)
TOKEN_CACHE_HITS = Counter(
    "gateway_token_cache_hits_total",
    "Upstream tokens served from the token cache instead of being signed again.",
)
CONFIG_RELOADS = Counter(
    "gateway_config_reloads_total",
    "Configuration reloads (SIGHUP) by result (success, failure).",
    ["result"],
)
SESSIONS_ACTIVE = Gauge(
    "gateway_sessions_active",
    "Live sessions in the memory session store of this process.",
)
SESSION_CACHE_LIVE = Gauge(
    "gateway_session_cache_live",
    "1 while this process keeps Redis sessions locally (Redis reports every write to them on "
    "its tracking connection); 0 while every request reads Redis.",
)
STORE_OUTAGES = Counter(
    "gateway_session_store_outages_total",
    "Times the session store (Redis) became unavailable: each outage counts once, however many "
    "requests it refused.",
)
