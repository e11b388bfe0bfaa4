"""The per-request series are counted in a tally and added to prometheus_client in batches:
what a scrape shows must be what one ``observe``/``inc`` per request would have shown."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from gateway import metrics

# Exactly on a bucket's bound, just above, the first and last buckets, and past the last.
DURATIONS = (0.0, 0.005, 0.0051, 0.01, 0.3, 1.0, 7.5, 60.0, 61.0, 3600.0, 0.049999)


def _duration_samples(registry: CollectorRegistry, name: str, route: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.startswith(name) and sample.labels.get("route") == route:
                key = sample.name.removeprefix(name) + sample.labels.get("le", "")
                if not key.endswith("_created"):
                    found[key] = sample.value
    return found


def test_folded_histogram_equals_one_observe_per_request() -> None:
    route = "tally-histogram"
    expected = CollectorRegistry()
    reference = Histogram(
        "reference_seconds", "-", ["route"], buckets=metrics.DURATION_BUCKETS, registry=expected
    )
    for duration in DURATIONS:
        reference.labels(route).observe(duration)
        metrics.REQUEST_TALLY.count(route, "GET", 200, duration)
    metrics.REQUEST_TALLY.fold()
    want = _duration_samples(expected, "reference_seconds", route)
    got = _duration_samples(REGISTRY, "gateway_request_duration_seconds", route)
    assert want["_count"] == len(DURATIONS)
    assert got == want


def test_reading_the_registry_counts_what_is_waiting() -> None:
    route = "tally-read"
    labels = {"route": route, "method": "POST", "code": "201"}
    for _ in range(3):
        metrics.REQUEST_TALLY.count(route, "POST", 201, 0.002)
    # No fold asked for: a scrape (any read of the default registry) must see all three.
    assert REGISTRY.get_sample_value("gateway_requests_total", labels) == 3
    assert (
        REGISTRY.get_sample_value("gateway_request_duration_seconds_count", {"route": route}) == 3
    )
    metrics.REQUEST_TALLY.count(route, "POST", 201, 0.002)
    assert REGISTRY.get_sample_value("gateway_requests_total", labels) == 4


def _folded(route: str) -> float:
    # The series as prometheus_client holds it, without the fold a registry read would do.
    return metrics.REQUESTS.labels(route, "GET", "200")._value.get()


async def test_counts_reach_the_series_within_the_fold_interval_unread() -> None:
    # With several workers the scraping worker reads the others' files: each must fold by itself.
    route = "tally-timer"
    metrics.REQUEST_TALLY.close()
    metrics.REQUEST_TALLY.count(route, "GET", 200, 0.001)
    assert _folded(route) == 0
    await asyncio.sleep(metrics.FOLD_INTERVAL_S + 0.5)
    assert _folded(route) == 1


def test_close_counts_what_is_waiting() -> None:
    route = "tally-close"
    metrics.REQUEST_TALLY.count(route, "GET", 200, 0.001)
    metrics.REQUEST_TALLY.close()
    assert _folded(route) == 1
