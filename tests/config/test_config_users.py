"""Every source of users: inline entries, users.file and htpasswd, read and checked by the
configuration loader (one schema for an entry, every problem reported at once, each username
once across the sources)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from argon2 import PasswordHasher

from gateway.bundle import build
from gateway.config import ConfigError, load_settings_from_text
from gateway.config.users import MAX_USERNAME_LENGTH
from gateway.identity.users import User, UserDirectory
from gateway.passwords import hash_password

# Pre-generated, cheap hashes keep the loading tests fast.
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
ALICE_HASH = CHEAP.hash("alice-pw")
BOB_BCRYPT = bcrypt.hashpw(b"bob-pw", bcrypt.gensalt(rounds=4)).decode()
MD5_CRYPT = "$1$saltsalt$qjXMvbEw8oaL.CzflDugX/"
APR1 = "$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/"
SHA1 = "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="


def entry(username: str, password_hash: str = ALICE_HASH, **fields: Any) -> dict[str, Any]:
    """One ``users.inline`` entry."""
    return {"username": username, "password_hash": password_hash, **fields}


def write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


def users_config(
    *,
    inline: tuple[dict[str, Any], ...] = (),
    file: Path | None = None,
    htpasswd: Path | None = None,
) -> dict[str, Any]:
    """A ``users:`` section."""
    section: dict[str, Any] = {"inline": list(inline)}
    if file is not None:
        section["file"] = str(file)
    if htpasswd is not None:
        section["htpasswd"] = str(htpasswd)
    return section


def _text(users: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {
            "server": {"public_url": "http://127.0.0.1:8080"},
            "users": users,
            "upstreams": {"app": {"url": "http://127.0.0.1:9000"}},
            "routes": [
                {
                    "name": "all",
                    "match": {"path_prefix": "/"},
                    "upstream": "app",
                    "access": "public",
                }
            ],
        }
    )


def load_users(users: dict[str, Any]) -> UserDirectory:
    """The users a gateway with this ``users:`` section serves, through the whole loader."""
    return build(load_settings_from_text(_text(users), env={})).users


def warnings_of(users: dict[str, Any]) -> tuple[str, ...]:
    return build(load_settings_from_text(_text(users), env={})).warnings


def issues_of(users: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as raised:
        load_settings_from_text(_text(users), env={})
    return [(issue.path, issue.message) for issue in raised.value.issues]


# --- loading -------------------------------------------------------------------------------


def test_sources_are_merged_in_order(tmp_path: Path) -> None:
    users_file = write(
        tmp_path,
        "users.yaml",
        f"""
- username: carol
  password_hash: "{ALICE_HASH}"
  name: Carol Example
  email: carol@example.com
  roles: [ops, admin]
- username: dave
  password_hash: '{BOB_BCRYPT}'
""",
    )
    htpasswd = write(tmp_path, ".htpasswd", f"erin:{BOB_BCRYPT}\n")
    settings = users_config(
        inline=(entry("alice", name="Alice", roles=("admin",)),),
        file=users_file,
        htpasswd=htpasswd,
    )

    directory = load_users(settings)

    assert directory.usernames() == ("alice", "carol", "dave", "erin")
    assert len(directory) == 4
    assert "carol" in directory
    assert directory.get("nobody") is None
    carol = directory.get("carol")
    assert carol == User(
        username="carol",
        name="Carol Example",
        email="carol@example.com",
        roles=frozenset({"ops", "admin"}),
        password_hash=ALICE_HASH,
    )
    assert directory.get("erin") == User(username="erin", password_hash=BOB_BCRYPT)


def test_lookup_is_exact() -> None:
    directory = load_users(users_config(inline=(entry("alice"),)))

    assert directory.get("alice") is not None
    assert directory.get("Alice") is None
    assert directory.get("alice ") is None


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
def test_bcrypt_variants_load_from_every_source(tmp_path: Path, prefix: str) -> None:
    variant = prefix + BOB_BCRYPT[4:]
    settings = users_config(
        inline=(entry("a", variant),),
        file=write(tmp_path, "users.yaml", f"- {{username: b, password_hash: '{variant}'}}\n"),
        htpasswd=write(tmp_path, ".htpasswd", f"c:{variant}\n"),
    )

    assert load_users(settings).usernames() == ("a", "b", "c")


REJECTED_HASHES = [
    pytest.param("hunter2", "plaintext", id="plaintext"),
    pytest.param(MD5_CRYPT, "md5-crypt", id="md5-crypt"),
    pytest.param(APR1, "$apr1$", id="apr1"),
    pytest.param(SHA1, "{SHA}", id="sha1"),
    pytest.param(ALICE_HASH.replace("$argon2id$", "$argon2i$"), "argon2i", id="argon2i"),
    pytest.param(ALICE_HASH.replace("$argon2id$", "$argon2d$"), "argon2d", id="argon2d"),
    # 43 base64 characters cut to 41: a length no byte string encodes to (n % 4 == 1).
    pytest.param(ALICE_HASH[:-2], "malformed argon2id", id="argon2id-truncated"),
    pytest.param(BOB_BCRYPT[:-1], "malformed bcrypt", id="bcrypt-truncated"),
]


@pytest.mark.parametrize(("bad_hash", "says"), REJECTED_HASHES)
def test_rejected_hash_inline_names_user_and_path(bad_hash: str, says: str) -> None:
    settings = users_config(inline=(entry("alice"), entry("bob", bad_hash)))

    [(path, message)] = issues_of(settings)

    assert path == "users.inline[1].password_hash"
    assert message.startswith('user "bob": ')
    assert says in message
    assert bad_hash not in message


@pytest.mark.parametrize(("bad_hash", "says"), REJECTED_HASHES)
def test_rejected_hash_in_users_file_names_user_and_path(
    tmp_path: Path, bad_hash: str, says: str
) -> None:
    users_file = write(
        tmp_path,
        "users.yaml",
        f"- {{username: alice, password_hash: '{ALICE_HASH}'}}\n"
        f"- {{username: bob, password_hash: '{bad_hash}'}}\n",
    )

    [(path, message)] = issues_of(users_config(file=users_file))

    assert path == "users.file[1].password_hash"
    assert message.startswith('user "bob": ')
    assert says in message
    assert bad_hash not in message


@pytest.mark.parametrize(
    ("bad_hash", "says"),
    [
        pytest.param("hunter2", "only bcrypt entries are supported", id="plaintext"),
        pytest.param(MD5_CRYPT, "only bcrypt entries are supported", id="md5-crypt"),
        pytest.param(APR1, "only bcrypt entries are supported", id="apr1"),
        pytest.param(SHA1, "only bcrypt entries are supported", id="sha1"),
        pytest.param(ALICE_HASH, "only bcrypt entries are supported", id="argon2id"),
        pytest.param("$2x$" + BOB_BCRYPT[4:], "only bcrypt entries are supported", id="2x"),
        pytest.param(BOB_BCRYPT[:-1], "malformed bcrypt", id="bcrypt-truncated"),
    ],
)
def test_rejected_htpasswd_entry_names_user_and_line(
    tmp_path: Path, bad_hash: str, says: str
) -> None:
    htpasswd = write(tmp_path, ".htpasswd", f"# migrated\nalice:{BOB_BCRYPT}\ncarol:{bad_hash}\n")

    [(path, message)] = issues_of(users_config(htpasswd=htpasswd))

    assert path == "users.htpasswd:3"
    assert message.startswith('user "carol": ')
    assert says in message
    assert bad_hash not in message


def test_htpasswd_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    htpasswd = write(
        tmp_path,
        ".htpasswd",
        f"# legacy users\r\n\r\n   \r\nalice:{BOB_BCRYPT}\r\n  # indented comment\r\n"
        f"bob:{BOB_BCRYPT}  \r\n\r\n",
    )

    directory = load_users(users_config(htpasswd=htpasswd))

    assert directory.usernames() == ("alice", "bob")


def test_htpasswd_line_without_colon_is_reported_without_echoing_it(tmp_path: Path) -> None:
    htpasswd = write(tmp_path, ".htpasswd", "\n# x\nmy-secret-password\n")

    assert issues_of(users_config(htpasswd=htpasswd)) == [
        ("users.htpasswd:3", "expected name:hash")
    ]


def test_username_defined_twice_names_both_places(tmp_path: Path) -> None:
    users_file = write(
        tmp_path,
        "users.yaml",
        f"- {{username: carol, password_hash: '{ALICE_HASH}'}}\n"
        f"- {{username: alice, password_hash: '{ALICE_HASH}'}}\n",
    )
    htpasswd = write(tmp_path, ".htpasswd", f"carol:{BOB_BCRYPT}\nAlice:{BOB_BCRYPT}\n")
    settings = users_config(inline=(entry("alice"),), file=users_file, htpasswd=htpasswd)

    assert issues_of(settings) == [
        (
            "users.file[1].username",
            'duplicate username "alice", already defined at users.inline[0]',
        ),
        ("users.htpasswd:1", 'duplicate username "carol", already defined at users.file[0]'),
        (
            "users.htpasswd:2",
            'duplicate username "Alice": "alice" is already defined at users.inline[0] '
            "(usernames must differ by more than letter case)",
        ),
    ]


BAD_USERNAMES = [
    pytest.param("", id="empty"),
    pytest.param("a b", id="space"),
    pytest.param("a\tb", id="tab"),
    pytest.param("a\u200bb", id="zero-width"),
    pytest.param("a\u202eb", id="bidi-override"),
    pytest.param("\u00a0alice", id="nbsp"),
    pytest.param("a\x7fb", id="del"),
    pytest.param("x" * 257, id="too-long"),
]


@pytest.mark.parametrize(
    "username",
    [*BAD_USERNAMES, pytest.param("a:b", id="colon"), pytest.param("alice\n", id="newline")],
)
def test_bad_usernames_are_refused_inline(username: str) -> None:
    [(path, message)] = issues_of(users_config(inline=(entry(username),)))

    assert path == "users.inline[0].username"
    assert "username" in message


@pytest.mark.parametrize("username", BAD_USERNAMES)
def test_bad_usernames_are_refused_in_htpasswd(tmp_path: Path, username: str) -> None:
    htpasswd = write(tmp_path, ".htpasswd", f"ok:{BOB_BCRYPT}\n{username}:{BOB_BCRYPT}\n")

    [(path, message)] = issues_of(users_config(htpasswd=htpasswd))

    assert path == "users.htpasswd:2"
    assert "username" in message
    assert BOB_BCRYPT not in message


def test_longest_allowed_username_loads() -> None:
    name = "x" * MAX_USERNAME_LENGTH
    assert name in load_users(users_config(inline=(entry(name),)))


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        pytest.param(
            "{username: bob, password_hash: HASH, roles: admin}",
            [("users.file[0].roles", 'user "bob": expected a list of role names, got "admin"')],
            id="roles-not-a-list",
        ),
        pytest.param(
            "{username: bob, password_hash: HASH, roles: [ops, 5]}",
            [("users.file[0].roles[1]", 'user "bob": expected a string, got 5')],
            id="role-not-a-string",
        ),
        pytest.param(
            "{username: bob, password_hash: HASH, name: 5}",
            [("users.file[0].name", 'user "bob": expected a string, got 5')],
            id="name-not-a-string",
        ),
        pytest.param(
            "{username: bob, password_hash: HASH, email: bob}",
            [("users.file[0].email", 'user "bob": expected an email address, got "bob"')],
            id="email-invalid",
        ),
        pytest.param(
            "{username: 5, password_hash: HASH}",
            [("users.file[0].username", "expected a username, got 5")],
            id="username-not-a-string",
        ),
        pytest.param(
            "{password_hash: HASH}",
            [("users.file[0].username", "required")],
            id="username-missing",
        ),
        pytest.param(
            "{username: bob}",
            [
                (
                    "users.file[0].password_hash",
                    'user "bob": required: create one with `gateway hash-password`',
                )
            ],
            id="hash-missing",
        ),
        pytest.param(
            "{username: bob, password_hash: [a, b]}",
            [
                (
                    "users.file[0].password_hash",
                    'user "bob": expected a password hash string, got a list',
                )
            ],
            id="hash-not-a-string",
        ),
        pytest.param(
            "{username: bob, pasword_hash: HASH}",
            [
                ("users.file[0].pasword_hash", "unknown key (did you mean 'password_hash'?)"),
                (
                    "users.file[0].password_hash",
                    'user "bob": required: create one with `gateway hash-password`',
                ),
            ],
            id="unknown-key-typo",
        ),
        pytest.param(
            "{username: bob, password_hash: '$1$x$y', rolez: [a]}",
            [
                ("users.file[0].rolez", "unknown key (did you mean 'roles'?)"),
                (
                    "users.file[0].password_hash",
                    'user "bob": unsupported password hash: md5-crypt ($1$) (expected argon2id '
                    "or bcrypt $2a$/$2b$/$2y$; create one with `gateway hash-password`)",
                ),
            ],
            id="unknown-key-and-bad-hash",
        ),
        pytest.param(
            "{username: bob, password_hash: HASH, groups: [a]}",
            [
                (
                    "users.file[0].groups",
                    "unknown key; allowed keys: username, password_hash, name, email, roles, "
                    "disabled",
                )
            ],
            id="unknown-key",
        ),
        pytest.param(
            "bob",
            [("users.file[0]", 'expected a mapping with username and password_hash, got "bob"')],
            id="not-a-mapping",
        ),
    ],
)
def test_users_file_types_and_keys_are_checked(
    tmp_path: Path, item: str, expected: list[tuple[str, str]]
) -> None:
    users_file = write(
        tmp_path,
        "users.yaml",
        f"- {item.replace('HASH', repr(ALICE_HASH))}\n"
        f"- {{username: ok, password_hash: '{ALICE_HASH}'}}\n",
    )

    assert issues_of(users_config(file=users_file)) == expected


@pytest.mark.parametrize(
    ("content", "says"),
    [
        pytest.param("alice: x\n", "expected a list of users", id="mapping"),
        pytest.param("just text\n", "expected a list of users", id="scalar"),
        pytest.param(
            f"- username: a\n  password_hash: '{ALICE_HASH}\n", "not valid YAML", id="yaml"
        ),
    ],
)
def test_users_file_must_be_a_yaml_list(tmp_path: Path, content: str, says: str) -> None:
    users_file = write(tmp_path, "users.yaml", content)

    [(path, message)] = issues_of(users_config(file=users_file))

    assert path == "users.file"
    assert says in message
    assert ALICE_HASH not in message  # YAML errors quote the source line; ours must not


def test_empty_users_file_means_no_users(tmp_path: Path) -> None:
    users_file = write(tmp_path, "users.yaml", "# nobody yet\n")

    assert len(load_users(users_config(file=users_file))) == 0


def test_unreadable_sources_are_reported(tmp_path: Path) -> None:
    settings = users_config(file=tmp_path / "missing.yaml", htpasswd=tmp_path)

    issues = issues_of(settings)

    assert [path for path, _ in issues] == ["users.file", "users.htpasswd"]
    assert "cannot read" in issues[0][1]
    assert "missing.yaml" in issues[0][1]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    users_file = write(tmp_path, "users.yaml", f"- {{username: x, password_hash: '{MD5_CRYPT}'}}\n")
    htpasswd = write(tmp_path, ".htpasswd", f"y:{APR1}\n")
    settings = users_config(inline=(entry("w", "plain"),), file=users_file, htpasswd=htpasswd)

    issues = issues_of(settings)

    # In file order: the document is dumped with sorted keys (file, htpasswd, inline).
    assert [path for path, _ in issues] == [
        "users.file[0].password_hash",
        "users.htpasswd:1",
        "users.inline[0].password_hash",
    ]
    for secret in (MD5_CRYPT, APR1):
        assert all(secret not in message for _, message in issues)


def test_users_whose_login_time_differs_are_warned_about(tmp_path: Path) -> None:
    real = hash_password("alice-pw")
    settings = users_config(inline=(entry("alice", real), entry("bob", BOB_BCRYPT)))

    [warning] = warnings_of(settings)

    assert warning.startswith("users: ")
    assert '"bob"' in warning
    assert '"alice"' not in warning
    assert "gateway hash-password" in warning
    assert warnings_of(users_config(inline=(entry("alice", real),))) == ()
