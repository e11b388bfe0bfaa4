"""`gateway check` reports every problem in one run, in file order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.bundle import load
from gateway.config import ConfigError
from tests.configs import USERS, config, dump, route

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
