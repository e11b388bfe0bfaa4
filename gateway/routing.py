"""Path normalisation and first-match route selection.

The request path is normalised once (:func:`normalise_path`); that single string is what routes
match, what access is decided on, and what the upstream receives, so what was authorised is what
is served. :class:`RouteTable` then picks the first route, in configuration order, whose ``match``
accepts the method, Host and path. :func:`shadowed_routes` finds routes that can never be picked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.config.settings import RouteSettings
from gateway.errors import BadRequest, NotFound

__all__ = ["RouteTable", "normalise_path", "shadowed_routes"]

# --------------------------------------------------------------------------------------------
# Path normalisation
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Route matching
# --------------------------------------------------------------------------------------------

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


PathKind = Literal["path", "prefix", "regex"]


@dataclass(frozen=True, slots=True)
class _HostMatch:
    name: str
    """The exact host name, or for a wildcard the parent domain (``example.com``)."""
    wildcard: bool
    port: int | None
    """None: any port (and none)."""

    @classmethod
    def parse(cls, pattern: str) -> _HostMatch:
        pattern = pattern.lower()
        port: int | None = None
        name, sep, port_text = pattern.rpartition(":")
        if sep and port_text.isdigit():
            port = int(port_text)
        else:
            name = pattern
        if name.startswith("*."):
            return cls(name=name[2:], wildcard=True, port=port)
        return cls(name=name, wildcard=False, port=port)

    def matches(self, name: str, port: int | None) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.wildcard:
            label, dot, parent = name.partition(".")
            return bool(label) and bool(dot) and parent == self.name
        return name == self.name

    def covers(self, other: _HostMatch) -> bool:
        """True when every Host this accepts ``other`` also accepts (certain, not heuristic)."""
        if self.port is not None and self.port != other.port:
            return False
        if other.wildcard:
            return self.wildcard and self.name == other.name
        return self.matches(other.name, other.port)


def _split_host(host: str) -> tuple[str, int | None]:
    """Host header value -> (lower-case name without a trailing dot, port or None)."""
    host = host.strip().lower()
    port: int | None = None
    if host.startswith("["):  # IPv6 literal: "[::1]:8080"
        end = host.find("]")
        if end != -1:
            rest = host[end + 1 :]
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
            host = host[: end + 1]
        return host, port
    name, sep, port_text = host.rpartition(":")
    if sep and port_text.isdigit():
        host, port = name, int(port_text)
    elif sep and not port_text:  # "example.com:" - an empty port means the default one
        host = name
    # SECURITY: "admin.example.com." is the same DNS name as "admin.example.com"; without this a
    # trailing dot would skip a host-restricted route and fall through to a laxer one.
    return host.removesuffix("."), port


@dataclass(frozen=True, slots=True)
class _CompiledRoute:
    index: int
    route: RouteSettings
    host: _HostMatch | None
    methods: frozenset[str] | None
    kind: PathKind
    pattern: str
    """Normalised path or prefix (lower-cased when ignore_case), or the regex source."""
    regex: re.Pattern[str] | None
    ignore_case: bool

    @classmethod
    def build(cls, index: int, route: RouteSettings) -> _CompiledRoute:
        match = route.match
        methods: frozenset[str] | None = None
        if match.methods is not None:
            methods = frozenset(m.upper() for m in match.methods)
            if "GET" in methods:
                # SECURITY: HEAD is GET without a body (RFC 9110) and upstream frameworks answer
                # it with the GET handler; letting it fall through to a later, laxer route would
                # leak the GET response's headers.
                methods |= {"HEAD"}
        regex: re.Pattern[str] | None = None
        kind: PathKind
        if match.path is not None:
            kind, pattern = "path", _normalise_pattern(route, "path", match.path)
        elif match.path_prefix is not None:
            kind, pattern = "prefix", _normalise_pattern(route, "path_prefix", match.path_prefix)
        elif match.path_regex is not None:
            kind, pattern = "regex", match.path_regex
            try:
                regex = re.compile(pattern, re.IGNORECASE if match.ignore_case else 0)
            except re.error as exc:
                raise ValueError(
                    f"route {route.name!r}: match.path_regex {pattern!r} is invalid: {exc}"
                ) from None
        else:
            raise ValueError(f"route {route.name!r}: match needs path, path_prefix or path_regex")
        if match.ignore_case and kind != "regex":
            pattern = pattern.lower()
        return cls(
            index=index,
            route=route,
            host=None if match.host is None else _HostMatch.parse(match.host),
            methods=methods,
            kind=kind,
            pattern=pattern,
            regex=regex,
            ignore_case=match.ignore_case,
        )

    def matches_path(self, path: str) -> bool:
        """``path`` is normalised; it is lower-cased here when this route ignores case."""
        if self.regex is not None:
            return self.regex.fullmatch(path) is not None
        if self.ignore_case:
            path = path.lower()
        if self.kind == "path":
            return path == self.pattern
        return _prefix_matches(self.pattern, path)


def _prefix_matches(prefix: str, path: str) -> bool:
    # A prefix ending in "/" names a directory's contents: "/static/" matches "/static/" and
    # "/static/x" but not "/static". Otherwise the prefix is a whole segment: "/admin" matches
    # "/admin", "/admin/" and "/admin/x" but not "/administrator".
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def _normalise_pattern(route: RouteSettings, key: str, value: str) -> str:
    # Configured paths go through the same normalisation as requests so that "/%7Euser" or
    # "/a/./b" in the YAML still match what clients send.
    try:
        return normalise_path(value)
    except BadRequest as exc:
        raise ValueError(
            f"route {route.name!r}: match.{key} {value!r} is not a valid path: {exc}"
        ) from None


class RouteTable:
    """The configured routes, compiled once; :meth:`match` returns the first that accepts a request.

    Matching rules (each route's ``match``; all present conditions must hold):

    - ``host``: compared case-insensitively with the request's Host (a trailing dot ignored).
      ``*.example.com`` accepts exactly one extra label (``a.example.com``, not ``example.com`` nor
      ``a.b.example.com``). A pattern without a port accepts any port; a pattern with a port
      (``example.com:8443``) requires the Host to carry that port, so do not write default ports
      (``:443``), which browsers leave out. A route without ``host`` accepts any Host.
    - ``path``: equal to the normalised path.
    - ``path_prefix``: segment-aware. ``/admin`` accepts ``/admin``, ``/admin/`` and ``/admin/x``
      but not ``/administrator``; a prefix ending in ``/`` (``/static/``) accepts ``/static/`` and
      ``/static/x`` but not ``/static``; ``/`` accepts every path.
    - ``path_regex``: must match the WHOLE normalised path (``re.fullmatch``): write
      ``^/api/v[0-9]+/.*`` for everything under ``/api/v1/``; ``^/api/v[0-9]+/`` alone only accepts
      ``/api/v1/`` itself. A leading ``^`` / trailing ``$`` is allowed and changes nothing.
    - ``methods``: compared upper-cased; a list with GET also accepts HEAD; absent accepts any.
    - ``ignore_case``: path, prefix and regex compare case-insensitively; otherwise ``/ADMIN``
      does not match ``/admin``.

    Configured paths and prefixes are normalised like request paths. Raises ValueError for a
    route whose pattern is invalid (the config loader reports those before building a table).
    """

    __slots__ = ("_compiled", "_routes", "_uses_host")

    def __init__(self, routes: Sequence[RouteSettings]) -> None:
        self._routes = tuple(routes)
        self._compiled = tuple(_CompiledRoute.build(i, r) for i, r in enumerate(self._routes))
        self._uses_host = any(c.host is not None for c in self._compiled)

    @property
    def routes(self) -> tuple[RouteSettings, ...]:
        """The routes in configuration (= matching) order."""
        return self._routes

    def match(self, method: str, host: str, path: str) -> RouteSettings | None:
        """The first route accepting the request, or None.

        ``host`` is the Host header value (may carry a port, any letter case); ``path`` must be
        the output of :func:`normalise_path`.
        """
        # SECURITY: methods are matched upper-cased so that "get" cannot slip past a GET-only
        # restrictive route to a laxer one, whatever the upstream makes of it.
        method = method.upper()
        host_name, host_port = _split_host(host) if self._uses_host else ("", None)
        for route in self._compiled:
            if route.methods is not None and method not in route.methods:
                continue
            if route.host is not None and not route.host.matches(host_name, host_port):
                continue
            if route.matches_path(path):
                return route.route
        return None

    def select(self, method: str, host: str, path: str) -> RouteSettings:
        """Like :meth:`match`, but raises :class:`NotFound` (404) when no route accepts."""
        route = self.match(method, host, path)
        if route is None:
            raise NotFound(f"no route for {method} {host} {path[:_LOG_LIMIT]!r}")
        return route


# --------------------------------------------------------------------------------------------
# Shadowed routes
# --------------------------------------------------------------------------------------------


def shadowed_routes(routes: Sequence[RouteSettings]) -> list[str]:
    """Warnings for routes that can never match because an earlier route accepts all they would.

    One warning per shadowed route, naming the first earlier route that shadows it, e.g.
    ``routes[3] "api": never matches: route "everything-else" (routes[1]) matches every request
    it would``. Conservative: a route is reported only when that is certain (regex against regex
    is only compared for identical patterns). Raises ValueError for an invalid pattern, like
    :class:`RouteTable`.
    """
    compiled = [_CompiledRoute.build(i, r) for i, r in enumerate(routes)]
    warnings: list[str] = []
    for later in compiled:
        for earlier in compiled[: later.index]:
            if _covers(earlier, later):
                warnings.append(
                    f'routes[{later.index}] "{later.route.name}": never matches: route '
                    f'"{earlier.route.name}" (routes[{earlier.index}]) matches every request '
                    "it would"
                )
                break
    return warnings


def _covers(a: _CompiledRoute, b: _CompiledRoute) -> bool:
    """True when route ``a`` certainly accepts every request route ``b`` accepts."""
    if a.host is not None and (b.host is None or not a.host.covers(b.host)):
        return False
    if a.methods is not None and (b.methods is None or not b.methods <= a.methods):
        return False
    return _path_covers(a, b)


def _caseless(text: str) -> bool:
    return text.lower() == text.upper()


def _path_covers(a: _CompiledRoute, b: _CompiledRoute) -> bool:
    if a.kind == "prefix" and a.pattern == "/":
        return True
    if b.ignore_case and not a.ignore_case:
        # b also accepts every case variant of its paths; a case-sensitive a accepts them all
        # only if a's own pattern has no letters, or b is one exact path without letters.
        a_invariant = a.kind != "regex" and _caseless(a.pattern)
        b_single = b.kind == "path" and _caseless(b.pattern)
        if not (a_invariant or b_single):
            return False
    if b.kind == "path":
        # b accepts one path (and, ignoring case, its variants, handled above): test it on a.
        return a.matches_path(b.pattern)
    if b.kind == "prefix":
        # Every path under b's prefix is under a's prefix exactly when a accepts the prefix itself
        # (both forms of prefix are closed under extension by "/..."), see _prefix_matches.
        return a.kind == "prefix" and a.matches_path(b.pattern)
    # b is a regex: only an identical regex, at least as case-insensitive, is certain to cover it.
    return a.kind == "regex" and a.pattern == b.pattern and (a.ignore_case or not b.ignore_case)
