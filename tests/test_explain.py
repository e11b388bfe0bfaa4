"""``gateway explain``: route, decision, upstream URL and JWT claims for one request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.bundle import Bundle, load
from gateway.cli import main
from gateway.explain import explain
from gateway.tokens import generate_private_key

REPO = Path(__file__).resolve().parents[1]
NOW = 1_750_000_000.0


@pytest.fixture(scope="module")
def example() -> Bundle:
    return load(REPO / "config.example.yaml")


def field(report: str, key: str) -> str:
    """The value on the ``key:`` line (continuation lines not included)."""
    for line in report.splitlines():
        if line.startswith(f"{key}:"):
            return line[len(key) + 1 :].strip()
    raise AssertionError(f"no {key!r} line in:\n{report}")


def block(report: str, key: str) -> list[str]:
    """The ``key:`` line's value and its continuation lines (blank label)."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
    width = len(lines[start]) - len(lines[start][len(key) + 1 :].lstrip())
    values = [lines[start][width:]]
    for line in lines[start + 1 :]:
        if line[:width].strip():
            break
        values.append(line[width:])
    return values


def json_block(report: str, key: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads("\n".join(block(report, key)))
    return data


def small_config(tmp_path: Path, example: Bundle, routes: str, **extra: str) -> Bundle:
    """A small configuration in ``tmp_path`` with the example's users (alice admin, bob staff)."""
    alice, bob = example.settings.users.entries
    tokens = extra.get("tokens", "")
    (tmp_path / "config.yaml").write_text(
        f"""
server:
  listen: "127.0.0.1:8080"
  public_url: "https://gw.example.com"
  data_dir: {tmp_path / "data"}
users:
  inline:
    - {{username: alice, password_hash: "{alice.password_hash}", roles: [admin],
        email: alice@example.com}}
    - {{username: bob, password_hash: "{bob.password_hash}", roles: [staff]}}
tokens:
  ttl: 45s
{tokens}
upstreams:
  app: {{url: "http://10.0.0.5:3000/base"}}
  other: {{url: "http://10.0.0.6:4000"}}
routes:
{routes}
"""
    )
    return load(tmp_path / "config.yaml")


# --- the example configuration ---------------------------------------------------------------


def test_a_public_route_is_allowed_for_anonymous_callers_without_a_token(example):
    report = explain(example, "GET", "http://127.0.0.1:8080/static/app.css?v=3")
    assert field(report, "route").startswith("assets (routes[0]: path_prefix=/static/)")
    assert field(report, "access") == "public"
    assert field(report, "user") == "anonymous (no session)"
    assert field(report, "decision") == "allow"
    assert field(report, "upstream") == "app: GET http://127.0.0.1:9000/static/app.css?v=3"
    assert field(report, "token").startswith("none")
    assert "jwt claims" not in report


def test_a_public_route_forwards_a_signed_in_callers_identity(example):
    report = explain(example, "GET", "/static/app.css", user="bob", now=NOW)
    assert field(report, "decision") == "allow"
    assert json_block(report, "jwt claims")["sub"] == "bob"


def test_an_authenticated_route_asks_an_anonymous_caller_to_log_in(example):
    report = explain(example, "GET", "http://127.0.0.1:8080/reports/q3?view=full")
    assert field(report, "route").startswith("everything-else (routes[4]")
    assert field(report, "decision") == "login required"
    anonymous = "\n".join(block(report, "anonymous"))
    assert "unauthenticated: auto" in anonymous
    assert "302 to /.gateway/login?rd=%2Freports%2Fq3%3Fview%3Dfull" in anonymous
    assert '401 {"error": "unauthenticated"}' in anonymous
    assert field(report, "token").startswith("none")
    assert "upstream:" not in report


def test_auto_answers_401_to_a_non_get_request(example):
    report = explain(example, "POST", "/reports")
    assert field(report, "anonymous").startswith("401 ")
    assert "302" not in report


def test_unauthenticated_status_never_redirects(example):
    report = explain(example, "GET", "/api/v1/items")
    assert field(report, "decision") == "login required"
    assert field(report, "anonymous").startswith('401 {"error": "unauthenticated"}')
    assert "(unauthenticated: status)" in report
    assert "302" not in report


def test_an_authenticated_route_as_alice_sends_her_jwt(example):
    report = explain(example, "GET", "http://127.0.0.1:8080/reports", user="alice", now=NOW)
    assert field(report, "user") == "alice (roles: admin)"
    assert field(report, "decision") == "allow"
    assert field(report, "upstream") == "app: GET http://127.0.0.1:9000/reports"
    assert field(report, "sends") == "Authorization: Bearer <the JWT below>"
    claims = json_block(report, "jwt claims")
    assert claims["sub"] == "alice"
    assert claims["aud"] == "app"  # default audience: the upstream's name
    assert claims["iss"] == "http://127.0.0.1:8080"
    assert claims["exp"] - claims["iat"] == 60


def test_the_claims_shown_for_alice_follow_the_route_token_settings(example):
    report = explain(example, "GET", "/admin/users", user="alice", now=NOW)
    header = json_block(report, "jwt header")
    claims = json_block(report, "jwt claims")
    assert header["typ"] == "JWT"
    assert header["alg"] == "EdDSA"
    assert header["kid"]
    assert claims == {
        "iss": "http://127.0.0.1:8080",
        "sub": "alice",
        "aud": "admin-ui",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 30,
        "jti": claims["jti"],
        "sid": claims["sid"],
        "name": "Alice Example",
        "email": "alice@example.com",
        "roles": ["admin"],
    }
    assert "aud admin-ui (route token.audience), lifetime 30s (route token.ttl)" in report


def test_a_roles_route_allows_alice_and_denies_bob(example):
    alice = explain(example, "GET", "/admin", user="alice")
    bob = explain(example, "GET", "/admin", user="bob")
    assert field(alice, "access") == "roles=admin"
    assert field(alice, "decision") == "allow"
    assert field(bob, "decision") == "deny (403)"
    assert field(bob, "token").startswith("none")
    assert "upstream:" not in bob


def test_methods_take_part_in_matching(example):
    report = explain(example, "delete", "/admin", user="bob")
    assert field(report, "request").startswith("DELETE ")
    assert field(report, "route").startswith("everything-else")
    assert field(report, "decision") == "allow"


def test_strip_prefix_is_reflected_in_the_upstream_url(example):
    report = explain(example, "GET", "http://127.0.0.1:8080/api/v1/items?x=1&y=%2F", user="bob")
    assert field(report, "decision") == "allow"
    assert field(report, "upstream") == "app: GET http://127.0.0.1:9000/v1/items?x=1&y=%2F"
    assert "strip_prefix /api removed; X-Forwarded-Prefix: /api" in report
    assert block(report, "sends") == [
        "Authorization: Bearer <the JWT below>",
        "X-Auth-User: bob",
        "X-Auth-Email: bob@example.com",
        "X-Auth-Roles: staff",
    ]


def test_alice_reaches_the_api_by_name(example):
    report = explain(example, "GET", "/api/v2/x", user="alice")
    assert field(report, "access") == "roles=staff users=alice"
    assert field(report, "decision") == "allow"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/a/%2e%2e/%2e%2e/x", "path_traversal"),
        ("/admin%2F", "path_encoded_slash"),
        ("/static/..%5cadmin", "path_encoded_slash"),
    ],
)
def test_a_refused_path_is_a_400_before_any_route(example, path, reason):
    report = explain(example, "GET", f"http://127.0.0.1:8080{path}", user="alice")
    assert field(report, "result").startswith("400: ")
    assert f"({reason})" in report
    assert "route:" not in report
    assert "decision:" not in report


def test_the_path_is_normalised_before_matching(example):
    report = explain(example, "GET", "/static/../%61dmin//x", user="bob")
    assert field(report, "path") == "/admin/x (normalised from /static/../%61dmin//x)"
    assert field(report, "route").startswith("admin ")
    assert field(report, "decision") == "deny (403)"


@pytest.mark.parametrize("path", ["/.gateway/login", "/%2egateway/jwks.json", "/.gateway"])
def test_the_reserved_prefix_is_served_by_the_gateway_itself(example, path):
    report = explain(example, "GET", path)
    assert field(report, "result").startswith("served by the gateway itself")
    assert "route:" not in report


@pytest.mark.parametrize("path", ["/favicon.ico", "/robots.txt"])
def test_an_anonymous_fetch_of_favicon_or_robots_gets_the_gateways_own(example, path):
    report = explain(example, "GET", path)
    assert field(report, "route").startswith("everything-else")
    assert field(report, "result").startswith(
        f"served by the gateway itself: its own /.gateway/static{path}, never a login redirect"
    )
    assert "302 to" not in report
    assert "upstream:" not in report
    assert field(explain(example, "GET", path, user="bob", now=NOW), "decision") == "allow"
    assert field(explain(example, "POST", path), "anonymous").startswith("401 ")


def test_the_query_never_takes_part_in_matching(example):
    report = explain(example, "GET", "/reports?/admin")
    assert field(report, "route").startswith("everything-else")
    assert field(report, "query") == "/admin (never takes part in matching)"


def test_no_secret_is_ever_printed(example):
    reports = [
        explain(example, "GET", path, user=user)
        for path in ("/", "/admin", "/api/v1/x", "/static/x")
        for user in ("alice", "bob", None)
    ]
    for user in example.settings.users.entries:
        assert all(user.password_hash not in report for report in reports)
    assert all("argon2" not in report for report in reports)


# --- errors ------------------------------------------------------------------------------------


def test_an_unknown_user_is_an_error_naming_the_known_ones(example):
    with pytest.raises(
        ValueError,
        match=r"unknown user 'alic' \(did you mean 'alice'\?\); "
        r"known users: alice, bob",
    ):
        explain(example, "GET", "/", user="alic")


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/x", "127.0.0.1:8080/x", "http:///x", "http://h:99999/x", "", "x/y"],
)
def test_a_bad_url_is_an_error(example, url):
    with pytest.raises(ValueError, match="URL"):
        explain(example, "GET", url)


def test_a_bad_method_is_an_error(example):
    with pytest.raises(ValueError, match="invalid HTTP method"):
        explain(example, "GE T", "/")


# --- small configurations ----------------------------------------------------------------------


def test_a_deny_route_is_403_for_everyone(tmp_path, example):
    settings = small_config(
        tmp_path,
        example,
        "  - {name: closed, match: {path_prefix: /}, upstream: app, access: deny}",
    )
    for user in (None, "alice"):
        report = explain(settings, "GET", "/anything", user=user)
        assert field(report, "access") == "deny"
        assert field(report, "decision") == "deny (403)"


def test_no_matching_route_is_a_404(tmp_path, example):
    settings = small_config(
        tmp_path, example, "  - {name: only, match: {path: /only}, upstream: app, access: public}"
    )
    report = explain(settings, "GET", "/other", user="alice")
    assert field(report, "result") == "404: no route matches"
    assert "decision:" not in report


def test_hosts_match_like_the_host_header_browsers_send(tmp_path, example):
    settings = small_config(
        tmp_path,
        example,
        "  - {name: admin, match: {host: admin.example.com, path_prefix: /}, upstream: other,\n"
        "     access: {users: [alice]}, unauthenticated: redirect, strip_prefix: /app}\n"
        "  - {name: rest, match: {path_prefix: /}, upstream: app, access: public}",
    )
    report = explain(
        settings, "GET", "https://user:pw@ADMIN.example.com:443/app/x?q#frag", user="alice"
    )
    assert field(report, "request") == "GET https://ADMIN.example.com/app/x?q"
    assert field(report, "route").startswith("admin (routes[0]: host=admin.example.com")
    assert field(report, "upstream") == "other: GET http://10.0.0.6:4000/x?q"
    anonymous = explain(settings, "GET", "https://admin.example.com/app/x")
    assert field(anonymous, "anonymous") == (
        "302 to /.gateway/login?rd=%2Fapp%2Fx (unauthenticated: redirect)"
    )
    # A path is taken relative to public_url, whose host is not admin.example.com.
    report = explain(settings, "GET", "/app/x")
    assert field(report, "route").startswith("rest ")
    assert field(report, "upstream") == "app: GET http://10.0.0.5:3000/base/app/x"


def test_an_ephemeral_key_is_flagged_and_nothing_is_written(tmp_path, example):
    settings = small_config(
        tmp_path,
        example,
        "  - {name: all, match: {path_prefix: /}, upstream: app, access: authenticated}",
    )
    report = explain(settings, "GET", "/x", user="alice", now=NOW)
    assert "the kid shown is a placeholder" in report
    assert not (tmp_path / "data").exists()
    claims = json_block(report, "jwt claims")
    assert claims["iss"] == "https://gw.example.com"
    assert claims["aud"] == "app"
    assert claims["exp"] == int(NOW) + 45
    assert "name" not in claims  # alice has no name in this configuration
    assert claims["email"] == "alice@example.com"


def test_a_configured_key_signs_and_its_kid_is_shown(tmp_path, example):
    pem, kid = generate_private_key("ES256")
    (tmp_path / "key.pem").write_bytes(pem)
    settings = small_config(
        tmp_path,
        example,
        "  - {name: all, match: {path_prefix: /}, upstream: app, access: authenticated,\n"
        "     token: {audience: reports}}",
        tokens=f"  signing_keys: [{{file: {tmp_path / 'key.pem'}}}]\n"
        "  header: X-Token\n  claims: [roles]",
    )
    report = explain(settings, "GET", "/x", user="bob", now=NOW)
    assert "placeholder" not in report
    assert json_block(report, "jwt header") == {"alg": "ES256", "typ": "JWT", "kid": kid}
    claims = json_block(report, "jwt claims")
    assert set(claims) == {"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "sid", "roles"}
    assert claims["aud"] == "reports"
    assert field(report, "sends") == "X-Token: <the JWT below>"
    assert settings.keys.signing.kid == kid


# --- users of an OpenID Connect provider ---------------------------------------------------------


@pytest.fixture
def with_provider(tmp_path: Path, example: Bundle) -> Bundle:
    small_config(
        tmp_path,
        example,
        """
  - {name: admin, match: {path_prefix: /admin}, upstream: app, access: {roles: [admin]}}
  - {name: rest, match: {path_prefix: /}, upstream: other, access: authenticated}
""",
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        config.read_text()
        + """
login:
  oidc:
    - name: corp
      issuer: https://id.example.com
      client_id: gateway
      client_secret: s3cret
      allowed: {email_domains: [corp.example]}
"""
    )
    return load(config)


def test_a_provider_user_is_decided_by_the_roles_mapped_from_their_groups(with_provider):
    report = explain(
        with_provider,
        "GET",
        "/admin/x",
        idp="corp",
        user="erin",
        claims=["groups=admin", "groups=ops", "email=erin@corp.example", "email_verified=true"],
        now=NOW,
    )

    assert field(report, "user") == "erin (roles: admin, ops, signed in at corp)"
    assert field(report, "decision") == "allow"
    claims = json_block(report, "jwt claims")
    assert claims["sub"] == "erin"
    assert claims["roles"] == ["admin", "ops"]
    assert claims["email"] == "erin@corp.example"
    assert claims["idp"] == "corp"


def test_a_provider_user_without_the_role_is_denied(with_provider):
    claims = ["groups=ops", "email=erin@corp.example", "email_verified=true"]
    report = explain(with_provider, "GET", "/admin/x", idp="corp", user="erin", claims=claims)
    assert field(report, "decision") == "deny (403)"


def test_a_provider_user_the_allowed_rules_refuse_gets_no_session(with_provider):
    claims = ["groups=admin", "email=erin@elsewhere.example", "email_verified=true"]
    report = explain(with_provider, "GET", "/admin/x", idp="corp", user="erin", claims=claims)
    assert field(report, "sign-in") == "refused by login.oidc[0].allowed (anonymous below)"
    assert field(report, "user") == "anonymous (no session)"


def test_an_unknown_provider_is_an_error(with_provider):
    with pytest.raises(ValueError, match=r"unknown provider 'crop' \(did you mean 'corp'"):
        explain(with_provider, "GET", "/", idp="crop", user="erin")
    with pytest.raises(ValueError, match="--claim needs --idp"):
        explain(with_provider, "GET", "/", claims=["groups=admin"])


def test_explain_takes_idp_and_claims_on_the_command_line(capsys, tmp_path, with_provider):
    argv = ["explain", "-c", str(tmp_path / "config.yaml"), "GET", "/admin/x", "--idp", "corp",
            "--user", "erin", "--claim", "groups=admin", "--claim", "email=e@corp.example",
            "--claim", "email_verified=true"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert field(out, "decision") == "allow"
