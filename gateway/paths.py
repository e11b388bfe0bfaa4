"""Request paths: the one normalised form every later stage uses, the form routes match on, and
the prefix a route strips.

:func:`normalise_path` gives the single string that routes match (through
:func:`matching_path`), that access is decided on, and that the upstream receives, so what was
authorised is what is served.
"""

from __future__ import annotations

import re

from gateway.errors import BadRequest

__all__ = ["matching_path", "normalise_path", "strip_route_prefix"]

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")

# RFC 3986 path characters (unreserved, sub-delims, ":", "@", "/"), plus "[", "]", "|" and "^",
# which browsers send unencoded in paths (WHATWG URL) although RFC 3986 does not allow them.
# They carry no path structure, so tolerating them costs nothing. "%" is checked separately.
_PATH_CHARS = r"A-Za-z0-9\-._~!$&'()*+,;=:@\[\]|^"
_INVALID_RAW = re.compile(rf"[^{_PATH_CHARS}/%]")
# A path made only of "/"-led non-empty segments of plain characters: no "%", no "//". Checked
# together with `"/." not in path` (no dot-segments) it needs no rewriting at all.
_PLAIN_PATH = re.compile(rf"(?:/[{_PATH_CHARS}]+)*/?")

# SECURITY: an encoded "/" or "\" would let one segment hide a separator the upstream may decode
# later (/public/..%2fadmin); encoded control characters hide NUL truncation and header/log
# injection. All are refused rather than kept, since no legitimate client needs them.
_REFUSED_ENCODED = frozenset((0x2F, 0x5C, 0x7F, *range(0x20)))

_LOG_LIMIT = 200


def _refuse(reason: str, detail: str, raw_path: str) -> BadRequest:
    shown = raw_path if len(raw_path) <= _LOG_LIMIT else raw_path[:_LOG_LIMIT] + "..."
    # repr() so control characters cannot forge log lines.
    return BadRequest(f"{detail}: {shown!r}", reason=reason)


def normalise_path(raw_path: str) -> str:
    """Return the canonical form of a request path, or raise :class:`BadRequest` (400).

    ``raw_path`` is the path of the request-target exactly as received, without the query string.

    Produced form:

    - percent-encoded unreserved characters (``A-Z a-z 0-9 - . _ ~``) are decoded, once:
      ``/%61dmin`` -> ``/admin``, ``/%2e%2e/x`` is a dot-segment; ``%252F`` stays ``%252F``;
    - every other percent-encoding is kept with upper-case hex digits: ``%3a`` -> ``%3A``;
    - repeated slashes are collapsed (before dot-segments are resolved: ``/a//../b`` -> ``/b``);
    - dot-segments are resolved as in RFC 3986 section 5.2.4: ``/a/./b/../c`` -> ``/a/c``,
      ``/a/..`` -> ``/``, ``/a/.`` -> ``/a/``;
    - a trailing slash is kept: ``/admin/`` stays ``/admin/``.

    Refused with 400:

    - a path not starting with ``/`` (including the empty path, ``*`` and absolute-form targets);
    - ``%2F`` / ``%5C`` (encoded slash or backslash) in any letter case, and a raw backslash;
    - control characters, raw or encoded (``%00``-``%1F``, ``%7F``);
    - malformed percent-encoding (``%G1``, a trailing ``%`` or ``%4``);
    - a path that climbs above ``/`` (``/..``, ``/a/../..``, ``/%2e%2e/x``);
    - a ``.`` or ``..`` segment carrying ``;`` parameters (``/..;/admin``), which Java servlet
      containers resolve as a dot-segment behind the proxy's back;
    - any raw character outside the RFC 3986 path set: space, ``"``, ``<``, ``>``, `````, ``{``,
      ``}``, ``#``, ``?`` and non-ASCII (clients must percent-encode them). ``[``, ``]``, ``|`` and
      ``^`` are tolerated because browsers send them unencoded.
    """
    # Hot path: most paths need no rewriting. One regex scan plus one substring test.
    if raw_path[:1] == "/" and "/." not in raw_path and _PLAIN_PATH.fullmatch(raw_path):
        return raw_path
    if raw_path[:1] != "/":
        raise _refuse("path_not_absolute", "path does not start with /", raw_path)
    _check_raw_characters(raw_path)
    decoded = _decode_unreserved(raw_path)
    return _resolve_segments(decoded, raw_path)


def _check_raw_characters(raw_path: str) -> None:
    bad = _INVALID_RAW.search(raw_path)
    if bad is None:
        return
    char = bad.group()
    if char == "\\":
        # SECURITY: many servers (IIS, some frameworks) treat "\" as "/": a traversal vector.
        raise _refuse("path_backslash", "backslash in path", raw_path)
    if char < " " or char == "\x7f":
        raise _refuse("path_control_char", "control character in path", raw_path)
    raise _refuse("path_invalid_char", f"character {char!r} not allowed in a path", raw_path)


def _decode_unreserved(path: str) -> str:
    if "%" not in path:
        return path
    head, *encoded = path.split("%")
    out = [head]
    for part in encoded:
        pair = part[:2]
        if len(pair) != 2 or not _HEXDIGITS.issuperset(pair):
            raise _refuse("path_bad_encoding", "malformed percent-encoding", path)
        byte = int(pair, 16)
        if byte in _REFUSED_ENCODED:
            if byte in (0x2F, 0x5C):
                raise _refuse("path_encoded_slash", "encoded slash or backslash in path", path)
            raise _refuse("path_control_char", "encoded control character in path", path)
        char = chr(byte)
        # Decoded exactly once: the "%" of "%25" stays encoded, so "%252F" remains literal text.
        out.append(char if char in _UNRESERVED else "%" + pair.upper())
        out.append(part[2:])
    return "".join(out)


def _resolve_segments(path: str, raw_path: str) -> str:
    segments = path.split("/")[1:]
    # A final "", "." or ".." segment means the result names a directory: keep its trailing "/".
    trailing_slash = segments[-1] in ("", ".", "..")
    stack: list[str] = []
    for segment in segments:
        if segment == "" or segment == ".":
            continue
        if segment == "..":
            if not stack:
                # SECURITY: refuse rather than clamp at "/": a client climbing above the root is
                # probing, and a clamped path would differ from what a lenient upstream resolves.
                raise _refuse("path_traversal", "path climbs above /", raw_path)
            stack.pop()
            continue
        if segment.startswith((".;", "..;")):
            # SECURITY: Tomcat/Jetty strip ";params" and then see "." or "..": /public/..;/admin.
            raise _refuse("path_traversal", "dot-segment with parameters in path", raw_path)
        stack.append(segment)
    if not stack:
        return "/"
    return "/" + "/".join(stack) + ("/" if trailing_slash else "")


def matching_path(path: str) -> str:
    """``path`` as a servlet container maps it: what routes (and the reserved prefix) match.

    Java servlet containers (Tomcat, Jetty) and Spring drop each segment's ``;parameters`` and
    then collapse the empty segments that leaves: ``/admin;jsessionid=1/users``, ``/;/admin/users``
    and ``/;x/admin/users`` are all ``/admin/users`` to them. Matching on the path as such an
    upstream will read it means a rule on ``/admin`` also covers those spellings. ``path`` is
    already normalised (dot-segments resolved, ``//`` collapsed); a trailing ``/`` or ``/;x``
    keeps its trailing slash. The upstream still receives ``path`` itself (session ids in URLs
    keep working, and a servlet upstream reads it exactly as matched here).
    """
    if ";" not in path:
        return path
    # SECURITY: match what a servlet upstream will serve, not what the bytes look like: an
    # empty segment left by "/;/" must not hide "/admin" behind "//admin" (which no route with
    # path_prefix /admin matches, so the request fell through to a laxer rule).
    segments = [segment.partition(";")[0] for segment in path.split("/")[1:]]
    kept = [segment for segment in segments if segment]
    if not kept:
        return "/"
    return "/" + "/".join(kept) + ("/" if segments[-1] == "" else "")


def strip_route_prefix(path: str, strip: str | None, ignore_case: bool) -> tuple[str, str]:
    """``(upstream path, prefix removed)``: ``/api`` turns ``/api/v1/x`` into ``/v1/x`` and
    ``/api`` into ``/``; a path outside the prefix (segment-wise) is left alone."""
    if not strip:
        return path, ""
    prefix = strip.rstrip("/")
    if not prefix:
        return path, ""
    size = len(prefix)
    head = path[:size]
    if (head.lower() == prefix.lower() if ignore_case else head == prefix) and (
        len(path) == size or path[size] == "/"
    ):
        return path[size:] or "/", head
    return path, ""
