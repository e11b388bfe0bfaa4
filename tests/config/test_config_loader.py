"""Loading: files, YAML errors, ${VAR} interpolation, *_file secrets, immutability, the example."""

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from argon2 import PasswordHasher

from gateway.bundle import build
from gateway.config import (
    ConfigError,
    ConfigIssue,
    Settings,
    load_settings,
    load_settings_from_text,
)
from gateway.config.interpolate import interpolate_tree

REPO_ROOT = Path(__file__).resolve().parents[2]
HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"


def minimal() -> dict[str, Any]:
    """A fresh, valid configuration without warnings."""
    return {
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


def load(
    document: dict[str, Any] | str, env: dict[str, str] | None = None, base_dir: Path | None = None
) -> Settings:
    """Through the whole loader: the keys and users the configuration names are read too."""
    text = document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False)
    return build(load_settings_from_text(text, env=env or {}, base_dir=base_dir)).settings


def problems(
    document: dict[str, Any] | str, env: dict[str, str] | None = None, base_dir: Path | None = None
) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(document, env=env, base_dir=base_dir)
    return [str(issue) for issue in info.value.issues]


# --- the example -----------------------------------------------------------------------------


def test_example_config_loads_clean_from_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    settings = load_settings("config.example.yaml", env={})
    assert settings.warnings == ()
    assert settings.server.public_url == "http://127.0.0.1:8080"
    assert (settings.server.listen_host, settings.server.listen_port) == ("127.0.0.1", 8080)
    assert settings.session.backend == "memory"
    assert settings.upstreams["app"].url == "http://127.0.0.1:9000"
    assert [route.name for route in settings.routes][-1] == "everything-else"
    admin = next(route for route in settings.routes if route.name == "admin")
    assert admin.match.host is None
    assert admin.access.roles == frozenset({"admin"})


@pytest.mark.parametrize(
    ("username", "password", "roles"),
    [("alice", "wonderland", ("admin",)), ("bob", "builder", ("staff",))],
)
def test_example_demo_users_have_real_argon2id_hashes(
    username: str, password: str, roles: tuple[str, ...]
) -> None:
    settings = load_settings(REPO_ROOT / "config.example.yaml", env={})
    user = next(user for user in settings.users.entries if user.username == username)
    assert user.password_hash.startswith("$argon2id$")
    assert PasswordHasher().verify(user.password_hash, password)
    assert user.roles == roles


def test_example_documents_every_key() -> None:
    # Every key the loader accepts appears in the example, set or commented out.
    from gateway.config import loader, routes, server, session, tokens, upstreams, users

    text = (REPO_ROOT / "config.example.yaml").read_text()
    keys = {
        *loader.KEYS,
        *server.KEYS,
        *server.TIMEOUT_KEYS,
        *session.KEYS,
        *session.REDIS_KEYS,
        *session.COOKIE_KEYS,
        *users.KEYS,
        *users.USER_KEYS,
        *users.LOGIN_KEYS,
        *users.THROTTLE_KEYS,
        *tokens.KEYS,
        *tokens.KEY_KEYS,
        *tokens.API_TOKEN_KEYS,
        *upstreams.KEYS,
        *routes.KEYS,
        *routes.MATCH_KEYS,
        *routes.ACCESS_KEYS,
        *routes.TOKEN_KEYS,
    }
    missing = sorted(key for key in keys if f"{key}:" not in text)
    assert missing == []


# --- files and YAML --------------------------------------------------------------------------


def test_load_settings_records_source_and_resolves_paths_from_its_directory(tmp_path: Path) -> None:
    (tmp_path / "users.yaml").write_text("[]\n")
    document = minimal()
    document["users"]["file"] = "users.yaml"
    document["server"]["data_dir"] = "state"
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(document))
    settings = load_settings(str(path), env={})
    assert settings.source == path
    assert settings.users.file == tmp_path / "users.yaml"
    assert settings.server.data_dir == tmp_path / "state"


def test_missing_config_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "nope.yaml", env={})
    [issue] = info.value.issues
    assert issue.path == str(tmp_path / "nope.yaml")
    assert "No such file or directory" in issue.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "server:\n  listen: [a\n  public_url: x\n",
            "line 3, column 13: invalid YAML: expected ','",
        ),
        ("server:\n  a: 1\n b: 2\n", "line 3, column 2: invalid YAML: expected <block end>"),
        ("server:\n\tlisten: x\n", "line 2, column 1: invalid YAML: found character '\\t'"),
        ("", "(top level): the configuration is empty"),
        ("# only a comment\n", "(top level): the configuration is empty"),
        ("- server\n", "(top level): expected a mapping of sections (server, session, users, "),
        ("just words", "(top level): expected a mapping of sections"),
    ],
    ids=["flow-list", "indent", "tab", "empty", "comment-only", "list", "scalar"],
)
def test_unusable_documents_are_reported_with_position(text: str, expected: str) -> None:
    [problem] = problems(text)
    assert problem.startswith(expected)


@pytest.mark.parametrize(
    "deep",
    [
        "extra: " + "[" * 2000 + "]" * 2000 + "\n",
        "extra: " + "{a: " * 2000 + "1" + "}" * 2000 + "\n",
        "extra:\n" + "".join("  " * depth + "- \n" for depth in range(1, 800)),
    ],
    ids=["flow-lists", "flow-mappings", "block-lists"],
)
def test_values_nested_thousands_deep_are_a_problem_not_a_crash(deep: str) -> None:
    """The YAML parser recurses once per level: a file nested thousands deep is reported
    like any invalid YAML (by ``gateway check`` and a SIGHUP reload alike), not a traceback."""
    [problem] = problems(yaml.safe_dump(minimal()) + deep)
    assert problem.startswith("(top level): invalid YAML: values nested too deeply")


def test_a_key_written_twice_is_reported_with_both_lines_and_the_rest_is_still_checked() -> None:
    text = (
        "server:\n"
        "  public_url: http://127.0.0.1:8080\n"
        "  workers: 0\n"
        "upstreams: {app: {url: 'http://127.0.0.1:9000'}}\n"
        "routes: [{name: all, match: {path_prefix: /}, upstream: app, access: public}]\n"
        "server: {public_url: http://127.0.0.1:8080, workers: -1}\n"
    )
    with pytest.raises(ConfigError) as info:
        load(text)
    assert [(issue.line, str(issue)) for issue in info.value.issues] == [
        (
            6,
            "server: this key is written twice (first at line 1); YAML keeps only this last "
            "value, so remove or merge the other",
        ),
        (6, "server.workers: must be at least 1, got -1"),
    ]


def test_yaml_merge_keys_may_be_overridden_without_a_duplicate_key_error() -> None:
    merged = yaml.safe_dump(minimal()).replace(
        "app:\n    url:", "app:\n    <<: {url: http://other:1, read_timeout: 2s}\n    url:"
    )
    upstream = load(merged).upstreams["app"]
    assert (upstream.url, upstream.read_timeout_s) == ("http://127.0.0.1:9000", 2.0)


def test_issue_and_error_text() -> None:
    issue = ConfigIssue("routes[2].access.roles", 'expected a list of role names, got "admin"')
    assert str(issue) == 'routes[2].access.roles: expected a list of role names, got "admin"'
    error = ConfigError([issue, ConfigIssue("server.workers", "must be at least 1, got 0")])
    assert str(error).splitlines() == [
        'routes[2].access.roles: expected a list of role names, got "admin"',
        "server.workers: must be at least 1, got 0",
    ]


# --- ${VAR} interpolation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "env", "title"),
    [
        ("${TITLE}", {"TITLE": "Welcome"}, "Welcome"),
        ("${TITLE:-Sign in here}", {}, "Sign in here"),
        ("${TITLE:-Sign in here}", {"TITLE": ""}, "Sign in here"),
        ("${TITLE:-fallback}", {"TITLE": "set"}, "set"),
        ("Hello ${WHO}, from ${WHERE:-here}", {"WHO": "Ann"}, "Hello Ann, from here"),
        ("$${TITLE}", {"TITLE": "x"}, "${TITLE}"),
        ("cost: $5", {}, "cost: $5"),
        ("${TITLE}", {"TITLE": "x\nlogin: {title: injected}"}, "x\nlogin: {title: injected}"),
    ],
    ids=[
        "set",
        "default",
        "empty-uses-default",
        "set-beats-default",
        "embedded",
        "escaped",
        "lone-dollar",
        "no-yaml-injection",
    ],
)
def test_interpolation(template: str, env: dict[str, str], title: str) -> None:
    document = minimal()
    document["login"] = {"title": template}
    assert load(document, env=env).login.title == title


def test_unset_variable_is_an_error_naming_it_and_the_path() -> None:
    document = minimal()
    document["upstreams"]["app"]["url"] = "http://${APP_HOST}:9000"
    assert problems(document) == [
        "upstreams.app.url: environment variable APP_HOST is not set "
        "(set it, or give a default: ${APP_HOST:-default})"
    ]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${TITLE", 'unterminated "${TITLE"'),
        ("${1BAD}", 'invalid reference "${1BAD}": expected ${NAME} or ${NAME:-default}'),
        ("${}", 'invalid reference "${}"'),
    ],
)
def test_malformed_references_are_errors(template: str, expected: str) -> None:
    document = minimal()
    document["login"] = {"title": template}
    [problem] = problems(document)
    assert problem.startswith(f"login.title: {expected}")


def test_environment_may_fill_numbers_and_booleans_but_yaml_strings_may_not() -> None:
    document = minimal()
    document["server"]["workers"] = "${WORKERS}"
    document["session"] = {"backend": "redis"}
    document["routes"][0]["websocket"] = "${WS:-true}"
    settings = load(document, env={"WORKERS": "4"})
    assert settings.server.workers == 4
    assert settings.routes[0].websocket is True
    document["server"]["workers"] = "4"
    assert problems(document) == ['server.workers: expected a whole number, got "4"']


def test_interpolation_never_mutates_its_input() -> None:
    shared = ["${A}"]
    document = {"x": {"y": "${A}"}, "first": shared, "second": shared}
    seen: list[tuple[str, str]] = []
    result = interpolate_tree(document, {"A": "1"}, lambda path, msg: seen.append((path, msg)))
    assert document == {"x": {"y": "${A}"}, "first": ["${A}"], "second": ["${A}"]}
    assert result == {"x": {"y": "1"}, "first": ["1"], "second": ["1"]}
    assert result["first"] is result["second"]  # aliases stay shared, not expanded
    assert seen == []


# --- *_file secrets --------------------------------------------------------------------------


def secret_config(secret_file: str) -> dict[str, Any]:
    document = minimal()
    document["session"] = {"backend": "cookie", "cookie": {"secret_file": secret_file}}
    return document


@pytest.mark.parametrize(
    ("content", "secret"),
    [
        (b"k" * 32 + b"\n", b"k" * 32),
        (b"k" * 32 + b"\r\n", b"k" * 32),
        (b"k" * 32 + b"\n\n", b"k" * 32 + b"\n"),
        (b"k" * 40, b"k" * 40),
    ],
    ids=["newline", "crlf", "only-one-newline", "no-newline"],
)
def test_secret_file_loses_exactly_one_trailing_newline(
    tmp_path: Path, content: bytes, secret: bytes
) -> None:
    (tmp_path / "session.key").write_bytes(content)
    settings = load(secret_config("session.key"), base_dir=tmp_path)
    assert settings.session.cookie.secret == secret
    assert b"k" * 32 not in repr(settings).encode()  # SECURITY: secrets stay out of logs


def test_secret_file_too_short(tmp_path: Path) -> None:
    (tmp_path / "session.key").write_bytes(b"short\n")
    assert problems(secret_config("session.key"), base_dir=tmp_path) == [
        f"session.cookie.secret_file: {tmp_path / 'session.key'} holds 5 bytes; at least 32 "
        "random bytes are required (e.g. head -c 32 /dev/urandom | base64 > session.key)"
    ]


@pytest.mark.parametrize(
    ("name", "reason"),
    [("missing.key", "No such file or directory"), (".", "Is a directory")],
)
def test_unreadable_secret_file_names_path_and_reason(
    tmp_path: Path, name: str, reason: str
) -> None:
    [problem] = problems(secret_config(name), base_dir=tmp_path)
    assert problem == f"session.cookie.secret_file: cannot read {tmp_path / name}: {reason}"


def test_cookie_backend_requires_a_secret() -> None:
    document = minimal()
    document["session"] = {"backend": "cookie"}
    [problem] = problems(document)
    assert problem.startswith(
        'session.cookie.secret_file: required when session.backend is "cookie"'
    )


def test_redis_url_and_password_from_files(tmp_path: Path) -> None:
    (tmp_path / "url").write_text("rediss://cache.internal:6380/2\n")
    (tmp_path / "password").write_text("p@ss:word/1\n")
    document = minimal()
    document["session"] = {
        "backend": "redis",
        "redis": {"url_file": "url", "password_file": "password"},
    }
    settings = load(document, base_dir=tmp_path)
    assert settings.session.redis.url == "rediss://:p%40ss%3Aword%2F1@cache.internal:6380/2"


@pytest.mark.parametrize(
    ("redis", "expected"),
    [
        (
            {"url": "redis://h:6379/0", "url_file": "url"},
            "session.redis: give either url or url_file, not both",
        ),
        (
            {"password": "a", "password_file": "password"},
            "session.redis: give either password or password_file, not both",
        ),
        (
            {"url": "redis://:old@h/0", "password": "new"},
            "session.redis: url already holds a password; remove it there or drop password/"
            "password_file",
        ),
        (
            {"url": "http://h:6379"},
            "session.redis.url: expected a redis://, rediss:// or unix:// URL",
        ),
    ],
)
def test_redis_secret_conflicts(tmp_path: Path, redis: dict[str, str], expected: str) -> None:
    (tmp_path / "url").write_text("redis://h:6379/0\n")
    (tmp_path / "password").write_text("pw\n")
    document = minimal()
    document["session"] = {"redis": redis}
    assert problems(document, base_dir=tmp_path) == [expected]


def test_signing_key_files_and_hmac_secrets_are_read(tmp_path: Path) -> None:
    from gateway.tokens import generate_private_key

    (tmp_path / "current.pem").write_bytes(generate_private_key("EdDSA")[0])
    (tmp_path / "hs256").write_bytes(b"h" * 32 + b"\n")
    document = minimal()
    document["tokens"] = {
        "signing_keys": [
            {"file": "current.pem"},
            {"hmac_secret_file": "hs256", "kid": "legacy"},
        ]
    }
    keys = load(document, base_dir=tmp_path).tokens.signing_keys
    assert keys[0].file == tmp_path / "current.pem"
    assert (keys[1].hmac_secret, keys[1].kid) == (b"h" * 32, "legacy")
    document["tokens"]["signing_keys"].append({"file": "gone.pem"})
    assert problems(document, base_dir=tmp_path) == [
        f"tokens.signing_keys[2].file: cannot read {tmp_path / 'gone.pem'}: "
        "No such file or directory"
    ]


def test_users_files_must_be_readable(tmp_path: Path) -> None:
    document = minimal()
    document["users"].update({"file": "users.yaml", "htpasswd": "htpasswd"})
    assert problems(document, base_dir=tmp_path) == [
        f"users.file: cannot read {tmp_path / 'users.yaml'}: No such file or directory",
        f"users.htpasswd: cannot read {tmp_path / 'htpasswd'}: No such file or directory",
    ]


# --- frozen results --------------------------------------------------------------------------


def test_settings_are_immutable() -> None:
    document = minimal()
    document["routes"][0]["access"] = {"roles": ["admin"]}
    settings = load(document)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.server.workers = 8  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.routes[0].access.kind = "public"  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.upstreams["evil"] = settings.upstreams["app"]  # type: ignore[index]
    assert isinstance(settings.routes, tuple)
    assert isinstance(settings.routes[0].access.roles, frozenset)
    assert isinstance(settings.users.entries, tuple)
