"""Done when: one mint per (session, audience) per token lifetime, as the metrics show.

Deltas are read from the process-global Prometheus registry (``gateway_tokens_minted_total``,
``gateway_token_cache_hits_total``); the upstream's record shows which token it actually got.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.login.login_harness import JSON, LOGOUT
from tests.e2e.upstream_identity.identity_harness import (
    Counters,
    KeyFile,
    claims_of,
    identity_config,
    login,
    with_route_token,
)
from tests.upstreams import Upstream

N = 20


async def gateway(make_gateway: Any, recorder: Upstream, tmp_path: Path, key: KeyFile) -> Any:
    return await make_gateway(identity_config(recorder.url, tmp_path, [key.setting]))


async def test_repeated_requests_of_one_session_mint_once(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    alice = await login(client)
    counters = Counters()
    for index in range(N):
        assert (await alice.get(f"/members/{index}")).status == 200
    assert counters.minted == 1
    assert counters.hits == N - 1
    tokens = [seen.bearer for seen in recorder.received]
    assert len(tokens) == N and len(set(tokens)) == 1
    assert claims_of(tokens[0])["sub"] == "alice"


async def test_a_second_audience_mints_one_more_token(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    alice = await login(client)
    assert (await alice.get("/members/x")).status == 200
    counters = Counters()
    for index in range(5):
        assert (await alice.get(f"/admin/{index}")).status == 200
        assert (await alice.get(f"/members/{index}")).status == 200
    assert (counters.minted, counters.hits) == (1, 9)
    members, admin = recorder.received[0].bearer, recorder.received[1].bearer
    assert members != admin
    assert claims_of(members)["aud"] == "app" and claims_of(admin)["aud"] == "admin-ui"
    assert {seen.bearer for seen in recorder.received[1::2]} == {admin}
    assert {seen.bearer for seen in recorder.received[0::2]} == {members}


async def test_a_second_session_of_the_same_user_mints_its_own_token(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    first = await login(client)
    assert (await first.get("/members/x")).status == 200
    second = await login(client)  # another login: another session
    counters = Counters()
    assert (await second.get("/members/x")).status == 200
    assert (await second.get("/members/y")).status == 200
    assert (await first.get("/members/z")).status == 200
    assert (counters.minted, counters.hits) == (1, 2)
    a, b, b_again, a_again = (seen.bearer for seen in recorder.received)
    assert a != b and b == b_again and a == a_again
    assert claims_of(a)["sid"] != claims_of(b)["sid"]


async def test_logout_drops_the_sessions_tokens_and_the_next_login_mints_afresh(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile
) -> None:
    client = await gateway(make_gateway, recorder, tmp_path, ed_key)
    cache = client.gateway.holder.current.tokens.cache
    other = await login(client, "bob")
    assert (await other.get("/members/x")).status == 200
    alice = await login(client)
    assert (await alice.get("/members/x")).status == 200
    assert (await alice.get("/admin/x")).status == 200
    before = recorder.received[-2].bearer
    assert len(cache) == 3

    logout = await alice.post(LOGOUT, json={}, accept=JSON)
    assert logout.status == 204
    assert len(cache) == 1  # alice's two tokens are gone; bob's session keeps its own

    again = await login(client)
    counters = Counters()
    assert (await again.get("/members/x")).status == 200
    assert (counters.minted, counters.hits) == (1, 0)
    after = recorder.last.bearer
    assert after != before
    assert claims_of(after)["jti"] != claims_of(before)["jti"]
    assert claims_of(after)["sid"] != claims_of(before)["sid"]


async def test_a_token_is_renewed_once_four_fifths_of_its_lifetime_have_passed(
    tmp_path: Path, recorder: Upstream, make_gateway: Any, ed_key: KeyFile, clock: Any
) -> None:
    document = identity_config(recorder.url, tmp_path, [ed_key.setting])
    client = await make_gateway(with_route_token(document, "members", {"ttl": 5}))
    alice = await login(client)
    counters = Counters()

    assert (await alice.get("/members/1")).status == 200
    first = recorder.last.bearer
    assert claims_of(first)["iat"] == int(clock.now)
    assert claims_of(first)["exp"] == int(clock.now) + 5

    clock.advance(3.9)  # 1.1 s of 5 left: more than a fifth, still served from the cache
    assert (await alice.get("/members/2")).status == 200
    assert recorder.last.bearer == first
    assert (counters.minted, counters.hits) == (1, 1)

    clock.advance(0.2)  # 0.9 s left: less than a fifth, renewed before the upstream could see
    assert (await alice.get("/members/3")).status == 200
    renewed = recorder.last.bearer
    assert renewed != first
    assert (counters.minted, counters.hits) == (2, 1)
    assert claims_of(renewed)["iat"] == int(clock.now)
    assert claims_of(renewed)["exp"] == claims_of(renewed)["iat"] + 5

    assert (await alice.get("/members/4")).status == 200
    assert recorder.last.bearer == renewed
    assert (counters.minted, counters.hits) == (2, 2)
