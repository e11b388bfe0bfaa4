"""Files the configuration names: where they are, and secrets (``*_file`` keys) read now."""

from __future__ import annotations

from pathlib import Path

from gateway.config.values import Invalid

# Secrets are short; a cap keeps a mistaken path (a log file, /dev/zero) from being slurped.
MAX_SECRET_BYTES = 64 * 1024


def resolve(base_dir: Path, name: str) -> Path:
    """``name`` as an absolute path; relative names are taken from ``base_dir``."""
    return base_dir / Path(name).expanduser()


def read_secret(path: Path, *, min_bytes: int = 1) -> bytes:
    """The file's content minus one trailing newline (as Kubernetes Secrets and editors write)."""
    try:
        with path.open("rb") as stream:
            content = stream.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise Invalid(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(content) > MAX_SECRET_BYTES:
        limit = MAX_SECRET_BYTES // 1024
        raise Invalid(f"{path} is larger than {limit} KiB; is it the right file?")
    if content.endswith(b"\r\n"):
        content = content[:-2]
    elif content.endswith(b"\n"):
        content = content[:-1]
    if not content:
        raise Invalid(f"{path} is empty")
    if len(content) < min_bytes:
        # SECURITY: short secrets make sealed cookies and HMAC tokens guessable.
        raise Invalid(
            f"{path} holds {len(content)} bytes; at least {min_bytes} random bytes are required "
            f"(e.g. head -c {min_bytes} /dev/urandom | base64 > {path.name})"
        )
    return content


def read_secret_text(path: Path) -> str:
    """A secret that must be text, e.g. a URL or a password."""
    content = read_secret(path)
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid(f"{path} is not UTF-8 text") from None
