"""Metrics (CONTRACT section 6) hold the right values after known traffic.

In-process tests read deltas from ``prometheus_client.REGISTRY`` (process-global, shared with
every other test); the multi-worker test scrapes a real ``gateway run`` with two workers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import REGISTRY

from tests.e2e.login.login_harness import JSON, LOGOUT, Browser
from tests.e2e.ops.ops_harness import (
    Deltas,
    cookie_session,
    free_port,
    get,
    label_values,
    ops_config,
    parse_metrics,
    sample,
    scrape,
    value_of,
    with_upstream_url,
    write_config,
)
from tests.redis_support import free_port as closed_port
from tests.support import wait_for

METRICS = "/metrics"  # on the admin listener only
REQUESTS = "gateway_requests_total"
DURATION_COUNT = "gateway_request_duration_seconds_count"


def _get(route: str, code: str = "200", method: str = "GET") -> tuple[str, dict[str, str]]:
    return REQUESTS, {"route": route, "method": method, "code": code}


async def test_requests_are_counted_by_route_name_method_and_code(upstream, make_gateway, tmp_path):
    client = await make_gateway(ops_config(upstream.url, tmp_path))
    delta = Deltas(
        _get("public"),
        (DURATION_COUNT, {"route": "public"}),
        _get("-", "404"),
        _get("gateway"),
        _get("public", method="OTHER"),
        _get("members", "401"),
    )
    for i in range(7):
        async with client.get(f"/public/page{i}") as resp:
            assert resp.status == 200
    async with client.get("/nowhere/at/all") as resp:
        assert resp.status == 404
    async with client.get("/.gateway/healthz") as resp:
        assert resp.status == 200
    # aiohttp's parser refuses made-up methods outright; WebDAV's are real but not HTTP's own.
    async with client.request("PROPFIND", "/public/x") as resp:
        assert resp.status == 200
        assert upstream.last.method == "PROPFIND"
    async with client.get("/members/x", headers={"Accept": JSON}) as resp:
        assert resp.status == 401

    assert delta(*_get("public")) == 7
    assert delta(DURATION_COUNT, route="public") == 8  # the PROPFIND request too: same route
    assert delta(*_get("-", "404")) == 1
    assert delta(*_get("gateway")) == 1
    assert delta(*_get("public", method="OTHER")) == 1
    assert delta(*_get("members", "401")) == 1
    # A method outside HTTP's own never becomes a label value: clients must not create series.
    propfind = {"route": "public", "method": "PROPFIND", "code": "200"}
    assert REGISTRY.get_sample_value(REQUESTS, propfind) is None


def _series(name: str) -> set[frozenset[tuple[str, str]]]:
    return {
        frozenset(s.labels.items())
        for family in REGISTRY.collect()
        for s in family.samples
        if s.name == name
    }


async def test_route_labels_are_route_names_never_paths(upstream, make_gateway, tmp_path):
    client = await make_gateway(ops_config(upstream.url, tmp_path))
    delta = Deltas(_get("public"), _get("-", "404"))
    series_before = _series(REQUESTS) | _series(DURATION_COUNT)
    for i in range(50):
        async with client.get(f"/public/item/{i}?q={i}") as resp:
            assert resp.status == 200
    for i in range(5):
        async with client.get(f"/unknown-{i}") as resp:
            assert resp.status == 404
    assert delta(*_get("public")) == 50
    assert delta(*_get("-", "404")) == 5
    # 55 distinct paths: at most the two series of their (route, method, code), and one
    # duration series per route, ever came into existence.
    new = (_series(REQUESTS) | _series(DURATION_COUNT)) - series_before
    assert new <= {
        frozenset(_get("public")[1].items()),
        frozenset(_get("-", "404")[1].items()),
        frozenset({("route", "public")}),
        frozenset({("route", "-")}),
    }

    async with client.session.get(client.admin_url(METRICS)) as resp:
        assert resp.status == 200
        samples = parse_metrics(await resp.text())
    for name in (REQUESTS, DURATION_COUNT):
        routes = label_values(samples, name, "route")
        assert {"public", "-"} <= routes
        # Other tests of this process share the registry: their route names show up too,
        # but no label value is ever a path.
        assert not [r for r in routes if "/" in r], routes


async def test_upstream_refused_is_counted_as_connect_failed(upstream, make_gateway, tmp_path):
    document = with_upstream_url(
        ops_config(upstream.url, tmp_path), f"http://127.0.0.1:{closed_port()}"
    )
    client = await make_gateway(document)
    delta = Deltas(
        ("gateway_upstream_errors_total", {"upstream": "app", "reason": "connect_failed"}),
        _get("public", "502"),
    )
    async with client.get("/public/x") as resp:
        assert resp.status == 502
    assert delta("gateway_upstream_errors_total", upstream="app", reason="connect_failed") == 1
    assert delta(*_get("public", "502")) == 1


async def test_login_attempts_are_counted_by_result(upstream, make_gateway, tmp_path):
    throttle = {"max_failures": 2, "window": 300, "lockout": 900}
    client = await make_gateway(ops_config(upstream.url, tmp_path, throttle=throttle))
    attempts = "gateway_login_attempts_total"
    delta = Deltas(*((attempts, {"result": r}) for r in ("success", "failure", "locked")))
    browser = Browser(client)
    assert (await browser.json_login("alice")).status == 200
    assert delta(attempts, result="success") == 1
    for _ in range(2):
        assert (await Browser(client).json_login("bob", "wrong password")).status == 401
    assert delta(attempts, result="failure") == 2
    # Locked out now (the right password does not help): counted as locked, not as a failure.
    assert (await Browser(client).json_login("bob")).status == 401
    assert delta(attempts, result="locked") == 1
    assert delta(attempts, result="failure") == 2
    assert delta(attempts, result="success") == 1


async def test_sessions_active_is_the_number_of_live_memory_sessions_when_scraped(
    upstream, make_gateway, tmp_path
):
    client = await make_gateway(ops_config(upstream.url, tmp_path))
    people = {name: Browser(client) for name in ("alice", "bob", "carol")}
    for name, browser in people.items():
        assert (await browser.json_login(name)).status == 200
    logout = await people["carol"].post(LOGOUT, json={}, accept=JSON)
    assert logout.status == 204

    async with client.session.get(client.admin_url(METRICS)) as resp:
        assert resp.status == 200
        samples = parse_metrics(await resp.text())
    assert value_of(samples, "gateway_sessions_active") == 2.0

    assert (await Browser(client).json_login("dave")).status == 200
    async with client.session.get(client.admin_url(METRICS)) as resp:
        samples = parse_metrics(await resp.text())
    assert value_of(samples, "gateway_sessions_active") == 3.0


async def test_metrics_endpoint_is_prometheus_text_with_every_contract_metric(
    upstream, make_gateway, tmp_path
):
    client = await make_gateway(ops_config(upstream.url, tmp_path))
    async with client.get("/public/warm-up") as resp:
        assert resp.status == 200
    async with client.session.get(client.admin_url(METRICS)) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        assert resp.headers["Cache-Control"] == "no-store"
        text = await resp.text()
    for name, kind in (
        ("gateway_requests_total", "counter"),
        ("gateway_request_duration_seconds", "histogram"),
        ("gateway_upstream_errors_total", "counter"),
        ("gateway_login_attempts_total", "counter"),
        ("gateway_tokens_minted_total", "counter"),
        ("gateway_token_cache_hits_total", "counter"),
        ("gateway_config_reloads_total", "counter"),
        ("gateway_sessions_active", "gauge"),
    ):
        assert f"# TYPE {name} {kind}\n" in text, name
    samples = parse_metrics(text)
    assert value_of(samples, REQUESTS, route="public", method="GET", code="200") == sample(
        REQUESTS, route="public", method="GET", code="200"
    )
    buckets = {
        dict(labels)["le"]
        for (name, labels) in samples
        if name == "gateway_request_duration_seconds_bucket" and ("route", "public") in labels
    }
    assert "+Inf" in buckets and len(buckets) > 5


async def test_two_workers_one_scrape_counts_every_worker(upstream, spawn, tmp_path):
    before = {p.name for p in Path(tempfile.gettempdir()).glob("gateway-metrics-*")}
    port, admin_port = free_port(), free_port()
    config = write_config(
        tmp_path / "config.yaml",
        port=port,
        admin_port=admin_port,
        upstream_port=upstream.port,
        data_dir=tmp_path,
        workers=2,
        session=cookie_session(tmp_path),
        access_log="off",
    )
    gateway = spawn(config, port)
    await gateway.wait_ready(f"http://127.0.0.1:{admin_port}/healthz")
    metrics_dir = Path(gateway.environ()["PROMETHEUS_MULTIPROC_DIR"])
    assert metrics_dir.name.startswith("gateway-metrics-") and metrics_dir.name not in before
    workers = gateway.children()
    assert len(workers) == 2

    for i in range(40):
        status, _ = await get(f"{gateway.base}/public/n{i}")  # each on a new connection
        assert status == 200

    # A worker counts a request once its response is sent: the client can be faster.
    async def all_counted() -> bool:
        samples = await scrape(f"http://127.0.0.1:{admin_port}/metrics")
        return value_of(samples, REQUESTS, route="public", method="GET", code="200") == 40

    await wait_for(all_counted, what="40 requests counted")
    # Both workers served some of them (each worker writes its own counter file)...
    served_by = {pid for pid in workers if (metrics_dir / f"counter_{pid}.db").exists()}
    assert served_by == set(workers), sorted(os.listdir(metrics_dir))
    # ...and whichever worker answers the scrape, it reports the sum over both.
    for _ in range(6):
        samples = await scrape(f"http://127.0.0.1:{admin_port}/metrics")
        assert value_of(samples, REQUESTS, route="public", method="GET", code="200") == 40
        assert value_of(samples, DURATION_COUNT, route="public") == 40

    gateway.signal(signal.SIGTERM)
    assert await gateway.wait_exit() == 0
    assert not metrics_dir.exists()
    after = {p.name for p in Path(tempfile.gettempdir()).glob("gateway-metrics-*")}
    assert metrics_dir.name not in after


async def test_request_duration_lands_in_the_right_buckets(upstream, make_gateway, tmp_path):
    client = await make_gateway(ops_config(upstream.url, tmp_path))
    buckets = "gateway_request_duration_seconds_bucket"
    delta = Deltas(
        *((buckets, {"route": "public", "le": le}) for le in ("0.25", "0.5", "1.0", "+Inf")),
        ("gateway_request_duration_seconds_sum", {"route": "public"}),
    )
    async with client.get("/public/slow?s=0.3") as resp:
        assert resp.status == 200
    assert delta(buckets, route="public", le="0.25") == 0
    for le in ("0.5", "1.0", "+Inf"):
        assert delta(buckets, route="public", le=le) == 1
    assert 0.3 <= delta("gateway_request_duration_seconds_sum", route="public") < 0.5


async def test_upstream_failures_are_counted_by_reason(make_gateway, tmp_path):
    """Two ways an upstream fails after accepting the connection: too slow to answer, and
    cutting its body short of the announced Content-Length."""

    async def short_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        if request.startswith(b"GET /public/slow"):
            await reader.read()  # never answers: until the gateway gives up and hangs up
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(short_body, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        document = ops_config(url, tmp_path)
        document["upstreams"]["app"]["read_timeout"] = 0.3
        client = await make_gateway(document)
        errors = "gateway_upstream_errors_total"
        reasons = ("read_timeout", "upstream_aborted")
        delta = Deltas(*((errors, {"upstream": "app", "reason": r}) for r in reasons))
        async with client.get("/public/slow") as resp:
            assert resp.status == 504
        assert delta(errors, upstream="app", reason="read_timeout") == 1
        with pytest.raises(aiohttp.ClientPayloadError):
            async with client.get("/public/short") as resp:
                await resp.read()
        assert delta(errors, upstream="app", reason="upstream_aborted") == 1
    finally:
        server.close()
        await server.wait_closed()
