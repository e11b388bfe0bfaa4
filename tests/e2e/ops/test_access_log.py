"""The access log (logger ``gateway.access``): one line per request, json / text / off, and
never a secret, neither there nor in any other log line the gateway writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from datetime import datetime

import aiohttp
import pytest

from tests.configs import route
from tests.e2e.login.login_harness import COOKIE, HTML, JSON, LOGOUT, LOOPBACK, Browser
from tests.e2e.ops.ops_harness import (
    Deltas,
    access_entries,
    access_lines,
    everything_logged,
    ops_config,
    ops_routes,
)
from tests.redis_support import free_port as closed_port
from tests.support import raw_request, wait_for

FIELDS = {
    "time",
    "request_id",
    "client_ip",
    "method",
    "path",
    "status",
    "bytes",
    "duration_ms",
    "route",
    "upstream",
    "user",
    "outcome",
}
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
JWT = (
    "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJtYWxsb3J5IiwiaWF0IjoxNzAwMDAwMDAwfQ."
    "c2lnbmF0dXJlLXRoYXQtbG9va3MtcmVhbC1lbm91Z2gtMTIzNDU2Nzg5MA"
)
TEXT_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO gateway\.access: "
    r'(?P<client_ip>\S+) (?P<user>\S+) "(?P<method>\S+) (?P<path>\S+)" (?P<status>\d{3}) '
    r"(?P<bytes>\d+) (?P<duration>\d+\.\d{3})ms route=(?P<route>\S+) upstream=(?P<upstream>\S+) "
    r"rid=(?P<rid>\S+) outcome=(?P<outcome>\S+)"
)


async def test_json_lines_carry_every_field_with_the_right_values(
    upstream, make_gateway, tmp_path, all_logs
):
    client = await make_gateway(ops_config(upstream.url, tmp_path, access_log="json"))
    browser = Browser(client)
    assert (await browser.json_login("alice")).status == 200
    all_logs.clear()
    started = time.time()

    page = await browser.get("/members/sized?n=1234&page=2&sort=name", accept=JSON)
    assert page.status == 200 and len(page.body) == 1234
    anonymous = await Browser(client).get("/public/slow?s=0.2", accept=JSON)
    assert anonymous.status == 200

    first, second = access_entries(all_logs.records)
    assert set(first) == FIELDS
    assert first["path"] == "/members/sized?n=1234&page=2&sort=name"
    assert first["method"] == "GET"
    assert first["status"] == 200
    assert isinstance(first["bytes"], int)  # its value: test_bytes_is_the_length_of_the_body_sent
    assert first["route"] == "members" and first["upstream"] == "app"
    assert first["user"] == "alice"
    assert first["client_ip"] == "127.0.0.1"
    assert first["request_id"] == upstream.received[0].value("X-Request-ID")
    assert REQUEST_ID.fullmatch(first["request_id"])
    logged_at = datetime.strptime(first["time"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
    assert started - 2 <= logged_at <= time.time() + 1
    assert isinstance(first["duration_ms"], float) and 0 <= first["duration_ms"] < 10_000
    assert 200 <= second["duration_ms"] < 10_000  # the upstream took 0.2s: milliseconds

    assert second["user"] == "-"
    assert second["route"] == "public"
    assert second["request_id"] == upstream.received[1].value("X-Request-ID")
    assert second["request_id"] != first["request_id"]


async def test_one_line_per_request_whatever_its_outcome(
    upstream, make_gateway, tmp_path, all_logs
):
    client = await make_gateway(ops_config(upstream.url, tmp_path, access_log="json"))
    expected = [
        ("GET", "/public/a", 200, "public", "app"),
        ("POST", "/public/b", 200, "public", "app"),
        ("GET", "/members/c", 401, "members", "app"),
        ("GET", "/no/such/route", 404, "-", "-"),
        ("GET", "/.gateway/healthz", 200, "gateway", "-"),
        ("GET", "/.gateway/nothing-here", 404, "gateway", "-"),
        ("GET", "/a/%2F/b", 400, "-", "-"),
    ]
    for method, path, status, _, _ in expected:
        async with client.request(method, path, headers={"Accept": JSON}) as resp:
            assert resp.status == status, path
    entries = access_entries(all_logs.records)
    assert [
        (e["method"], e["path"], e["status"], e["route"], e["upstream"]) for e in entries
    ] == expected
    assert len({e["request_id"] for e in entries}) == len(expected)


@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_bytes_is_the_length_of_the_body_sent(
    upstream, make_gateway, tmp_path, all_logs, log_format
):
    """What the client got as a body, whoever produced it: proxied with a Content-Length,
    proxied as a chunked stream, or the gateway's own answer (here a JSON 404)."""
    client = await make_gateway(ops_config(upstream.url, tmp_path, access_log=log_format))
    sizes = []
    for path in ("/public/sized?n=1234", "/public/download?s=0.1&chunks=3", "/nowhere"):
        async with client.get(path, headers={"Accept": JSON}) as resp:
            sizes.append(len(await resp.read()))
    assert sizes[0] == 1234 and sizes[1] == 3 * 64 * 1024 and sizes[2] > 0
    lines = access_lines(all_logs.records)
    if log_format == "json":
        logged = [json.loads(line)["bytes"] for line in lines]
    else:
        logged = [int(TEXT_LINE.fullmatch(line)["bytes"]) for line in lines]  # type: ignore[index]
    assert logged == sizes


async def test_a_trusted_proxys_request_id_is_logged_and_forwarded(
    upstream, make_gateway, tmp_path, all_logs
):
    document = ops_config(upstream.url, tmp_path, access_log="json", trusted_proxies=LOOPBACK)
    client = await make_gateway(document)
    async with client.get(
        "/public/x", headers={"X-Request-ID": "edge-42.a_b", "X-Forwarded-For": "203.0.113.9"}
    ) as resp:
        assert resp.status == 200
    (entry,) = access_entries(all_logs.records)
    assert entry["request_id"] == "edge-42.a_b" == upstream.last.value("X-Request-ID")
    assert entry["client_ip"] == "203.0.113.9"


async def test_text_format(upstream, make_gateway, tmp_path, all_logs):
    client = await make_gateway(ops_config(upstream.url, tmp_path, access_log="text"))
    browser = Browser(client)
    assert (await browser.json_login("bob")).status == 200
    all_logs.clear()
    reply = await browser.get("/members/sized?n=321&token=hunter2-token&page=3", accept=JSON)
    assert reply.status == 200
    (line,) = access_lines(all_logs.records)
    match = TEXT_LINE.fullmatch(line)
    assert match, line
    assert match["client_ip"] == "127.0.0.1"
    assert match["user"] == "bob"
    assert (match["method"], match["status"]) == ("GET", "200")
    assert match["path"] == "/members/sized?n=321&token=REDACTED&page=3"
    assert (match["route"], match["upstream"]) == ("members", "app")
    assert match["rid"] == upstream.last.value("X-Request-ID")
    assert "hunter2-token" not in everything_logged(all_logs.records)


async def test_access_log_off_writes_no_access_line_but_still_counts(
    upstream, make_gateway, tmp_path, all_logs
):
    client = await make_gateway(ops_config(upstream.url, tmp_path, access_log="off"))
    watched = ("gateway_requests_total", {"route": "public", "method": "GET", "code": "200"})
    delta = Deltas(watched)
    for _ in range(3):
        async with client.get("/public/x") as resp:
            assert resp.status == 200
    async with client.get("/nowhere") as resp:
        assert resp.status == 404
    assert access_lines(all_logs.records) == []
    assert [r for r in all_logs.records if r.name.startswith("gateway.access")] == []
    assert delta(*watched) == 3


RANDOM_40 = secrets.token_urlsafe(30)  # 40 characters


@pytest.mark.parametrize(
    ("query", "logged", "secret"),
    [
        ("token=abc", "token=REDACTED", "abc"),
        ("password=x", "password=REDACTED", None),
        ("code=SplxlOBeZQQYbYS6WxSbIA&state=xyz", "code=REDACTED&state=REDACTED", "SplxlOBe"),
        (
            "pw=a1&pass=b2&passwd=c3&pwd=d4",
            "pw=REDACTED&pass=REDACTED&passwd=REDACTED&pwd=REDACTED",
            None,
        ),
        (
            "apikey=k&api_key=k2&session=s&sig=x",
            "apikey=REDACTED&api_key=REDACTED&session=REDACTED&sig=REDACTED",
            None,
        ),
        (
            "my_secret_value=x&refresh_token=y&new_password=z&Password=w",
            "my_secret_value=REDACTED&refresh_token=REDACTED&new_password=REDACTED&Password=REDACTED",
            None,
        ),
        ("passenger=2&stately=yes", "passenger=2&stately=yes", None),
        # found attacking the gateway: secrets nested in other values, structured names
        ("rd=/reset?token=eyJhbGci", "rd=REDACTED", "eyJhbGci"),
        (
            "redirect_uri=https%3A%2F%2Fapp%2Fcb%3Fcode%3DSplxlOBeZQQYbYS6WxSbIA",
            "redirect_uri=REDACTED",
            "SplxlOBe",
        ),
        ("next=/y%3Fpassword%3Dhunter2", "next=REDACTED", "hunter2"),
        ("user%5Bpass%5D=hunter2", "user%5Bpass%5D=REDACTED", "hunter2"),
        ("next=/a%3Fpage%3D2&q=a=b", "next=/a%3Fpage%3D2&q=a=b", None),
        ("q=" + JWT, "q=REDACTED", JWT[:30]),
        pytest.param("ref=" + RANDOM_40, "ref=REDACTED", RANDOM_40, id="random-40-characters"),
        ("page=2&sort=name", "page=2&sort=name", None),
        (
            "page=2&access_token=abc.def&sort=name",
            "page=2&access_token=REDACTED&sort=name",
            "abc.def",
        ),
        ("API_KEY=k123&X-Amz-Signature=s456", "API_KEY=REDACTED&X-Amz-Signature=REDACTED", "k123"),
        # the query is logged as sent; the key is recognised decoded
        ("%74oken=encoded-secret", "%74oken=REDACTED", "encoded-secret"),
        ("x=1;token=abc", "x=1;token=REDACTED", "abc"),
        (JWT, "REDACTED", JWT[:30]),
    ],
)
async def test_secret_looking_query_values_are_redacted(
    upstream, make_gateway, tmp_path, all_logs, query, logged, secret
):
    client = await make_gateway(ops_config(upstream.url, tmp_path, access_log="json"))
    status, _, _ = await raw_request(client.port, f"/public/x?{query}")  # sent byte for byte
    assert status == 200
    assert upstream.last.raw_path == f"/public/x?{query}"  # the upstream gets it untouched
    (entry,) = access_entries(all_logs.records)
    assert entry["path"] == f"/public/x?{logged}"
    if secret is not None:
        assert secret not in everything_logged(all_logs.records)


async def test_secret_path_parameters_are_redacted(upstream, make_gateway, tmp_path, all_logs):
    client = await make_gateway(ops_config(upstream.url, tmp_path, access_log="json"))
    status, _, _ = await raw_request(client.port, "/public/x;jsessionid=8F3A12CD/y;v=1?a=1")
    assert status == 200
    [entry] = access_entries(all_logs.records)
    assert entry["path"] == "/public/x;jsessionid=REDACTED/y;v=1?a=1"
    assert "8F3A12CD" not in everything_logged(all_logs.records)


async def test_no_secret_is_ever_logged(upstream, make_gateway, tmp_path, all_logs):
    """Session cookie, password (right or wrong), CSRF token, the JWT the upstream received and
    a client's own Authorization value: in no record of any logger at any level."""
    document = ops_config(
        upstream.url,
        tmp_path,
        access_log="json",
        throttle={"max_failures": 2, "window": 300, "lockout": 900},
    )
    client = await make_gateway(document)
    browser = Browser(client)
    wrong_password = "Wr0ng-" + secrets.token_hex(8)
    failed = await browser.form_login("alice", wrong_password)
    assert failed.status == 401
    login_page = await browser.login_page()
    csrf = login_page.page.field("csrf")
    signed_in = await browser.submit_login("alice", csrf=csrf, rd="/members/home")
    assert signed_in.status == 303
    session = browser.session
    assert session is not None

    assert (await browser.get("/members/home", accept=HTML)).status == 200
    upstream_jwt = upstream.last.value("Authorization")
    assert upstream_jwt is not None and upstream_jwt.startswith("Bearer ")
    jwt = upstream_jwt.removeprefix("Bearer ")

    basic = "Basic " + secrets.token_urlsafe(18)
    assert (await Browser(client).get("/public/x", headers={"Authorization": basic})).status == 200
    bogus_bearer = "Bearer " + JWT
    api = await Browser(client).get("/api/x", accept=JSON, headers={"Authorization": bogus_bearer})
    assert api.status == 401
    garbage_bearer = "Bearer " + secrets.token_urlsafe(24)
    api = await Browser(client).get(
        "/api/y", accept=JSON, headers={"Authorization": garbage_bearer}
    )
    assert api.status == 401
    forged_cookie = secrets.token_urlsafe(32)
    forged = await Browser(client, cookies={COOKIE: forged_cookie}).get("/members/x", accept=JSON)
    assert forged.status == 401
    # Locked out (two failures): the third attempt with the right password is refused too.
    assert (await Browser(client).json_login("bob", wrong_password)).status == 401
    locked = await Browser(client).json_login("bob")
    assert locked.status == 401
    assert (await browser.post(LOGOUT, json={}, accept=JSON)).status == 204

    logged = everything_logged(all_logs.records)
    assert len(access_lines(all_logs.records)) >= 10
    assert "login_ok" in logged and "bad_credentials" in logged  # the app log did speak
    for name, value in {
        "session cookie": session,
        "password": "alice-correct-horse",
        "bob's password": "bob-battery-staple",
        "wrong password": wrong_password,
        "CSRF token": csrf,
        "JWT sent upstream": jwt,
        "JWT signature": jwt.rpartition(".")[2],
        "client Basic credentials": basic.removeprefix("Basic "),
        "client bearer": JWT,
        "garbage bearer": garbage_bearer.removeprefix("Bearer "),
        "forged session cookie": forged_cookie,
    }.items():
        assert value not in logged, f"{name} appears in the log"


async def test_error_lines_carry_a_stable_reason(upstream, make_gateway, tmp_path, all_logs):
    routes = (*ops_routes(), route("dead", prefix="/dead", upstream="dead"))
    document = ops_config(upstream.url, tmp_path, routes=routes)
    document["upstreams"]["dead"] = {
        **document["upstreams"]["app"],
        "url": f"http://127.0.0.1:{closed_port()}",
    }
    client = await make_gateway(document)
    for path, status in (("/dead/x", 502), ("/nowhere", 404), ("/members/x", 401)):
        async with client.get(path, headers={"Accept": JSON}) as resp:
            assert resp.status == status
    reasons = [
        (r.levelname, getattr(r, "reason", None))
        for r in all_logs.records
        if r.name.startswith("gateway") and r.name != "gateway.access"
    ]
    assert ("WARNING", "connect_failed") in reasons
    assert ("WARNING", "no_route") in reasons
    entries = access_entries(all_logs.records)
    assert [e["upstream"] for e in entries] == ["dead", "-", "app"]


async def test_an_upstream_speaking_garbage_does_not_put_secrets_in_the_log(
    make_gateway, tmp_path, all_logs
):
    """A broken upstream's error is logged with its detail: the request it was sent (the JWT,
    the query) must not be part of that detail."""
    received: list[bytes] = []

    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 abc not-a-status\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(broken, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        client = await make_gateway(
            ops_config(f"http://127.0.0.1:{port}", tmp_path, access_log="json")
        )
        browser = Browser(client)
        assert (await browser.json_login("alice")).status == 200
        secret = secrets.token_hex(4)  # short: only its key says it is secret
        reply = await browser.get(f"/members/x?token={secret}", accept=JSON)
        assert reply.status == 502
    finally:
        server.close()
        await server.wait_closed()
    head = received[-1].decode("latin-1")
    jwt = re.search(r"(?im)^Authorization: Bearer (\S+)\r$", head)
    assert jwt is not None, head
    logged = everything_logged(all_logs.records)
    refused = [r for r in all_logs.records if r.name == "gateway" and r.levelno >= logging.WARNING]
    assert [getattr(r, "reason", None) for r in refused] == ["bad_response"]
    assert jwt[1] not in logged, "the JWT sent upstream appears in the log"
    assert secret not in logged, "a secret query value appears in the log"
    assert browser.session is not None and browser.session not in logged


async def test_a_response_the_upstream_cut_short_is_logged_as_such(
    make_gateway, tmp_path, all_logs
):
    """The head (200) went out, then the upstream died: the line says 200 was sent, how many
    body bytes, and that the upstream aborted (not a plain 200)."""

    async def dying(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 300)
        await writer.drain()
        writer.transport.abort()

    server = await asyncio.start_server(dying, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        client = await make_gateway(
            ops_config(f"http://127.0.0.1:{port}", tmp_path, access_log="json")
        )
        with contextlib.suppress(aiohttp.ClientPayloadError):
            async with client.get("/public/download") as resp:
                assert resp.status == 200
                await resp.read()
    finally:
        server.close()
        await server.wait_closed()
    [entry] = access_entries(all_logs.records)
    assert (entry["status"], entry["bytes"], entry["outcome"]) == (200, 300, "upstream_aborted")


async def test_a_client_gone_mid_download_is_logged_as_such(
    upstream, make_gateway, tmp_path, all_logs
):
    client = await make_gateway(ops_config(upstream.url, tmp_path, access_log="json"))
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"GET /public/download?s=3&chunks=60 HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    await writer.drain()
    await reader.readexactly(1000)  # the head and a first chunk arrived...
    writer.transport.abort()  # ...and the client is gone
    [entry] = await wait_for(lambda: access_entries(all_logs.records), what="the access line")
    assert entry["status"] == 200
    assert entry["outcome"] == "client_aborted"
    assert 0 < entry["bytes"] < 60 * 65536
