"""`gateway check` reports every problem in one run, in file order, and warns about route tables
that do not do what they seem to: rules naming users nobody defined, a ``strip_prefix`` that is
never removed, a ``path_prefix`` rule whose resource a laxer route serves under a suffix, and
cookie sessions with several workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.bundle import load
from gateway.config import ConfigError
from tests.configs import USERS, config, dump, route, session_config

REPO = Path(__file__).resolve().parents[2]
HASH = USERS["alice"]["password_hash"]

# Ten mistakes of every kind, in a file whose sections are not in the usual order: the users
# come first and the keys last, so that file order is not the order validation runs in.
TEN_MISTAKES = f"""\
users:
  inline:
    - username: alice
      password_hash: hunter2
    - username: alice
      password_hash: "{HASH}"
  file: users-missing.yaml
server:
  listen: "127.0.0.1:0"
  public_url: "http://127.0.0.1:8080"
  data_dir: state
  workers: zero
  workers: many
routes:
  - name: api
    match: {{ path_regex: "^/api/(" }}
    upstream: app
    access: public
  - name: docs
    upstream: nowhere
    match: {{ path_prefix: /docs }}
    access: public
  - name: admin
    match: {{ path_prefix: /admin }}
    upstream: app
    access: {{ roles: admin }}
upstreams:
  app: {{ url: "http://127.0.0.1:9000" }}
session:
  idle_timout: 30m
tokens:
  signing_keys:
    - file: keys/missing.pem
"""

# (line, YAML path, part of the message): what a user must be told, in the order of the file.
TEN = [
    (4, "users.inline[0].password_hash", "looks like a plaintext password"),
    (5, "users.inline[1].username", 'duplicate username "alice"'),
    (7, "users.file", "users-missing.yaml"),
    (13, "server.workers", "written twice (first at line 12)"),
    (13, "server.workers", 'expected a whole number, got "many"'),
    (16, "routes[0].match.path_regex", "invalid regular expression"),
    (20, "routes[1].upstream", 'unknown upstream "nowhere"'),
    (26, "routes[2].access.roles", 'expected a list of role names, got "admin"'),
    (30, "session.idle_timout", "unknown key (did you mean 'idle_timeout'?)"),
    (33, "tokens.signing_keys[0].file", "keys/missing.pem"),
]


@pytest.fixture
def ten_mistakes(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(TEN_MISTAKES)
    return path


def gateway(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command line, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("GATEWAY_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_sample_has_ten_mistakes_on_the_lines_named() -> None:
    lines = TEN_MISTAKES.splitlines()
    assert len(TEN) == 10
    for line, path, _text in TEN:
        key = path.rsplit(".", 1)[-1].split("[")[0]
        assert key in lines[line - 1], (line, path)


# --- errors: all of them, once, in file order ----------------------------------------------


def test_the_loader_reports_all_ten_mistakes_in_file_order(ten_mistakes: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load(ten_mistakes)
    issues = raised.value.issues
    assert [issue.path for issue in issues] == [path for _line, path, _text in TEN]
    for issue, (line, path, text) in zip(issues, TEN, strict=True):
        assert text in issue.message, (path, issue.message)
        assert issue.line == line, (path, issue.line)
    assert "hunter2" not in str(raised.value)


def test_gateway_check_prints_all_ten_mistakes_in_one_run(ten_mistakes: Path) -> None:
    result = gateway("check", "-c", str(ten_mistakes), cwd=ten_mistakes.parent)
    assert result.returncode == 1
    assert result.stdout == ""
    header, *errors = result.stderr.splitlines()
    assert header == f"{ten_mistakes}: invalid configuration (10 error(s)):"
    assert len(errors) == 10, result.stderr
    for printed, (line, path, text) in zip(errors, TEN, strict=True):
        assert printed.startswith(f"  {path}: "), printed
        assert text in printed
        assert printed.endswith(f" (line {line})"), printed
    assert "hunter2" not in result.stderr


def test_gateway_run_refuses_to_start_and_prints_the_same_errors(ten_mistakes: Path) -> None:
    checked = gateway("check", "-c", str(ten_mistakes), cwd=ten_mistakes.parent)
    result = gateway("run", "-c", str(ten_mistakes), cwd=ten_mistakes.parent)
    assert result.returncode == 1
    assert result.stderr == checked.stderr
    assert "keys/missing.pem" in result.stderr
    # Nothing is written for a configuration that is refused: no generated signing key.
    assert not (ten_mistakes.parent / "state").exists()


def test_problems_in_named_files_come_with_the_yaml_problems(tmp_path: Path) -> None:
    # The users file, an HMAC secret and a key file, each with a problem, beside one mistake in
    # the YAML itself: all four in one run, each where the file is named.
    (tmp_path / "users.yaml").write_text(
        "- {username: carol, password_hash: plain-text-pw}\n"
        f"- {{username: carol, password_hash: '{HASH}'}}\n"
    )
    (tmp_path / "short.secret").write_bytes(b"x" * 8)
    (tmp_path / "not-a-key.pem").write_text("hello\n")
    document = config(
        "http://127.0.0.1:9000",
        [route("all", access="authenticated")],
        users={"file": "users.yaml"},
        tokens={"signing_keys": [{"file": "not-a-key.pem"}, {"hmac_secret_file": "short.secret"}]},
        server={"workers": 0},
        data_dir=tmp_path / "state",
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(dump(document))
    with pytest.raises(ConfigError) as raised:
        load(path)
    found = [(issue.path, issue.line) for issue in raised.value.issues]
    text = path.read_text().splitlines()

    def line_of(fragment: str) -> int:
        return next(number for number, line in enumerate(text, 1) if fragment in line)

    assert found == [
        ("server.workers", line_of("workers: 0")),
        ("users.file[0].password_hash", None),
        ("users.file[1].username", None),
        ("tokens.signing_keys[0].file", line_of("file: not-a-key.pem")),
        ("tokens.signing_keys[1].hmac_secret_file", line_of("hmac_secret_file:")),
    ]
    messages = [issue.message for issue in raised.value.issues]
    assert "plaintext" in messages[1]
    assert 'duplicate username "carol"' in messages[2]
    assert "not-a-key.pem" in messages[3]
    assert "holds 8 bytes" in messages[4]


def test_a_secret_that_cannot_be_read_is_reported_once(tmp_path: Path) -> None:
    # The HMAC secret file is read by the YAML's checks; the key loader would find no key in
    # that entry, which is the same mistake and is not reported a second time.
    document = config(
        "http://127.0.0.1:9000",
        [route("all")],
        tokens={"signing_keys": [{"hmac_secret_file": "missing.secret"}]},
        data_dir=tmp_path / "state",
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(dump(document))
    with pytest.raises(ConfigError) as raised:
        load(path)
    [issue] = raised.value.issues
    assert issue.path == "tokens.signing_keys[0].hmac_secret_file"
    assert "cannot read" in issue.message


# --- warnings ------------------------------------------------------------------------------


def warnings_of(tmp_path: Path, document: dict[str, Any]) -> list[str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(dump(document))
    # The test users' hashes are cheap on purpose, which has a warning of its own.
    return [w for w in load(path).warnings if not w.startswith("users: ")]


def document(tmp_path: Path, routes: list[dict[str, Any]], **sections: Any) -> dict[str, Any]:
    """Users alice and bob; the upstreams the routes name (``app``, ``other``)."""
    ports = {"app": 9000, "other": 9001}
    return config(
        {item["upstream"]: f"http://127.0.0.1:{ports[item['upstream']]}" for item in routes},
        routes,
        users={"inline": [USERS["alice"], USERS["bob"]]},
        data_dir=tmp_path / "state",
        **sections,
    )


def test_a_rule_naming_a_user_nobody_defined_is_warned_about(tmp_path: Path) -> None:
    routes = [
        route("ops", prefix="/ops", access={"users": ["alice", "bbo"]}),
        route(
            "x",
            prefix="/x",
            access={"roles": ["admin"], "users": ["Alice", "zed"]},
            upstream="other",
        ),
    ]
    warnings = warnings_of(tmp_path, document(tmp_path, routes))
    assert warnings == [
        "routes[0].access.users: no user \"bbo\" is defined in users (did you mean 'bob'?); this "
        "rule lets nobody in by that name",
        "routes[1].access.users: no user \"Alice\" is defined in users (did you mean 'alice'?); "
        "this rule lets nobody in by that name",
        'routes[1].access.users: no user "zed" is defined in users; this rule lets nobody in by '
        "that name",
    ]


def test_users_from_every_source_count_as_defined(tmp_path: Path) -> None:
    (tmp_path / "users.yaml").write_text(yaml.safe_dump([USERS["carol"]]))
    routes = [route("ops", access={"users": ["alice", "carol"]})]
    doc = document(tmp_path, routes)
    doc["users"]["file"] = str(tmp_path / "users.yaml")
    assert warnings_of(tmp_path, doc) == []


@pytest.mark.parametrize(
    ("match", "strip"),
    [
        ({"path_prefix": "/simple"}, "/pypi"),
        ({"path_prefix": "/apix"}, "/api"),
        ({"path_prefix": "/static/"}, "/stat"),
        ({"path": "/health"}, "/api"),
        ({"path": "/api-docs"}, "/api"),
        ({"path_regex": "^/v[0-9]+/.*"}, "/api"),
        ({"path_prefix": "/API"}, "/api"),
    ],
    ids=[
        "other-prefix",
        "part-of-a-segment",
        "part-of-a-directory",
        "path",
        "path-not-segment",
        "regex-literal-start",
        "letter-case",
    ],
)
def test_a_strip_prefix_that_is_never_removed_is_warned_about(
    tmp_path: Path, match: dict[str, Any], strip: str
) -> None:
    routes = [route("r", match=match, strip_prefix=strip)]
    [warning] = warnings_of(tmp_path, document(tmp_path, routes))
    kind, value = next(iter(match.items()))
    assert warning.startswith(
        f'routes[0] "r": strip_prefix "{strip}" is never removed: no path the route matches '
        f'({kind} "{value}") begins with it.'
    )


@pytest.mark.parametrize(
    ("match", "strip"),
    [
        ({"path_prefix": "/pypi"}, "/pypi"),
        ({"path_prefix": "/pypi/"}, "/pypi"),
        ({"path_prefix": "/api/v1"}, "/api"),
        ({"path_prefix": "/api"}, "/api/v1"),
        ({"path_prefix": "/"}, "/api"),
        ({"path": "/api/health"}, "/api"),
        ({"path": "/api"}, "/api"),
        ({"path_regex": "/api/v[0-9]+/.*"}, "/api"),
        ({"path_regex": "^/ap.*"}, "/api"),
        ({"path_regex": "(?i)/x/.*"}, "/api"),
        ({"path_regex": "^/(a|b)/.*"}, "/a"),
        ({"path_prefix": "/API", "ignore_case": True}, "/api"),
        ({"path_prefix": "/api"}, "/"),
    ],
    ids=[
        "same",
        "directory",
        "parent",
        "deeper",
        "everything",
        "path-under",
        "path-equal",
        "regex",
        "regex-may-start-with-it",
        "regex-flags",
        "regex-alternatives",
        "ignore-case",
        "root",
    ],
)
def test_a_strip_prefix_that_can_be_removed_is_not_warned_about(
    tmp_path: Path, match: dict[str, Any], strip: str
) -> None:
    routes = [route("r", match=match, strip_prefix=strip)]
    assert warnings_of(tmp_path, document(tmp_path, routes)) == []


def test_a_prefix_rule_a_laxer_route_undercuts_with_a_suffix_is_warned_about(
    tmp_path: Path,
) -> None:
    routes = [
        route("secrets", prefix="/notes/secrets", access={"users": ["alice"]}),
        route("notes", prefix="/notes", access="authenticated"),
    ]
    [warning] = warnings_of(tmp_path, document(tmp_path, routes))
    assert warning == (
        'routes[0] "secrets": path_prefix "/notes/secrets" covers whole path segments only '
        '(/notes/secrets, /notes/secrets/...): "/notes/secrets.json" and "/notes/secrets.csv" go '
        'to route "notes" (routes[1], authenticated), a laxer rule on the same upstream "app". '
        "If the app serves the same resource there (as /x.json beside /x), use path_regex: "
        "'^/notes/secrets.*' (every path beginning with these characters), or have the app "
        "serve such forms under a trailing segment (/notes/secrets/data.json), which the prefix "
        "covers"
    )


@pytest.mark.parametrize(
    ("strict", "lax"),
    [
        ("deny", "public"),
        ({"roles": ["admin"]}, "authenticated"),
        ({"roles": ["admin"]}, {"roles": ["admin", "ops"]}),
        ("authenticated", "public"),
    ],
    ids=["deny-public", "roles-authenticated", "more-roles", "authenticated-public"],
)
def test_laxer_catch_alls_undercut_a_prefix_rule(tmp_path: Path, strict: Any, lax: Any) -> None:
    routes = [route("admin", prefix="/admin", access=strict), route("rest", access=lax)]
    [warning] = warnings_of(tmp_path, document(tmp_path, routes))
    assert warning.startswith('routes[0] "admin": path_prefix "/admin" covers whole path')
    assert '"/admin.json"' in warning and 'route "rest" (routes[1]' in warning


def test_a_sibling_name_alone_is_enough(tmp_path: Path) -> None:
    # Only "-x" and "_x" names fall through: ".ext" ones are taken by a strict regex route.
    routes = [
        route("dot", match={"path_regex": r"^/admin\..*"}, access="deny"),
        route("admin", prefix="/admin", access="deny"),
        route("rest", access="public"),
    ]
    [warning] = warnings_of(tmp_path, document(tmp_path, routes))
    assert '"/admin-x" and "/admin_x" go to route "rest"' in warning


@pytest.mark.parametrize(
    "routes",
    [
        # The laxer route forwards to another app: a different resource.
        [route("admin", prefix="/admin", access="deny"), route("rest", upstream="other")],
        # As strict, or stricter.
        [
            route("admin", prefix="/admin", access={"roles": ["admin", "ops"]}),
            route("rest", access={"roles": ["admin"]}),
        ],
        [route("admin", prefix="/admin", access="authenticated"), route("rest", access="deny")],
        # Nothing takes the suffixed names: 404.
        [route("admin", prefix="/admin", access="deny"), route("docs", prefix="/docs")],
        # Taken care of: a regex as strict as the prefix rule catches them first.
        [
            route("admin-any", match={"path_regex": "^/admin.*"}, access="deny"),
            route("admin", prefix="/admin", access="deny"),
            route("rest"),
        ],
        # A directory prefix and the root hold every name that begins with them.
        [route("assets", prefix="/static/", access="deny"), route("rest")],
        # The laxer route takes other methods, or another host.
        [
            route("admin", match={"path_prefix": "/admin", "methods": ["GET"]}, access="deny"),
            route("hook", match={"path_prefix": "/", "methods": ["POST"]}),
        ],
        [
            route("admin", match={"path_prefix": "/admin", "host": "a.example.com"}, access="deny"),
            route("b", match={"path_prefix": "/", "host": "b.example.com"}),
        ],
        # The same access.
        [route("admin", prefix="/admin", access="public"), route("rest", access="public")],
    ],
    ids=[
        "other-upstream",
        "as-strict",
        "stricter",
        "no-route",
        "regex-first",
        "directory",
        "other-methods",
        "other-host",
        "same-access",
    ],
)
def test_prefix_rules_nothing_undercuts_are_not_warned_about(
    tmp_path: Path, routes: list[dict[str, Any]]
) -> None:
    assert warnings_of(tmp_path, document(tmp_path, routes)) == []


@pytest.mark.parametrize(
    ("backend", "workers", "warned"),
    [("cookie", 2, True), ("cookie", 1, False), ("redis", 2, False)],
)
def test_cookie_sessions_with_several_workers_are_warned_about(
    tmp_path: Path, backend: str, workers: int, warned: bool
) -> None:
    session = session_config(backend, redis_url="redis://127.0.0.1:6379/0", redis_prefix="t:")
    routes = [route("all", access="authenticated")]
    doc = document(tmp_path, routes, session=session, server={"workers": workers})
    warnings = warnings_of(tmp_path, doc)
    assert bool(warnings) is warned
    if warned:
        [warning] = warnings
        assert warning.startswith('session.backend: "cookie" with server.workers = 2: a logout')


def test_gateway_check_prints_every_warning_and_exits_0(tmp_path: Path) -> None:
    routes = [
        route("secrets", prefix="/notes/secrets", access={"users": ["alice", "bbo"]}),
        route("notes", prefix="/notes", access="authenticated"),
        route("pypi", prefix="/simple", upstream="other", strip_prefix="/pypi"),
    ]
    doc = document(tmp_path, routes, session=session_config("cookie"), server={"workers": 2})
    path = tmp_path / "gateway.yaml"
    path.write_text(dump(doc))
    result = gateway("check", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: ")]
    assert [w.split(":")[1].strip() for w in warnings if not w.startswith("warning: users: ")] == [
        "session.backend",
        "routes[0].access.users",
        'routes[0] "secrets"',
        'routes[2] "pypi"',
    ]
    assert result.stdout.splitlines()[-1].startswith("configuration OK: 3 route(s)")
