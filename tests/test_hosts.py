"""One Host grammar: what a request's Host may be, what a route's match.host may be, and what a
configured host may be agree (underscores included)."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, load_settings_from_text
from gateway.hosts import HostPattern, is_host_name, split_host, valid_host

CONFIG = """
server: {{listen: "127.0.0.1:8080", public_url: "http://{public}", data_dir: /tmp/gw-hosts}}
session: {{backend: memory}}
upstreams: {{app: {{url: "http://{upstream}:8081"}}}}
routes:
  - {{name: r, match: {{host: "{host}", path_prefix: /}}, upstream: app, access: public}}
"""


def configured(host: str, *, public: str = "gw.example.com", upstream: str = "app") -> None:
    load_settings_from_text(CONFIG.format(host=host, public=public, upstream=upstream))


@pytest.mark.parametrize(
    "host",
    [
        "app.example.com",
        "app.example.com:8443",
        "my_app",
        "my_app:8080",
        "10.0.0.1:80",
        "[::1]",
        "[2001:db8::1]:8443",
        "a.example.com.",
        "A.Example.COM",
        "x" * 63,
    ],
)
def test_valid_hosts(host: str) -> None:
    assert valid_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "",
        "a..b",
        "admin.example.com:abc",
        "a, b",
        "a b",
        "-a.example.com",
        "a-.example.com",
        "a.example.com:99999",
        "a/b",
        "a@b",
        "[::1",
        "[zz::1]",
        "[::1]:x",
        "x" * 64,
        "a\tb",
        "example.com:",
        "*.example.com",
        "a" * 300,
    ],
)
def test_malformed_hosts(host: str) -> None:
    assert not valid_host(host)


def test_split_host() -> None:
    assert split_host("Admin.Example.COM.:8443") == ("admin.example.com", 8443)
    assert split_host("[::1]:80") == ("[::1]", 80)
    assert split_host("example.com:") == ("example.com", None)
    assert split_host("my_app") == ("my_app", None)


def test_a_route_pattern_takes_what_a_request_may_send() -> None:
    # The same names are valid in a route and in a Host header: a route for a Compose service
    # name with an underscore is both accepted and matched.
    pattern = HostPattern.parse("My_App:8080")
    assert str(pattern) == "my_app:8080"
    assert valid_host("my_app:8080")
    assert pattern.matches(*split_host("MY_APP:8080"))
    configured("my_app:8080")


@pytest.mark.parametrize(
    "pattern", ["a..b", "*.*.example.com", "*", "a.example.com:99999", "a b", "[::1]", "a/b"]
)
def test_malformed_route_patterns_are_refused_by_the_loader(pattern: str) -> None:
    with pytest.raises(ValueError):
        HostPattern.parse(pattern)
    with pytest.raises(ConfigError, match=r"routes\[0\]\.match\.host"):
        configured(pattern)


def test_wildcards_take_exactly_one_label() -> None:
    pattern = HostPattern.parse("*.example.com")
    assert pattern.matches("a.example.com", None)
    assert not pattern.matches("example.com", None)
    assert not pattern.matches("a.b.example.com", None)
    assert pattern.covers(HostPattern.parse("*.example.com:8443"))
    assert not HostPattern.parse("*.example.com:8443").covers(pattern)


def test_configured_hosts_use_the_same_names() -> None:
    assert is_host_name("my_app")
    assert is_host_name("::1")
    assert not is_host_name("a..b")
    configured("x.example.com", public="my_gateway:8080", upstream="my_app")
    with pytest.raises(ConfigError, match=r"upstreams\.app\.url"):
        configured("x.example.com", upstream="a..b")
