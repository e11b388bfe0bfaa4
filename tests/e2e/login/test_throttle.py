"""Login throttling through the real login endpoint: per username, per client IP, across replicas.

Every refused attempt must look like a wrong password (one generic 401), even with the right
password. ``X-Forwarded-For`` is only believed with ``trusted_proxies`` covering the test
client (127.0.0.1); tests that want per-user counting spread attempts over several addresses.
"""

from __future__ import annotations

from prometheus_client import REGISTRY

from tests.configs import session_config
from tests.e2e.login.login_harness import (
    LOOPBACK,
    Browser,
    login_config,
)

MAX_FAILURES, WINDOW_S, LOCKOUT_S = 3, 300, 900
THROTTLE = {"max_failures": MAX_FAILURES, "window": WINDOW_S, "lockout": LOCKOUT_S}
FAILURE = {"error": "invalid_credentials", "message": "Invalid username or password."}


def _from(client, ip: str) -> Browser:
    return Browser(client, headers={"X-Forwarded-For": ip})


async def _gateway(make_gateway, upstream, session=None, **server):
    settings = login_config(
        upstream.url, session or session_config("memory"), throttle=THROTTLE, **server
    )
    return await make_gateway(settings)


def _refused(reply) -> None:
    assert reply.status == 401
    assert reply.json() == FAILURE
    assert reply.cookie() is None


async def test_after_max_failures_the_right_password_gets_the_same_401(upstream, make_gateway):
    client = await _gateway(make_gateway, upstream, trusted_proxies=LOOPBACK)
    for n in range(MAX_FAILURES):
        _refused(await _from(client, f"192.0.2.{n + 1}").json_login("alice", "guess"))
    # from a fresh address (its IP is clean): alice herself is locked
    _refused(await _from(client, "192.0.2.99").json_login("alice"))
    form = await _from(client, "192.0.2.98").form_login("alice")
    assert form.status == 401
    assert form.page.errors == ["Invalid username or password."]
    # other users from that address are not affected
    assert (await _from(client, "192.0.2.99").json_login("bob")).status == 200


def _verifications() -> float:
    return REGISTRY.get_sample_value("gateway_password_verifications_total") or 0.0


async def test_a_locked_out_attempt_costs_no_password_hash(upstream, make_gateway):
    client = await _gateway(make_gateway, upstream, trusted_proxies=LOOPBACK)
    before = _verifications()
    for n in range(MAX_FAILURES):
        _refused(await _from(client, f"192.0.2.{n + 1}").json_login("alice", "guess"))
    assert _verifications() - before == MAX_FAILURES  # each failure was a real verification
    for n in range(5):  # a storm against the locked account: refused, and no CPU spent on it
        _refused(await _from(client, f"198.51.100.{n + 1}").json_login("alice"))
    assert _verifications() - before == MAX_FAILURES


async def test_the_username_lock_ignores_letter_case(upstream, make_gateway):
    client = await _gateway(make_gateway, upstream, trusted_proxies=LOOPBACK)
    for n, spelling in enumerate(["Alice", "ALICE", "alice"]):
        _refused(await _from(client, f"192.0.2.{n + 1}").json_login(spelling, "guess"))
    _refused(await _from(client, "192.0.2.99").json_login("alice"))


async def test_a_success_before_the_limit_resets_the_users_counter(upstream, make_gateway):
    client = await _gateway(make_gateway, upstream, trusted_proxies=LOOPBACK)
    ips = iter(f"192.0.2.{n}" for n in range(1, 50))
    for _ in range(MAX_FAILURES - 1):
        _refused(await _from(client, next(ips)).json_login("alice", "typo"))
    assert (await _from(client, next(ips)).json_login("alice")).status == 200
    for _ in range(MAX_FAILURES - 1):
        _refused(await _from(client, next(ips)).json_login("alice", "typo"))
    # 4 failures in all, but never max_failures in a row: not locked
    assert (await _from(client, next(ips)).json_login("alice")).status == 200


async def test_failures_across_usernames_lock_the_client_ip(upstream, make_gateway):
    client = await _gateway(make_gateway, upstream)
    person = Browser(client)
    for username in ("bob", "carol", "nobody"):
        _refused(await person.json_login(username, "guess"))
    # a valid user with the right password, from that IP: refused the same way
    _refused(await person.json_login("dave"))
    _refused(await person.json_login("alice"))


async def test_a_success_does_not_reset_the_ip_counter(upstream, make_gateway):
    client = await _gateway(make_gateway, upstream)
    person = Browser(client)
    _refused(await person.json_login("bob", "guess"))
    _refused(await person.json_login("carol", "guess"))
    # one valid account must not launder guesses at others
    assert (await person.json_login("dave")).status == 200
    _refused(await person.json_login("bob", "guess"))
    _refused(await person.json_login("dave"))


async def test_behind_a_trusted_proxy_the_forwarded_client_ip_is_counted(upstream, make_gateway):
    client = await _gateway(make_gateway, upstream, trusted_proxies=LOOPBACK)
    attacker = _from(client, "203.0.113.66")
    for username in ("bob", "carol", "nobody"):
        _refused(await attacker.json_login(username, "guess"))
    _refused(await attacker.json_login("alice"))
    # another client behind the same proxy is independent
    assert (await _from(client, "203.0.113.7").json_login("alice")).status == 200
    # and so is the proxy's own address
    assert (await Browser(client).json_login("alice")).status == 200


async def test_an_ipv6_client_is_counted_by_its_64_prefix(upstream, make_gateway):
    # One host usually holds a whole /64: counting single addresses would give it 2^64 tries.
    client = await _gateway(make_gateway, upstream, trusted_proxies=LOOPBACK)
    for n, username in enumerate(("bob", "carol", "nobody"), start=1):
        _refused(await _from(client, f"2001:db8:1:2::{n}").json_login(username, "guess"))
    _refused(await _from(client, "2001:db8:1:2:ffff:ffff:ffff:ffff").json_login("alice"))
    # The next /64 is another network.
    assert (await _from(client, "2001:db8:1:3::1").json_login("alice")).status == 200


async def test_without_trusted_proxies_a_spoofed_forwarded_for_does_not_escape_the_ip_lock(
    upstream, make_gateway
):
    client = await _gateway(make_gateway, upstream)
    for n, username in enumerate(("bob", "carol", "nobody")):
        _refused(await _from(client, f"203.0.113.{n + 1}").json_login(username, "guess"))
    _refused(await _from(client, "203.0.113.200").json_login("alice"))
    _refused(await Browser(client).json_login("alice"))


async def test_the_lockout_ends_after_its_duration(upstream, make_gateway, clock):
    client = await _gateway(make_gateway, upstream)
    person = Browser(client)
    for _ in range(MAX_FAILURES):
        _refused(await person.json_login("alice", "guess"))
    clock.advance(LOCKOUT_S - 1)
    _refused(await person.json_login("alice"))
    clock.advance(2)
    assert (await person.json_login("alice")).status == 200


async def test_failures_outside_the_window_do_not_add_up(upstream, make_gateway, clock):
    client = await _gateway(make_gateway, upstream)
    person = Browser(client)
    for _ in range(MAX_FAILURES - 1):
        _refused(await person.json_login("alice", "guess"))
    clock.advance(WINDOW_S + 1)
    _refused(await person.json_login("alice", "guess"))
    assert (await person.json_login("alice")).status == 200


async def test_redis_replicas_share_the_user_lockout(
    upstream, make_gateway, redis_url, redis_prefix
):
    session = session_config("redis", redis_url=redis_url, redis_prefix=redis_prefix)
    replica_a = await _gateway(make_gateway, upstream, session, trusted_proxies=LOOPBACK)
    replica_b = await _gateway(make_gateway, upstream, session, trusted_proxies=LOOPBACK)
    for n in range(MAX_FAILURES):
        _refused(await _from(replica_a, f"192.0.2.{n + 1}").json_login("alice", "guess"))
    _refused(await _from(replica_b, "192.0.2.77").json_login("alice"))
    bob = _from(replica_b, "192.0.2.77")
    assert (await bob.json_login("bob")).status == 200
    # the session lives in Redis too: replica A knows bob
    bob.client = replica_a
    assert (await bob.userinfo()).json()["user"]["username"] == "bob"


async def test_redis_replicas_share_the_ip_lockout(upstream, make_gateway, redis_url, redis_prefix):
    session = session_config("redis", redis_url=redis_url, redis_prefix=redis_prefix)
    replica_a = await _gateway(make_gateway, upstream, session, trusted_proxies=LOOPBACK)
    replica_b = await _gateway(make_gateway, upstream, session, trusted_proxies=LOOPBACK)
    for username in ("bob", "carol", "nobody"):
        _refused(await _from(replica_a, "203.0.113.5").json_login(username, "guess"))
    _refused(await _from(replica_b, "203.0.113.5").json_login("alice"))
    assert (await _from(replica_b, "203.0.113.6").json_login("alice")).status == 200
