"""The user store: loading inline users, users.file and htpasswd, and authenticating logins."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import bcrypt
import pytest
from argon2 import PasswordHasher

from gateway import passwords
from gateway.config.settings import UserEntry, UsersSettings
from gateway.identity import users
from gateway.identity.users import User, UserDirectory, UsersError, load_users
from gateway.passwords import dummy_hash, hash_password

# Pre-generated, cheap hashes keep the loading tests fast; hash_password's real parameters are
# used by the authentication tests below.
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
ALICE_HASH = CHEAP.hash("alice-pw")
BOB_BCRYPT = bcrypt.hashpw(b"bob-pw", bcrypt.gensalt(rounds=4)).decode()
MD5_CRYPT = "$1$saltsalt$qjXMvbEw8oaL.CzflDugX/"
APR1 = "$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/"
SHA1 = "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="


def entry(username: str, password_hash: str = ALICE_HASH, **kwargs: object) -> UserEntry:
    return UserEntry(username=username, password_hash=password_hash, **kwargs)  # type: ignore[arg-type]


def write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


def issues_of(settings: UsersSettings) -> list[tuple[str, str]]:
    with pytest.raises(UsersError) as raised:
        load_users(settings)
    return raised.value.issues


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
    settings = UsersSettings(
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


def test_user_repr_hides_the_password_hash() -> None:
    user = User(username="alice", roles=frozenset({"admin"}), password_hash=ALICE_HASH)

    assert "alice" in repr(user)
    assert ALICE_HASH not in repr(user)
    assert "password_hash" not in repr(user)


def test_lookup_is_exact() -> None:
    directory = load_users(UsersSettings(inline=(entry("alice"),)))

    assert directory.get("alice") is not None
    assert directory.get("Alice") is None
    assert directory.get("alice ") is None


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
def test_bcrypt_variants_load_from_every_source(tmp_path: Path, prefix: str) -> None:
    variant = prefix + BOB_BCRYPT[4:]
    settings = UsersSettings(
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
    settings = UsersSettings(inline=(entry("alice"), entry("bob", bad_hash)))

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

    [(path, message)] = issues_of(UsersSettings(file=users_file))

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

    [(path, message)] = issues_of(UsersSettings(htpasswd=htpasswd))

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

    directory = load_users(UsersSettings(htpasswd=htpasswd))

    assert directory.usernames() == ("alice", "bob")


def test_htpasswd_line_without_colon_is_reported_without_echoing_it(tmp_path: Path) -> None:
    htpasswd = write(tmp_path, ".htpasswd", "\n# x\nmy-secret-password\n")

    assert issues_of(UsersSettings(htpasswd=htpasswd)) == [
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
    settings = UsersSettings(inline=(entry("alice"),), file=users_file, htpasswd=htpasswd)

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
    [(path, message)] = issues_of(UsersSettings(inline=(entry(username),)))

    assert path == "users.inline[0].username"
    assert "username" in message


@pytest.mark.parametrize("username", BAD_USERNAMES)
def test_bad_usernames_are_refused_in_htpasswd(tmp_path: Path, username: str) -> None:
    htpasswd = write(tmp_path, ".htpasswd", f"ok:{BOB_BCRYPT}\n{username}:{BOB_BCRYPT}\n")

    [(path, message)] = issues_of(UsersSettings(htpasswd=htpasswd))

    assert path == "users.htpasswd:2"
    assert "username" in message
    assert BOB_BCRYPT not in message


def test_longest_allowed_username_loads() -> None:
    name = "x" * users.MAX_USERNAME_LENGTH
    assert name in load_users(UsersSettings(inline=(entry(name),)))


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

    assert issues_of(UsersSettings(file=users_file)) == expected


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

    [(path, message)] = issues_of(UsersSettings(file=users_file))

    assert path == "users.file"
    assert says in message
    assert ALICE_HASH not in message  # YAML errors quote the source line; ours must not


def test_empty_users_file_means_no_users(tmp_path: Path) -> None:
    users_file = write(tmp_path, "users.yaml", "# nobody yet\n")

    assert len(load_users(UsersSettings(file=users_file))) == 0


def test_unreadable_sources_are_reported(tmp_path: Path) -> None:
    settings = UsersSettings(file=tmp_path / "missing.yaml", htpasswd=tmp_path)

    issues = issues_of(settings)

    assert [path for path, _ in issues] == ["users.file", "users.htpasswd"]
    assert "cannot read" in issues[0][1]
    assert "missing.yaml" in issues[0][1]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    users_file = write(tmp_path, "users.yaml", f"- {{username: x, password_hash: '{MD5_CRYPT}'}}\n")
    htpasswd = write(tmp_path, ".htpasswd", f"y:{APR1}\n")
    settings = UsersSettings(inline=(entry("w", "plain"),), file=users_file, htpasswd=htpasswd)

    with pytest.raises(UsersError) as raised:
        load_users(settings)

    assert [path for path, _ in raised.value.issues] == [
        "users.inline[0].password_hash",
        "users.file[0].password_hash",
        "users.htpasswd:1",
    ]
    assert str(raised.value).splitlines()[0].startswith("users.inline[0].password_hash: ")
    for secret in (MD5_CRYPT, APR1):
        assert secret not in str(raised.value)


def test_users_whose_login_time_differs_are_warned_about(tmp_path: Path) -> None:
    real = hash_password("alice-pw")
    settings = UsersSettings(inline=(entry("alice", real), entry("bob", BOB_BCRYPT)))

    [warning] = load_users(settings).warnings

    assert '"bob"' in warning
    assert '"alice"' not in warning
    assert "gateway hash-password" in warning
    assert load_users(UsersSettings(inline=(entry("alice", real),))).warnings == ()


# --- authentication ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_hash() -> str:
    """A hash made by hash_password itself, with the production parameters."""
    return hash_password("alice-pw")


@pytest.fixture
def directory(real_hash: str) -> UserDirectory:
    return UserDirectory(
        [
            User(username="alice", roles=frozenset({"admin"}), password_hash=real_hash),
            User(username="bob", password_hash=BOB_BCRYPT),
        ]
    )


@pytest.mark.parametrize(
    ("username", "password", "expected"),
    [
        ("alice", "alice-pw", "alice"),
        ("bob", "bob-pw", "bob"),
        ("alice", "bob-pw", None),
        ("bob", "alice-pw", None),
        ("alice", "", None),
        ("Alice", "alice-pw", None),
        ("nobody", "alice-pw", None),
        ("", "", None),
    ],
    ids=[
        "argon2id",
        "bcrypt",
        "argon2id-wrong",
        "bcrypt-wrong",
        "empty-password",
        "case",
        "unknown",
        "empty-username",
    ],
)
async def test_authenticate(
    directory: UserDirectory, username: str, password: str, expected: str | None
) -> None:
    user = await directory.authenticate(username, password)

    assert (user.username if user else None) == expected


class VerifySpy:
    """Records each verify_password call (hash, thread name), then runs the real one."""

    def __init__(self, result: bool | None = None, delay_s: float = 0.0) -> None:
        self.calls: list[tuple[str, str]] = []
        self.threads: list[int] = []
        self.result = result
        self.delay_s = delay_s
        self.real = passwords.verify_password

    def __call__(self, password_hash: str, password: str) -> bool:
        self.calls.append((password_hash, threading.current_thread().name))
        self.threads.append(threading.get_ident())
        if self.delay_s:
            time.sleep(self.delay_s)
        verified = self.real(password_hash, password)
        return verified if self.result is None else self.result


async def test_unknown_user_is_verified_against_the_dummy_hash(
    directory: UserDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = VerifySpy()
    monkeypatch.setattr(passwords, "verify_password", spy)

    assert await directory.authenticate("nobody", "alice-pw") is None

    assert [hashed for hashed, _ in spy.calls] == [dummy_hash()]


async def test_unknown_user_is_refused_even_if_the_dummy_matched(
    directory: UserDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(passwords, "verify_password", VerifySpy(result=True))

    assert await directory.authenticate("nobody", "anything") is None


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("alice", "x" * (passwords.MAX_PASSWORD_BYTES + 1)),
        ("alice", "\u00e9" * (passwords.MAX_PASSWORD_BYTES // 2 + 1)),  # 2 bytes a character
        ("x" * (users.MAX_USERNAME_LENGTH + 1), "alice-pw"),
    ],
    ids=["long-password", "long-utf8-password", "long-username"],
)
async def test_over_long_input_fails_but_costs_a_verification(
    directory: UserDirectory, monkeypatch: pytest.MonkeyPatch, username: str, password: str
) -> None:
    spy = VerifySpy(result=True)
    monkeypatch.setattr(passwords, "verify_password", spy)

    assert await directory.authenticate(username, password) is None

    assert [hashed for hashed, _ in spy.calls] == [dummy_hash()]


async def test_authentication_runs_off_the_event_loop(
    directory: UserDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The extra sleep stands in for a slow machine and makes the logins last long enough to
    # count ticks on a fast one; on the loop it would freeze the ticker like a real hash does.
    spy = VerifySpy(delay_s=0.1)
    monkeypatch.setattr(passwords, "verify_password", spy)
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            await asyncio.sleep(0.005)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    results = await asyncio.gather(
        directory.authenticate("alice", "alice-pw"),
        directory.authenticate("alice", "wrong"),
        directory.authenticate("bob", "bob-pw"),
        directory.authenticate("nobody", "x"),
    )
    done.set()
    await ticking

    assert ticks >= 5  # the loop kept serving other tasks while the hashes were computed
    assert threading.get_ident() not in spy.threads
    assert [user.username if user else None for user in results] == ["alice", None, "bob", None]
    assert len(spy.calls) == 4


async def test_default_executor_is_a_dedicated_pool_sized_to_the_cpus(
    directory: UserDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = VerifySpy()
    monkeypatch.setattr(passwords, "verify_password", spy)

    await directory.authenticate("bob", "bob-pw")

    [(_, thread_name)] = spy.calls
    assert thread_name.startswith("gateway-password")
    assert users._password_executor()._max_workers == users._cpu_count()


def test_directory_refuses_duplicate_usernames() -> None:
    alice = User(username="alice", password_hash=ALICE_HASH)

    with pytest.raises(ValueError, match="duplicate username"):
        UserDirectory([alice, alice])
