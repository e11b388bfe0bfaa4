"""Client resolution through trusted proxies (gateway.forwarded)."""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import warnings
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway.config.settings import IPNetwork
from gateway.forwarded import new_request_id, parse_hop, resolve_client

HEX32 = re.compile(r"[0-9a-f]{32}")
TRUSTED: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("fd00::/8"),
)
PEER = ("10.0.0.1", 40000)
OUTSIDE = ("203.0.113.9", 40000)


def request(
    headers: list[tuple[str, str]] | None = None,
    *,
    peer: Any = PEER,
    secure: bool = False,
    transport: bool = True,
) -> web.Request:
    sslcontext = ssl.create_default_context() if secure else None
    if transport:
        extra = {"peername": peer, "sockname": ("10.9.9.9", 8080), "sslcontext": sslcontext}
        tr = mock.Mock()
        tr.get_extra_info.side_effect = lambda name, default=None: extra.get(name, default)
    else:
        tr = None
    protocol = mock.Mock()
    protocol.transport = tr
    protocol.peername = peer
    protocol.ssl_context = sslcontext
    return make_mocked_request(
        "GET",
        "/",
        headers=CIMultiDict(headers or [("Host", "app.example.com")]),
        transport=tr,
        protocol=protocol,
        sslcontext=sslcontext,
    )


def test_untrusted_peer_claims_are_all_ignored() -> None:
    """SECURITY: a spoofed chain from an untrusted peer is not believed."""
    req = request(
        [
            ("Host", "app.example.com"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Request-ID", "chosen-by-client"),
        ],
        peer=OUTSIDE,
    )
    client = resolve_client(req, TRUSTED)
    assert client.ip == "203.0.113.9"
    assert client.forwarded_for == "203.0.113.9"
    assert client.proto == "http"
    assert client.host == "app.example.com"
    assert HEX32.fullmatch(client.request_id)


def test_no_trusted_proxies_means_nobody_is_believed() -> None:
    req = request([("Host", "h"), ("X-Forwarded-For", "1.2.3.4")], peer=PEER)
    client = resolve_client(req, ())
    assert client.ip == "10.0.0.1"
    assert client.forwarded_for == "10.0.0.1"


def test_untrusted_secure_connection_is_https() -> None:
    client = resolve_client(request(peer=OUTSIDE, secure=True), TRUSTED)
    assert client.proto == "https"


@pytest.mark.parametrize(
    ("xff", "ip", "forwarded_for"),
    [
        (["1.2.3.4"], "1.2.3.4", "1.2.3.4, 10.0.0.1"),
        (["1.2.3.4, 10.0.0.2"], "1.2.3.4", "1.2.3.4, 10.0.0.2, 10.0.0.1"),
        (["6.6.6.6, 1.2.3.4, 10.0.0.2"], "1.2.3.4", "6.6.6.6, 1.2.3.4, 10.0.0.2, 10.0.0.1"),
        (["10.0.0.3, 10.0.0.2"], "10.0.0.3", "10.0.0.3, 10.0.0.2, 10.0.0.1"),
        (["6.6.6.6", "1.2.3.4"], "1.2.3.4", "6.6.6.6, 1.2.3.4, 10.0.0.1"),
        (["1.2.3.4, garbage, 10.0.0.2"], "10.0.0.2", "1.2.3.4, garbage, 10.0.0.2, 10.0.0.1"),
        (["1.2.3.4, garbage"], "10.0.0.1", "1.2.3.4, garbage, 10.0.0.1"),
        (["1.2.3.4:5678"], "1.2.3.4", "1.2.3.4:5678, 10.0.0.1"),
        (["[2001:db8::1]:443"], "2001:db8::1", "[2001:db8::1]:443, 10.0.0.1"),
        (["2001:db8::1"], "2001:db8::1", "2001:db8::1, 10.0.0.1"),
        (["::ffff:1.2.3.4"], "1.2.3.4", "::ffff:1.2.3.4, 10.0.0.1"),
        (["unknown"], "10.0.0.1", "unknown, 10.0.0.1"),
        ([" , ,1.2.3.4 ,"], "1.2.3.4", "1.2.3.4, 10.0.0.1"),
        ([], "10.0.0.1", "10.0.0.1"),
    ],
    ids=[
        "one-hop",
        "trusted-hop-skipped",
        "client-injected-left-ignored",
        "all-trusted-leftmost",
        "repeated-headers-joined",
        "malformed-stops-walk",
        "malformed-next-to-peer",
        "ipv4-port",
        "ipv6-bracketed-port",
        "ipv6",
        "v4-mapped",
        "unknown-token",
        "empty-items",
        "no-header",
    ],
)
def test_trusted_peer_chain(xff: list[str], ip: str, forwarded_for: str) -> None:
    headers = [("Host", "h")] + [("X-Forwarded-For", v) for v in xff]
    client = resolve_client(request(headers), TRUSTED)
    assert client.ip == ip
    assert client.forwarded_for == forwarded_for


@pytest.mark.parametrize(
    ("values", "secure", "expected"),
    [
        (["https"], False, "https"),
        (["HTTPS"], False, "https"),
        (["http"], True, "http"),
        (["http, https"], False, "https"),
        (["https", "http"], False, "http"),
        (["ftp"], False, "http"),
        (["ftp"], True, "https"),
        ([], True, "https"),
    ],
)
def test_trusted_proto(values: list[str], secure: bool, expected: str) -> None:
    headers = [("Host", "h")] + [("X-Forwarded-Proto", v) for v in values]
    assert resolve_client(request(headers, secure=secure), TRUSTED).proto == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("app.example.com", "app.example.com"),
        ("app.example.com:8443", "app.example.com:8443"),
        ("[2001:db8::1]:8443", "[2001:db8::1]:8443"),
        ("a.example, b.example", "b.example"),
        ("evil.example/path", "h.internal"),
        ("evil.example@x", "h.internal"),
        ("", "h.internal"),
        (None, "h.internal"),
    ],
)
def test_trusted_host(value: str | None, expected: str) -> None:
    headers = [("Host", "h.internal")]
    if value is not None:
        headers.append(("X-Forwarded-Host", value))
    assert resolve_client(request(headers), TRUSTED).host == expected


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("abc-123_DEF.456", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("has space", False),
        ("<script>", False),
        ("a,b", False),
        ("", False),
    ],
)
def test_trusted_request_id(value: str, kept: bool) -> None:
    client = resolve_client(request([("Host", "h"), ("X-Request-ID", value)]), TRUSTED)
    if kept:
        assert client.request_id == value
    else:
        assert client.request_id != value and HEX32.fullmatch(client.request_id)


def test_request_ids_are_unique() -> None:
    ids = {resolve_client(request(peer=OUTSIDE), TRUSTED).request_id for _ in range(100)}
    assert len(ids) == 100


def test_v4_mapped_peer_is_matched_against_v4_networks() -> None:
    req = request(
        [("Host", "h"), ("X-Forwarded-For", "1.2.3.4")], peer=("::ffff:10.0.0.1", 1, 0, 0)
    )
    client = resolve_client(req, TRUSTED)
    assert client.ip == "1.2.3.4"
    assert client.forwarded_for == "1.2.3.4, 10.0.0.1"


def test_ipv6_peer_in_trusted_network() -> None:
    req = request([("Host", "h"), ("X-Forwarded-For", "1.2.3.4")], peer=("fd00::5", 1, 0, 0))
    assert resolve_client(req, TRUSTED).ip == "1.2.3.4"


@pytest.mark.parametrize("peer", ["", "/run/gateway.sock", None])
def test_non_ip_peer_is_unknown_and_untrusted(peer: Any) -> None:
    req = request([("Host", "h"), ("X-Forwarded-For", "1.2.3.4")], peer=peer)
    client = resolve_client(req, TRUSTED)
    assert client.ip == "unknown"
    assert client.forwarded_for == "unknown"


def test_closed_transport_is_unknown() -> None:
    client = resolve_client(request([("Host", "h")], transport=False), TRUSTED)
    assert client.ip == "unknown"


@pytest.mark.parametrize(
    ("hop", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("1.2.3.4:80", "1.2.3.4"),
        ("[::1]:80", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("1.2.3.4:http", None),
        ("[::1]x", None),
        ("[1.2.3.4]:80", "1.2.3.4"),
        ("example.com", None),
        ("1.2.3.256", None),
        ("", None),
    ],
)
def test_parse_hop(hop: str, expected: str | None) -> None:
    addr = parse_hop(hop)
    assert (str(addr) if addr is not None else None) == expected


def test_a_forked_worker_draws_request_ids_of_its_own() -> None:
    # Workers are forked from one supervisor: the id prefix chosen before the fork must not
    # be shared, or two workers would hand out the same ids.
    parent = [new_request_id() for _ in range(3)]
    read, write = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() beside threads; the child only writes and exits.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report its ids and leave at once
        os.write(write, " ".join(new_request_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    assert all(HEX32.fullmatch(i) for i in parent + child)
    assert not set(parent) & set(child)
    assert {i[:16] for i in child}.isdisjoint({i[:16] for i in parent})
