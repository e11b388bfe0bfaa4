"""The token cache and the Tokens facade: reuse until a fifth of the lifetime remains, bounds,
logout, reload, and the minted / cache-hit counters."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import time_machine
from prometheus_client import REGISTRY

from gateway.config.settings import SigningKeySettings
from gateway.tokens import InvalidBearer, TokenCache, Tokens, load_keyset
from gateway.tokens.verify import VerifiedBearers
from tests.tokens.token_helpers import (
    ISSUER,
    NOW,
    key_file,
    keyset_of,
    payload_of,
    session,
    token_settings,
    user,
)

T0 = int(NOW)


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


class Counters:
    """Deltas of the two token counters since construction."""

    def __init__(self) -> None:
        self.minted0 = counter("gateway_tokens_minted_total")
        self.hits0 = counter("gateway_token_cache_hits_total")

    @property
    def minted(self) -> float:
        return counter("gateway_tokens_minted_total") - self.minted0

    @property
    def hits(self) -> float:
        return counter("gateway_token_cache_hits_total") - self.hits0


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    return Tokens(keyset_of(tmp_path, "EdDSA"), token_settings())


# --- TokenCache ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "hit"),
    [
        (T0, True),
        (T0 + 0.5, True),
        (T0 + 47.9, True),  # 12.1 s of 60 remain: more than a fifth
        (T0 + 48, False),  # exactly a fifth remains
        (T0 + 59, False),
        (T0 + 60, False),  # expired
        (T0 - 1, False),  # clock went backwards: the token is not yet valid
    ],
    ids=[
        "issued",
        "half-second",
        "just-over-a-fifth-left",
        "a-fifth-left",
        "almost-expired",
        "expired",
        "before-iat",
    ],
)
def test_cached_token_is_served_while_more_than_a_fifth_of_its_lifetime_remains(
    now: float, hit: bool
) -> None:
    cache = TokenCache()
    cache.put(("s", "app"), "token", issued_at=T0, expires_at=T0 + 60)
    assert cache.get(("s", "app"), now) == ("token" if hit else None)


def test_stale_entries_are_removed_on_lookup() -> None:
    cache = TokenCache()
    cache.put(("s", "app"), "token", issued_at=T0, expires_at=T0 + 10)
    assert cache.get(("s", "app"), T0 + 9) is None
    assert len(cache) == 0
    assert cache.drop_session("s") == 0


def test_a_different_stamp_is_a_miss() -> None:
    cache = TokenCache()
    cache.put(("s", "app"), "token", issued_at=T0, expires_at=T0 + 60, stamp=("admin",))
    assert cache.get(("s", "app"), T0, stamp=("admin",)) == "token"
    assert cache.get(("s", "app"), T0, stamp=()) is None


def test_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    cache = TokenCache(max_entries=2)
    cache.put(("a", "app"), "A", issued_at=T0, expires_at=T0 + 60)
    cache.put(("b", "app"), "B", issued_at=T0, expires_at=T0 + 60)
    assert cache.get(("a", "app"), T0) == "A"  # a is now the most recently used
    cache.put(("c", "app"), "C", issued_at=T0, expires_at=T0 + 60)
    assert len(cache) == 2
    assert cache.get(("b", "app"), T0) is None
    assert cache.get(("a", "app"), T0) == "A"
    assert cache.get(("c", "app"), T0) == "C"
    assert cache.drop_session("b") == 0  # the evicted entry left the session index too


def test_drop_session_forgets_only_that_sessions_tokens() -> None:
    cache = TokenCache()
    for audience in ("app", "admin-ui", "api"):
        cache.put(("s1", audience), f"s1-{audience}", issued_at=T0, expires_at=T0 + 60)
    cache.put(("s2", "app"), "s2-app", issued_at=T0, expires_at=T0 + 60)
    assert cache.drop_session("s1") == 3
    assert len(cache) == 1
    assert cache.get(("s1", "app"), T0) is None
    assert cache.get(("s2", "app"), T0) == "s2-app"
    assert cache.drop_session("s1") == 0


def test_clear_empties_the_cache() -> None:
    cache = TokenCache()
    cache.put(("s", "app"), "token", issued_at=T0, expires_at=T0 + 60)
    cache.clear()
    assert len(cache) == 0 and cache.get(("s", "app"), T0) is None
    assert cache.drop_session("s") == 0


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TokenCache(max_entries=0)


# --- Tokens: cache + minter + counters -------------------------------------------------------


def test_repeated_requests_mint_once_per_session_and_audience(tokens: Tokens) -> None:
    counters = Counters()
    first = tokens.upstream_token(user(), session(), audience="app", ttl_s=60, now=NOW)
    for step in range(20):
        again = tokens.upstream_token(user(), session(), audience="app", ttl_s=60, now=NOW + step)
        assert again == first
    assert (counters.minted, counters.hits) == (1, 20)


def test_a_new_token_is_minted_when_a_fifth_of_the_lifetime_remains(tokens: Tokens) -> None:
    counters = Counters()
    first = tokens.upstream_token(user(), session(), audience="app", ttl_s=60, now=NOW)
    assert tokens.upstream_token(user(), session(), audience="app", ttl_s=60, now=NOW + 47) == first
    renewed = tokens.upstream_token(user(), session(), audience="app", ttl_s=60, now=NOW + 48)
    assert renewed != first
    assert payload_of(renewed)["iat"] == T0 + 48
    assert (counters.minted, counters.hits) == (2, 1)


def test_each_audience_gets_its_own_token(tokens: Tokens) -> None:
    counters = Counters()
    app = tokens.upstream_token(user(), session(), audience="app", ttl_s=60, now=NOW)
    admin = tokens.upstream_token(user(), session(), audience="admin-ui", ttl_s=30, now=NOW)
    assert app != admin
    assert (payload_of(app)["aud"], payload_of(admin)["aud"]) == ("app", "admin-ui")
    assert counters.minted == 2


def test_each_session_gets_its_own_token(tokens: Tokens) -> None:
    one = tokens.upstream_token(user(), session("01" * 32), audience="app", ttl_s=60, now=NOW)
    two = tokens.upstream_token(user(), session("02" * 32), audience="app", ttl_s=60, now=NOW)
    assert payload_of(one)["sid"] != payload_of(two)["sid"]


def test_logout_drops_the_sessions_tokens(tokens: Tokens) -> None:
    first = tokens.upstream_token(user(), session(), audience="app", ttl_s=60, now=NOW)
    assert tokens.drop_session(session().sid_hash) == 1
    counters = Counters()
    assert tokens.upstream_token(user(), session(), audience="app", ttl_s=60, now=NOW) != first
    assert counters.minted == 1


def test_changed_roles_are_not_served_from_an_old_token(tokens: Tokens) -> None:
    before = tokens.upstream_token(user(), session(), audience="app", ttl_s=60, now=NOW)
    demoted = user(roles=frozenset({"editor"}))
    after = tokens.upstream_token(demoted, session(), audience="app", ttl_s=60, now=NOW + 1)
    assert after != before
    assert payload_of(after)["roles"] == ["editor"]


def test_a_reload_with_the_same_keys_keeps_the_cache(tmp_path: Path, tokens: Tokens) -> None:
    first = tokens.upstream_token(user(), session(), audience="app", ttl_s=60, now=NOW)
    reloaded = tokens.successor(tokens.keyset, token_settings())
    assert reloaded.cache is tokens.cache
    assert reloaded.upstream_token(user(), session(), audience="app", ttl_s=60, now=NOW) == first


def test_a_reload_with_a_new_signing_key_drops_the_cache(tmp_path: Path) -> None:
    old = key_file(tmp_path, "EdDSA", "old.pem")
    new = key_file(tmp_path, "ES256", "new.pem")
    tokens = Tokens(
        load_keyset(token_settings(SigningKeySettings(file=old)), tmp_path), token_settings()
    )
    first = tokens.upstream_token(user(), session(), audience="app", ttl_s=60, now=NOW)
    rotated = load_keyset(
        token_settings(SigningKeySettings(file=new), SigningKeySettings(file=old)), tmp_path
    )
    reloaded = tokens.successor(rotated, token_settings())
    assert len(reloaded.cache) == 0
    # the old object, still serving in-flight requests, is left as it was
    assert len(tokens.cache) == 1
    renewed = reloaded.upstream_token(user(), session(), audience="app", ttl_s=60, now=NOW)
    assert renewed != first
    assert renewed.split(".")[0] != first.split(".")[0]
    assert reloaded.jwks_json == rotated.jwks_json


def test_a_reload_with_new_claims_drops_the_cache(tokens: Tokens) -> None:
    tokens.upstream_token(user(), session(), audience="app", ttl_s=60, now=NOW)
    reloaded = tokens.successor(tokens.keyset, token_settings(claims=()))
    assert len(reloaded.cache) == 0
    fresh = reloaded.upstream_token(user(), session(), audience="app", ttl_s=60, now=NOW)
    assert "roles" not in payload_of(fresh)


def test_api_tokens_are_counted_and_verify(tokens: Tokens) -> None:
    counters = Counters()
    settings = dataclasses.replace(tokens.settings, issuer=ISSUER)
    tokens = tokens.successor(tokens.keyset, settings)
    token, expires_in = tokens.api_token(user(), now=NOW)
    assert counters.minted == 1 and expires_in == 3600
    with time_machine.travel(NOW + 1, tick=False) as clock:
        claims = tokens.verify_bearer(token)
        assert claims.subject == "alice"
        upstream = tokens.upstream_token(user(), claims, audience="app", ttl_s=60, now=NOW + 1)
        assert payload_of(upstream)["sid"] != payload_of(token)["jti"]
        again = tokens.upstream_token(user(), claims, audience="app", ttl_s=60, now=NOW + 2)
        assert again == upstream
        clock.shift(3600)  # one second past the API token's exp
        with pytest.raises(InvalidBearer) as refused:
            tokens.verify_bearer(token)
        assert refused.value.reason == "bearer_expired"


def test_a_verified_bearer_is_taken_from_memory_until_it_expires(tokens: Tokens) -> None:
    settings = dataclasses.replace(tokens.settings, issuer=ISSUER)
    tokens = tokens.successor(tokens.keyset, settings)
    token, _ = tokens.api_token(user(), now=NOW)
    with time_machine.travel(NOW + 1, tick=False) as clock:
        first = tokens.verify_bearer(token)
        assert len(tokens.bearers) == 1
        assert tokens.verify_bearer(token) is first  # not verified (nor decoded) again
        clock.shift(3598)  # the last second of its life: still served
        assert tokens.verify_bearer(token) is first
        clock.shift(1)
        with pytest.raises(InvalidBearer):
            tokens.verify_bearer(token)
        assert len(tokens.bearers) == 0


def test_a_refused_bearer_is_never_kept(tokens: Tokens) -> None:
    settings = dataclasses.replace(tokens.settings, issuer=ISSUER)
    tokens = tokens.successor(tokens.keyset, settings)
    token, _ = tokens.api_token(user(), now=NOW)
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    with time_machine.travel(NOW + 1, tick=False):
        for _ in range(2):
            with pytest.raises(InvalidBearer):
                tokens.verify_bearer(forged)
        assert len(tokens.bearers) == 0
        tokens.verify_bearer(token)
        with pytest.raises(InvalidBearer):  # a kept genuine token does not vouch for a forgery
            tokens.verify_bearer(forged)


def test_a_new_signing_key_forgets_verified_bearers(tokens: Tokens, tmp_path: Path) -> None:
    settings = dataclasses.replace(tokens.settings, issuer=ISSUER)
    tokens = tokens.successor(tokens.keyset, settings)
    token, _ = tokens.api_token(user(), now=NOW)
    with time_machine.travel(NOW + 1, tick=False):
        tokens.verify_bearer(token)
        new = key_file(tmp_path, "ES256", "new.pem")
        rotated = tokens.successor(
            load_keyset(token_settings(SigningKeySettings(file=new)), tmp_path), settings
        )
        assert len(rotated.bearers) == 0
        with pytest.raises(InvalidBearer):  # signed by a key the gateway no longer has
            rotated.verify_bearer(token)
        assert len(tokens.successor(tokens.keyset, settings).bearers) == 1  # same key: kept


def test_verified_bearers_are_bounded_least_recently_used_first_out(tokens: Tokens) -> None:
    settings = dataclasses.replace(tokens.settings, issuer=ISSUER)
    kept = VerifiedBearers(max_entries=3)
    tokens = Tokens(tokens.keyset, settings, bearers=kept)
    issued = [tokens.api_token(user(), now=NOW + i)[0] for i in range(4)]
    with time_machine.travel(NOW + 10, tick=False):
        claims = [tokens.verify_bearer(t) for t in issued[:3]]
        assert tokens.verify_bearer(issued[0]) is claims[0]  # now the most recently used
        tokens.verify_bearer(issued[3])  # the fourth pushes out the least recently used
        assert len(kept) == 3
        assert tokens.verify_bearer(issued[0]) is claims[0]
        assert tokens.verify_bearer(issued[1]) is not claims[1]  # verified afresh
