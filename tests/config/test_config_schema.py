"""Validation rules: every problem reported at once, each with its YAML path and the rule broken."""

import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.bundle import build
from gateway.config import ConfigError, Settings, load_settings_from_text
from gateway.passwords import hash_password

# A real hash with the default parameters: other hashes draw a warning (their logins take
# another time than an unknown user's).
HASH = hash_password("alice-pw")
DELETE = object()


def config(changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """A valid configuration with ``changes`` applied: ``{"routes[0].access": "public"}``."""
    document: dict[str, Any] = {
        "server": {"public_url": "http://127.0.0.1:8080"},
        "users": {"inline": [{"username": "alice", "password_hash": HASH}]},
        "upstreams": {"app": {"url": "http://127.0.0.1:9000"}},
        "routes": [
            {
                "name": "all",
                "match": {"path_prefix": "/"},
                "upstream": "app",
                "access": "authenticated",
            },
        ],
    }
    for dotted, value in (changes or {}).items():
        steps: list[Any] = [
            int(step[1:-1]) if step.startswith("[") else step
            for step in re.findall(r"\[\d+\]|[^.\[\]]+", dotted)
        ]
        node: Any = document
        for step in steps[:-1]:
            node = node.setdefault(step, {}) if isinstance(step, str) else node[step]
        if value is DELETE:
            del node[steps[-1]]
        elif isinstance(node, list) and steps[-1] == len(node):
            node.append(value)
        else:
            node[steps[-1]] = value
    return document


def load(changes: dict[str, Any] | None = None) -> Settings:
    """Through the whole loader: the users and keys the configuration names are checked too."""
    text = yaml.safe_dump(config(changes), sort_keys=False)
    return build(load_settings_from_text(text, env={})).settings


def problems(changes: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(changes)
    return [str(issue) for issue in info.value.issues]


def test_baseline_is_valid_and_quiet() -> None:
    assert load().warnings == ()


# --- unknown keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"serverr": {}}, "serverr: unknown key (did you mean 'server'?)"),
        ({"server.listn": ":8080"}, "server.listn: unknown key (did you mean 'listen'?)"),
        ({"server.Workers": 2}, "server.Workers: unknown key (did you mean 'workers'?)"),
        ({"routes[0].acess": "public"}, "routes[0].acess: unknown key (did you mean 'access'?)"),
        (
            {"routes[0].match.path_prefx": "/a"},
            "routes[0].match.path_prefx: unknown key (did you mean 'path_prefix'?)",
        ),
        (
            {"upstreams.app.urll": "http://x"},
            "upstreams.app.urll: unknown key (did you mean 'url'?)",
        ),
        (
            {"session.redis.pasword": "x"},
            "session.redis.pasword: unknown key (did you mean 'password'?)",
        ),
        (
            {"tokens.api_tokens.enable": True},
            "tokens.api_tokens.enable: unknown key (did you mean 'enabled'?)",
        ),
        (
            {"login.throttle.zzz": 1},
            "login.throttle.zzz: unknown key; allowed keys: max_failures, window, lockout",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_unknown_keys_get_a_hint(changes: dict[str, Any], expected: str) -> None:
    assert problems(changes) == [expected]


# --- wrong types and rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"routes[0].access": {"roles": "admin"}},
            'routes[0].access.roles: expected a list of role names, got "admin"',
        ),
        (
            {"routes[0].access": {"users": ["alice", 7]}},
            "routes[0].access.users[1]: expected a string, got 7",
        ),
        (
            {"routes[0].access": {"roles": []}},
            'routes[0].access: needs at least one role or user (use "deny" to let nobody in)',
        ),
        (
            {"routes[0].access": "admin"},
            'routes[0].access: expected "public", "authenticated", "deny" or {roles: [...], '
            'users: [...]}, got "admin"',
        ),
        (
            {"routes[0].access": "publc"},
            'routes[0].access: expected "public", "authenticated", "deny" or {roles: [...], '
            "users: [...]}, got \"publc\" (did you mean 'public'?)",
        ),
        (
            {"routes[0].access": DELETE},
            'routes[0].access: required: "public", "authenticated", "deny" or {roles: [...], '
            "users: [...]}",
        ),
        ({"server.workers": True}, "server.workers: expected a whole number, got true"),
        ({"server.workers": 0}, "server.workers: must be at least 1, got 0"),
        ({"server.workers": 1.5}, "server.workers: expected a whole number, got 1.5"),
        ({"routes[0].websocket": "yes"}, 'routes[0].websocket: expected true or false, got "yes"'),
        ({"routes[0].accept_bearer": 1}, "routes[0].accept_bearer: expected true or false, got 1"),
        (
            {"server.access_log": "xml"},
            'server.access_log: expected "json", "text" or "off", got "xml"',
        ),
        ({"server.shutdown_grace": "10 sec"}, 'server.shutdown_grace: invalid duration "10 sec"'),
        ({"routes[0].max_body": "10 megs"}, 'routes[0].max_body: invalid size "10 megs"'),
        (
            {"server": "localhost"},
            "server: expected a mapping with keys listen, public_url, admin_listen, "
            "trusted_proxies, workers, shutdown_grace, data_dir, access_log, timeouts; "
            'got "localhost"',
        ),
        ({"routes": {"name": "all"}}, "routes: expected a list of routes, got a mapping"),
        (
            {"routes[0].match": "/api"},
            "routes[0].match: expected a mapping with keys host, path, path_prefix, path_regex, "
            'methods, ignore_case; got "/api"',
        ),
        (
            {"routes[1]": "everything"},
            "routes[1]: expected a mapping with keys name, match, upstream, access, token, ",
        ),
        (
            {"tokens.signing_keys": ["keys/current.pem"]},
            "tokens.signing_keys[0]: expected a mapping with keys file, hmac_secret_file, kid; "
            'got "keys/current.pem"',
        ),
        (
            {"session.cookie": "secret", "session.backend": "cookie"},
            'session.cookie: expected a mapping with keys secret_file; got "secret"',
        ),
        (
            {"server.trusted_proxies": "10.0.0.0/8"},
            "server.trusted_proxies: expected a list of IP addresses or CIDR networks, "
            'got "10.0.0.0/8"',
        ),
        (
            {"server.trusted_proxies": ["10.0.0.0/8", "10.0.0.0/33"]},
            "server.trusted_proxies[1]: expected an IP address or CIDR network "
            '(e.g. "10.0.0.0/8"), got "10.0.0.0/33"',
        ),
        (
            {"routes[0].match.methods": "GET"},
            'routes[0].match.methods: expected a list of HTTP methods, got "GET"',
        ),
        (
            {"routes[0].match.methods": []},
            "routes[0].match.methods: must not be empty; leave methods out to match every method",
        ),
        (
            {"login.throttle.max_failures": 0},
            "login.throttle.max_failures: must be at least 1, got 0",
        ),
        ({"login.title": ""}, "login.title: must not be empty"),
        (
            {"users.inline[0].roles": "admin"},
            'users.inline[0].roles: user "alice": expected a list of role names, got "admin"',
        ),
        (
            {"users.inline[0].password_hash": DELETE},
            'users.inline[0].password_hash: user "alice": required: create one with '
            "`gateway hash-password`",
        ),
        (
            {"users.inline[0].email": "alice"},
            'users.inline[0].email: user "alice": expected an email address, got "alice"',
        ),
        (
            {"upstreams.app.max_connections": 0},
            "upstreams.app.max_connections: must be at least 1, got 0",
        ),
        (
            {"upstreams.app.connect_timeout": "0s"},
            "upstreams.app.connect_timeout: must be longer than zero",
        ),
    ],
    ids=lambda value: value.split(":")[0] if isinstance(value, str) else "",
)
def test_wrong_values_name_path_rule_and_value(changes: dict[str, Any], expected: str) -> None:
    [problem] = problems(changes)
    assert problem.startswith(expected)


def test_off_is_accepted_although_yaml_reads_it_as_false() -> None:
    text = yaml.safe_dump(config()).replace("server:\n", "server:\n  access_log: off\n")
    assert load_settings_from_text(text, env={}).server.access_log == "off"


def test_five_mistakes_give_exactly_five_errors_each_with_its_path() -> None:
    issues = problems(
        {
            "server.workers": 0,
            "session.same_sit": "lax",
            "upstreams.app.url": "ftp://files",
            "routes[0].upstream": "nowhere",
            "routes[0].match.path_regex": "^/x",
        }
    )
    # In file order; session comes last in this generated document, a route's match before its
    # upstream.
    assert [problem.split(":")[0] for problem in issues] == [
        "server.workers",
        "upstreams.app.url",
        "routes[0].match",
        "routes[0].upstream",
        "session.same_sit",
    ]


# --- routes ----------------------------------------------------------------------------------


def two_routes(**second: Any) -> dict[str, Any]:
    route = {
        "name": "api",
        "match": {"path_prefix": "/api"},
        "upstream": "app",
        "access": "authenticated",
        **second,
    }
    return {"routes[1]": route, "routes[0].match": {"path": "/"}}


def test_undefined_upstream_lists_known_ones() -> None:
    assert problems({"upstreams.api": {"url": "http://api:1"}, "routes[0].upstream": "ap"}) == [
        "routes[0].upstream: unknown upstream \"ap\" (did you mean 'app'?); "
        "defined upstreams: api, app"
    ]


def test_duplicate_route_names() -> None:
    assert problems(two_routes(name="all")) == [
        'routes[1].name: duplicate route name "all", already at routes[0]'
    ]


def test_bad_regex_shows_the_re_error() -> None:
    assert problems({"routes[0].match": {"path_regex": "/api/(v1"}}) == [
        'routes[0].match.path_regex: invalid regular expression "/api/(v1": '
        "missing ), unterminated subpattern at position 5"
    ]


@pytest.mark.parametrize(
    ("match", "found"),
    [
        ({"path": "/a", "path_prefix": "/a"}, "path, path_prefix"),
        ({"path": "/a", "path_prefix": "/a", "path_regex": "/a"}, "path, path_prefix, path_regex"),
        ({"methods": ["GET"]}, "none"),
        ({}, "none"),
    ],
)
def test_exactly_one_path_rule(match: dict[str, Any], found: str) -> None:
    assert problems({"routes[0].match": match}) == [
        f"routes[0].match: needs exactly one of path, path_prefix or path_regex; got {found}"
    ]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("path_prefix", "admin", 'must start with "/", got "admin"'),
        ("path", "/a/../../etc", "not a valid path: path climbs above /"),
        ("path", "/a?b=1", "not a valid path: character '?' not allowed in a path"),
        ("path_prefix", "/a%2Fb", "not a valid path: encoded slash or backslash in path"),
    ],
)
def test_paths_follow_request_path_rules(key: str, value: str, expected: str) -> None:
    [problem] = problems({"routes[0].match": {key: value}})
    assert problem.startswith(f"routes[0].match.{key}: {expected}")


def test_match_is_normalised() -> None:
    route = load(
        {
            "routes[0].match": {
                "host": "*.Example.COM",
                "path_prefix": "/",
                "methods": ["get", "Post"],
                "ignore_case": True,
            }
        }
    ).routes[0]
    assert route.match.host == "*.example.com"
    assert route.match.methods == frozenset({"GET", "POST"})
    assert route.match.ignore_case is True


@pytest.mark.parametrize("host", ["a.*.example.com", "exa mple.com", "*.", "http://x.com"])
def test_bad_hosts(host: str) -> None:
    [problem] = problems({"routes[0].match.host": host})
    assert problem.startswith('routes[0].match.host: expected a host such as "app.example.com"')


@pytest.mark.parametrize(
    ("prefix", "error"),
    [
        ("/api", None),
        ("/", None),
        ("/api/", 'must not end with "/" (write "/api", not "/api/"), got "/api/"'),
        ("api", 'must start with "/", got "api"'),
    ],
)
def test_strip_prefix(prefix: str, error: str | None) -> None:
    if error is None:
        assert load({"routes[0].strip_prefix": prefix}).routes[0].strip_prefix == prefix
    else:
        assert problems({"routes[0].strip_prefix": prefix}) == [f"routes[0].strip_prefix: {error}"]


def test_route_options_are_read() -> None:
    route = load(
        {
            "routes[0]": {
                "name": "api",
                "match": {"path_regex": "/api/v[0-9]+/.*"},
                "upstream": "app",
                "access": {"roles": ["admin"], "users": ["bob"]},
                "token": {"audience": "api", "ttl": "30s"},
                "accept_bearer": True,
                "unauthenticated": "status",
                "identity_headers": True,
                "strip_prefix": "/api",
                "max_body": "10MiB",
                "websocket": True,
            }
        }
    ).routes[0]
    assert (route.access.kind, route.access.roles, route.access.users) == (
        "rules",
        frozenset({"admin"}),
        frozenset({"bob"}),
    )
    assert (route.token.audience, route.token.ttl_s) == ("api", 30.0)
    assert (route.accept_bearer, route.websocket) == (True, True)
    assert route.identity_headers == (
        ("X-Auth-User", "sub"),
        ("X-Auth-Email", "email"),
        ("X-Auth-Roles", "roles"),
    )
    assert (route.unauthenticated, route.max_body_bytes) == ("status", 10 * 1024 * 1024)


def test_identity_headers_may_name_the_headers_a_legacy_app_reads() -> None:
    route = load(
        {
            "routes[0].identity_headers": {
                "X-WEBAUTH-USER": "sub",
                "Remote-User": "sub",
                "X-Email": "email",
                "X-Name": "name",
                "X-Groups": "roles",
            }
        }
    ).routes[0]
    assert route.identity_headers == (
        ("X-WEBAUTH-USER", "sub"),
        ("Remote-User", "sub"),
        ("X-Email", "email"),
        ("X-Name", "name"),
        ("X-Groups", "roles"),
    )
    assert load({"routes[0].identity_headers": False}).routes[0].identity_headers == ()


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        (
            {"Remote-User": "username"},
            "routes[0].identity_headers.Remote-User: expected one of sub, email, name, roles, "
            'got "username"',
        ),
        (
            {"Authorization": "sub"},
            'routes[0].identity_headers.Authorization: "Authorization" is managed by HTTP or the '
            "gateway",
        ),
        ({"Bad Header": "sub"}, "routes[0].identity_headers.Bad Header: expected an HTTP token"),
        ({}, "routes[0].identity_headers: expected true, false, or a mapping"),
        ("yes", "routes[0].identity_headers: expected true or false"),
    ],
    ids=["unknown-claim", "reserved-header", "not-a-token", "empty", "a-string"],
)
def test_identity_header_mistakes_are_named(mapping: Any, expected: str) -> None:
    [problem] = problems({"routes[0].identity_headers": mapping})
    assert problem.startswith(expected), problem


@pytest.mark.parametrize("word", ["public", "authenticated", "deny"])
def test_access_words(word: str) -> None:
    access = load({"routes[0].access": word}).routes[0].access
    assert (access.kind, access.roles, access.users) == (word, frozenset(), frozenset())


def test_at_least_one_route_and_upstream() -> None:
    assert problems({"routes": [], "upstreams": {}}) == [
        "upstreams: expected a mapping of upstream names to settings, e.g. app: "
        '{url: "http://127.0.0.1:9000"}; got none',
        "routes: at least one route is required; first match wins, in file order",
    ]


# --- server ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("0.0.0.0:8080", "0.0.0.0", 8080),
        (":8080", "0.0.0.0", 8080),
        ("[::1]:8080", "::1", 8080),
        ("localhost:9000", "localhost", 9000),
    ],
)
def test_listen_addresses(listen: str, host: str, port: int) -> None:
    server = load({"server.listen": listen}).server
    assert (server.listen_host, server.listen_port) == (host, port)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("8080", 'expected "host:port"'),
        ("::1:8080", 'put an IPv6 address in brackets, e.g. "[::1]:8080"'),
        ("host:http", "the port must be a number from 0 to 65535"),
        ("host:70000", "the port must be a number from 0 to 65535"),
        ("[nope]:1", "[nope] is not an IPv6 address"),
    ],
)
def test_bad_listen_addresses(listen: str, expected: str) -> None:
    [problem] = problems({"server.listen": listen})
    assert problem.startswith("server.listen: ") and expected in problem


def test_admin_listen_and_trusted_proxies() -> None:
    server = load(
        {"server.admin_listen": "127.0.0.1:9090", "server.trusted_proxies": ["10.1.2.3/8", "::1"]}
    ).server
    assert server.admin_listen == ("127.0.0.1", 9090)
    assert server.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert problems({"server.admin_listen": "127.0.0.1:8080", "server.listen": ":8080"}) == [
        "server.admin_listen: must use another port than server.listen (8080)"
    ]
    two_interfaces = {"server.admin_listen": "127.0.0.1:8080", "server.listen": "10.0.0.1:8080"}
    assert load(two_interfaces).server.admin_listen == ("127.0.0.1", 8080)


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("https://App.Example.com/", "https://app.example.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("HTTPS://[::1]:8443", "https://[::1]:8443"),
    ],
)
def test_public_url_is_stored_as_an_origin(url: str, stored: str) -> None:
    assert load({"server.public_url": url}).server.public_url == stored


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("app.example.com", "expected an http:// or https:// URL"),
        ("ftp://app.example.com", "expected an http:// or https:// URL"),
        ("https://app.example.com/app", "expected an origin (scheme://host[:port]) without a path"),
        ("https://app.example.com/?x=1", "must not have a query (?) or fragment (#)"),
        ("https://user:pw@app.example.com", "must not contain credentials"),
        ("https://", "the URL needs a valid host"),
    ],
)
def test_bad_public_urls(url: str, expected: str) -> None:
    [problem] = problems({"server.public_url": url})
    assert problem.startswith("server.public_url: ") and expected in problem


def test_public_url_is_required() -> None:
    assert problems({"server": DELETE}) == [
        'server.public_url: required: the origin users reach, e.g. "https://app.example.com"'
    ]


def test_url_credentials_are_refused_without_echoing_them() -> None:
    assert problems({"upstreams.app.url": "http://svc:hunter2@backend:9000"}) == [
        "upstreams.app.url: the URL must not contain credentials (user:password@)"
    ]


def test_upstream_urls_keep_their_path_without_trailing_slash() -> None:
    upstream = load({"upstreams.app.url": "HTTP://Backend:9000/base/"}).upstreams["app"]
    assert upstream.url == "http://backend:9000/base"
    assert upstream.name == "app"
    [problem] = problems({"upstreams.app.url": "http://backend/x?y=1"})
    assert problem.startswith("upstreams.app.url: ") and "must not have a query" in problem


# --- session ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("public_url", "cookie_name"),
    [("https://app.example.com", "__Host-gw_session"), ("http://127.0.0.1:8080", "gw_session")],
)
def test_default_cookie_name_follows_the_scheme(public_url: str, cookie_name: str) -> None:
    settings = load({"server.public_url": public_url})
    assert settings.session.cookie_name == cookie_name
    assert settings.tokens.issuer == public_url  # the issuer defaults to public_url too


@pytest.mark.parametrize("name", ["__Host-sid", "__Secure-sid"])
def test_secure_prefixed_cookie_needs_https(name: str) -> None:
    [problem] = problems({"session.cookie_name": name})
    assert problem.startswith(f'session.cookie_name: "{name}": browsers accept a ')
    assert (
        load(
            {"session.cookie_name": name, "server.public_url": "https://a.example"}
        ).session.cookie_name
        == name
    )


def test_cookie_name_must_be_a_token() -> None:
    [problem] = problems({"session.cookie_name": "my session"})
    assert problem.startswith("session.cookie_name: expected a cookie name")


def test_memory_backend_with_several_workers_is_an_error() -> None:
    assert problems({"server.workers": 4}) == [
        'session.backend: "memory" cannot be used with server.workers = 4: sessions would not be '
        "shared between worker processes; use redis or cookie"
    ]
    assert load({"server.workers": 4, "session.backend": "redis"}).server.workers == 4


def test_idle_timeout_cannot_exceed_absolute_timeout() -> None:
    assert problems({"session.idle_timeout": "9h", "session.absolute_timeout": "8h"}) == [
        "session.idle_timeout: must not be longer than session.absolute_timeout (8h), got 9h"
    ]
    session = load({"session.idle_timeout": "15m", "session.absolute_timeout": "1d"}).session
    assert (session.idle_timeout_s, session.absolute_timeout_s) == (900.0, 86400.0)


# --- users and tokens ------------------------------------------------------------------------


def test_duplicate_usernames() -> None:
    users = [
        {"username": "alice", "password_hash": HASH},
        {"username": "bob", "password_hash": HASH},
        {"username": "alice", "password_hash": HASH},
        {"username": "Bob", "password_hash": HASH},
    ]
    assert problems({"users.inline": users}) == [
        'users.inline[2].username: duplicate username "alice", already defined at users.inline[0]',
        'users.inline[3].username: duplicate username "Bob": "bob" is already defined at '
        "users.inline[1] (usernames must differ by more than letter case)",
    ]


def test_inline_user_fields() -> None:
    user = load(
        {
            "users.inline[0]": {
                "username": "alice",
                "password_hash": HASH,
                "name": "Alice",
                "email": "a@example.com",
                "roles": ["admin", "ops"],
            }
        }
    ).users.entries[0]
    assert (user.name, user.email, user.roles) == ("Alice", "a@example.com", ("admin", "ops"))
    assert HASH not in repr(user)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"tokens.claims": ["name", "mail"]},
            "tokens.claims[1]: unknown claim \"mail\" (did you mean 'email'?); "
            "allowed: name, email, roles",
        ),
        ({"tokens.claims": ["roles", "roles"]}, 'tokens.claims[1]: "roles" is listed twice'),
        ({"tokens.ttl": "2d"}, 'tokens.ttl: must be at most 1d, got "2d"'),
        ({"tokens.ttl": 0}, "tokens.ttl: must be longer than zero"),
        ({"tokens.header": "X Token"}, "tokens.header: expected an HTTP token"),
        (
            {"tokens.header": "cookie"},
            'tokens.header: "cookie" is managed by the gateway or HTTP and cannot carry the token',
        ),
        (
            {"tokens.signing_keys": [{"kid": "a"}]},
            "tokens.signing_keys[0]: needs exactly one of file or hmac_secret_file, got neither",
        ),
        (
            {"tokens.signing_keys": [{"file": "a.pem", "hmac_secret_file": "b"}]},
            "tokens.signing_keys[0]: needs exactly one of file or hmac_secret_file, got both",
        ),
        ({"tokens.api_tokens.ttl": "25h"}, 'tokens.api_tokens.ttl: must be at most 1d, got "25h"'),
    ],
    ids=lambda value: value.split(":")[0] if isinstance(value, str) else "",
)
def test_token_rules(changes: dict[str, Any], expected: str) -> None:
    [problem] = problems(changes)
    assert problem.startswith(expected)


def test_token_settings() -> None:
    tokens = load(
        {
            "tokens": {
                "issuer": "urn:gw",
                "ttl": "2m",
                "header": "X-Identity",
                "claims": ["email"],
                "api_tokens": {"enabled": True, "ttl": "8h"},
            }
        }
    ).tokens
    assert (tokens.issuer, tokens.ttl_s, tokens.header, tokens.claims) == (
        "urn:gw",
        120.0,
        "X-Identity",
        ("email",),
    )
    assert (tokens.api_tokens.enabled, tokens.api_tokens.ttl_s) == (True, 28800.0)


# --- warnings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "warning"),
    [
        (
            {"session.same_site": "none"},
            'session.same_site: "none" with an http public_url: browsers will drop the cookie',
        ),
        ({"upstreams.legacy": {"url": "http://old:80"}}, "upstreams.legacy: not used by any route"),
        ({"users": DELETE}, "users: no users are configured, so nobody can sign in"),
    ],
    ids=["same-site-none-over-http", "unused-upstream", "no-users"],
)
def test_warnings(changes: dict[str, Any], warning: str) -> None:
    assert load(changes).warnings == (warning,)


def test_cookie_sessions_with_workers_warn_that_logouts_do_not_hold(tmp_path: Path) -> None:
    secret = tmp_path / "session.key"
    secret.write_bytes(bytes(range(32)))
    settings = load(
        {
            "session.backend": "cookie",
            "server.workers": 2,
            "session.cookie": {"secret_file": str(secret)},
        }
    )
    assert settings.warnings == (
        'session.backend: "cookie" with server.workers = 2: a logout is remembered only by the '
        "worker that handled it, so the old cookie keeps working on the others (and after a "
        "restart) until it expires; use redis for logouts that hold everywhere",
    )


def test_same_site_none_over_https_is_fine() -> None:
    settings = load({"session.same_site": "none", "server.public_url": "https://a.example"})
    assert settings.warnings == ()


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"tokens.issuer": "app"}, "routes[0].upstream"),
        (
            {"tokens.issuer": "gw", "routes[0].token": {"audience": "gw"}},
            "routes[0].token.audience",
        ),
    ],
)
def test_an_upstream_audience_equal_to_the_issuer_is_refused(
    changes: dict[str, Any], path: str
) -> None:
    [problem] = problems(changes)
    assert problem.startswith(f"{path}: ")
    assert "equals tokens.issuer" in problem


@pytest.mark.parametrize(
    ("public_url", "origin"),
    [
        ("https://gw.example.com:443", "https://gw.example.com"),
        ("http://gw.example.com:80/", "http://gw.example.com"),
        ("https://gw.example.com:8443", "https://gw.example.com:8443"),
        ("http://gw.example.com:443", "http://gw.example.com:443"),
    ],
)
def test_public_url_drops_the_default_port_as_browsers_do(public_url: str, origin: str) -> None:
    # Browsers send Origin without a default port; the login form's Origin check compares.
    assert load({"server.public_url": public_url}).server.public_url == origin


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("redis://127.0.0.1:99999/0", "invalid port"),
        ("redis://127.0.0.1:abc/0", "invalid port"),
        ("redis:///0", "needs a host"),
        ("redis://127.0.0.1:6379/zero", "must be a number"),
    ],
)
def test_a_redis_url_the_client_would_refuse_is_a_config_error(url: str, rule: str) -> None:
    [problem] = problems({"session.backend": "redis", "session.redis": {"url": url}})
    assert problem.startswith("session.redis.url: ")
    assert rule in problem
    assert url not in problem  # a Redis URL may hold a password: never echoed


def test_the_redis_session_cache_is_on_by_default_with_a_one_second_bound() -> None:
    redis = load({"session.backend": "redis"}).session.redis
    assert redis.cache is True
    assert redis.cache_max_staleness_s == 1.0
    assert redis.cache_max_age_s == 10.0
    assert redis.cache_max_entries == 100_000


def test_the_redis_session_cache_settings_are_read() -> None:
    redis = load(
        {
            "session.backend": "redis",
            "session.redis": {
                "cache": {
                    "enabled": False,
                    "max_staleness": "250ms",
                    "max_age": "30s",
                    "max_entries": 500,
                }
            },
        }
    ).session.redis
    assert redis.cache is False
    assert (redis.cache_max_staleness_s, redis.cache_max_age_s, redis.cache_max_entries) == (
        0.25,
        30.0,
        500,
    )


@pytest.mark.parametrize(
    ("cache", "where"),
    [
        ({"enabled": "sometimes"}, "session.redis.cache.enabled"),
        ({"max_staleness": "0s"}, "session.redis.cache.max_staleness"),
        ({"max_staleness": "2m"}, "session.redis.cache.max_staleness"),
        ({"max_entries": 0}, "session.redis.cache.max_entries"),
        ({"max_age": "0s"}, "session.redis.cache.max_age"),
        ({"max_entires": 10}, "session.redis.cache.max_entires"),
    ],
)
def test_bad_redis_session_cache_settings_are_config_errors(
    cache: dict[str, Any], where: str
) -> None:
    [problem] = problems({"session.backend": "redis", "session.redis": {"cache": cache}})
    assert problem.startswith(f"{where}: ")
