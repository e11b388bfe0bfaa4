"""Validation of the ``rd`` (return-to) parameter: the classic open-redirect hole of login pages."""

from __future__ import annotations

import unicodedata
from urllib.parse import unquote

MAX_RD_LENGTH = 2048
# Enough rounds to see through any double/triple encoding a browser or a proxy might undo.
_DECODE_ROUNDS = 4


def safe_redirect(rd: str | None) -> str:
    """``rd`` when it is a safe same-origin path, else ``/``.

    Honoured only when it is a relative path starting with exactly one ``/`` and holding no
    backslash, whitespace or control character, raw or percent-encoded (at any depth of
    encoding, since browsers and upstreams may decode more than once).
    """
    if not rd or len(rd) > MAX_RD_LENGTH:
        return "/"
    candidate = rd
    for _ in range(_DECODE_ROUNDS + 1):
        if not _safe_once(candidate):
            return "/"
        decoded = unquote(candidate)
        if decoded == candidate:
            return rd
        candidate = decoded
    # SECURITY: still changing after several rounds of decoding: nobody needs that.
    return "/"


def _safe_once(path: str) -> bool:
    # SECURITY: "//evil" and "/\evil" are protocol-relative to browsers; "https:" never starts "/".
    if not path.startswith("/") or path.startswith("//"):
        return False
    for char in path:
        if char == "\\" or char.isspace():
            return False
        # Cc: controls (tab, CR, LF, NUL...); Cf: invisible format characters (bidi overrides).
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Zs"):
            return False
    return True
