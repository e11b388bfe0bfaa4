"""The loader reads the configuration and every file it names once per load, and everything a
gateway serves comes from that one bundle."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from gateway.app import Gateway
from gateway.bundle import load
from gateway.passwords import hash_password
from gateway.reload import reload
from gateway.tokens import generate_private_key


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[Path]]:
    """How many times each file was opened (every read in the package goes through
    ``Path.open``, ``read_text`` included)."""
    counts: Counter[Path] = Counter()
    real_open = Path.open

    def counting_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        counts[self.resolve()] += 1
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counting_open)
    yield counts


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "users.yaml").write_text(
        f"- {{username: carol, password_hash: '{hash_password('carol-pw')}'}}\n"
    )
    bob = bcrypt.hashpw(b"bob-pw", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "htpasswd").write_text(f"bob:{bob}\n")
    (tmp_path / "signing.pem").write_bytes(generate_private_key("EdDSA")[0])
    (tmp_path / "legacy.secret").write_bytes(b"s" * 32)
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
server: {{listen: "127.0.0.1:8080", public_url: "http://127.0.0.1:8080", data_dir: {tmp_path}/data}}
users:
  inline: [{{username: alice, password_hash: '{hash_password("alice-pw")}'}}]
  file: users.yaml
  htpasswd: htpasswd
tokens:
  signing_keys: [{{file: signing.pem}}, {{hmac_secret_file: legacy.secret, kid: legacy}}]
  api_tokens: {{enabled: true}}
upstreams: {{app: {{url: "http://127.0.0.1:9"}}}}
routes: [{{name: all, match: {{path_prefix: /}}, upstream: app, access: authenticated}}]
"""
    )
    return path


def named_files(config: Path) -> list[Path]:
    return [
        (config.parent / name).resolve()
        for name in ("config.yaml", "users.yaml", "htpasswd", "signing.pem", "legacy.secret")
    ]


async def test_each_file_is_read_once_per_load(config: Path, opened: Counter[Path]) -> None:
    bundle = load(config, generate_key=True)
    gateway = Gateway(bundle)
    await gateway.start()
    try:
        assert [opened[path] for path in named_files(config)] == [1, 1, 1, 1, 1]
        assert bundle.users.usernames() == ("alice", "carol", "bob")
        assert gateway.holder.current.users is bundle.users
        assert [key.kid for key in bundle.keys.keys][1] == "legacy"

        # A reload is one more load: each file read once more, by it alone.
        assert await reload(gateway.holder, config)
        assert [opened[path] for path in named_files(config)] == [2, 2, 2, 2, 2]
    finally:
        await gateway.close()


def test_a_generated_key_is_written_once_and_read_by_nothing_else(
    tmp_path: Path, opened: Counter[Path]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
server: {{listen: "127.0.0.1:8080", public_url: "http://127.0.0.1:8080", data_dir: {tmp_path}/data}}
upstreams: {{app: {{url: "http://127.0.0.1:9"}}}}
routes: [{{name: all, match: {{path_prefix: /}}, upstream: app, access: public}}]
"""
    )
    opened.clear()
    checked = load(path)
    assert checked.keys.ephemeral
    assert not (tmp_path / "data").exists()  # gateway check and explain write nothing

    served = load(path, generate_key=True)
    generated = (tmp_path / "data" / "signing-key.pem").resolve()
    assert generated.exists()
    assert load(path, generate_key=True).keys.signing.kid == served.keys.signing.kid
    # Three loads: the configuration and the key file looked at once by each.
    assert (opened[path.resolve()], opened[generated]) == (3, 3)
