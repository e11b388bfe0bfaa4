"""Attacks on the login endpoints found in review: concurrent guessing, hostile JSON."""

from __future__ import annotations

import asyncio

import pytest

from gateway.passwords import hash_password
from tests.e2e.login.login_harness import JSON, LOGIN, Browser, login_config
from tests.support import wait_for

THROTTLE = {"max_failures": 3, "window": 300, "lockout": 900}
PASSWORD = "correct horse battery"
# Real cost (about 0.1 s a check): slow enough that concurrent guesses overlap.
SLOW_ALICE = {"username": "alice", "password_hash": hash_password(PASSWORD), "roles": ["admin"]}


async def test_a_burst_of_concurrent_guesses_meets_the_lockout(
    upstream, make_gateway, backend, caplog
):
    client = await make_gateway(
        login_config(upstream.url, backend(), users=[SLOW_ALICE], throttle=THROTTLE)
    )
    burst = [
        asyncio.ensure_future(Browser(client).json_login("alice", f"guess-{n}")) for n in range(12)
    ]

    # The right password comes once the burst has taken every attempt the throttle allows (a
    # guess was refused as locked out), while the burst is still in flight. Concurrent requests
    # reach the gateway in no set order: only what it logged tells when that is.
    def locked_out() -> bool:
        return any(getattr(r, "reason", None) == "locked_out" for r in caplog.records)

    await wait_for(locked_out, what="a guess refused as locked out")
    right = asyncio.ensure_future(Browser(client).json_login("alice", PASSWORD))
    replies = await asyncio.gather(*burst, right)
    assert [reply.status for reply in replies] == [401] * len(replies)
    assert all(reply.cookie() is None for reply in replies)
    # and the lockout holds afterwards too
    assert (await Browser(client).json_login("alice", PASSWORD)).status == 401


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"[" * 5000, "application/json"),
        (b'{"username": "\\ud800", "password": "x"}', "application/json"),
        (b'{"username": "alice", "password": "\\udfff"}', "application/json"),
        (b"\xff\xfe{", "application/json"),
    ],
    ids=["deeply-nested", "lone-surrogate-username", "lone-surrogate-password", "not-utf8"],
)
async def test_hostile_json_is_a_400_not_a_crash(
    upstream, make_gateway, backend, body, content_type
):
    client = await make_gateway(login_config(upstream.url, backend()))
    for path in (LOGIN, "/.gateway/token"):
        resp = await client.post(
            path, data=body, headers={"Content-Type": content_type, "Accept": JSON}
        )
        if path == LOGIN:
            assert resp.status == 400
            assert (await resp.json())["error"] == "bad_request"
        else:
            assert resp.status == 404  # api tokens are off here: never a 500
