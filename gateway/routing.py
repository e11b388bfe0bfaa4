"""First-match route selection.

:class:`RouteTable` picks the first route, in configuration order, whose ``match`` accepts the
method, Host and path (the path as :func:`gateway.paths.matching_path` gives it).
:meth:`RouteTable.warnings` finds what the match rules make of a table that its author may not
have meant: routes that can never be picked (:func:`shadowed_routes`), a ``strip_prefix`` that
never applies, and a ``path_prefix`` rule whose resource is also served, under a suffix, by a
laxer route.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.config.settings import AccessSettings, RouteSettings
from gateway.errors import BadRequest
from gateway.hosts import HostPattern, split_host
from gateway.paths import normalise_path

__all__ = ["RouteTable", "shadowed_routes"]


PathKind = Literal["path", "prefix", "regex"]


@dataclass(frozen=True, slots=True)
class _CompiledRoute:
    index: int
    route: RouteSettings
    host: HostPattern | None
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
            host=None if match.host is None else HostPattern.parse(match.host),
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
        the output of :func:`gateway.paths.matching_path`.
        """
        # SECURITY: methods are matched upper-cased so that "get" cannot slip past a GET-only
        # restrictive route to a laxer one, whatever the upstream makes of it.
        method = method.upper()
        host_name, host_port = split_host(host) if self._uses_host else ("", None)
        for route in self._compiled:
            if route.methods is not None and method not in route.methods:
                continue
            if route.host is not None and not route.host.matches(host_name, host_port):
                continue
            if route.matches_path(path):
                return route.route
        return None

    def warnings(self) -> list[str]:
        """Every warning about the table, route by route: a route that never matches (see
        :meth:`shadowed`), else a ``strip_prefix`` that never applies and a ``path_prefix``
        whose resource a laxer route serves under a suffix."""
        warnings: list[str] = []
        for route in self._compiled:
            shadow = self._shadow_of(route)
            if shadow is not None:
                warnings.append(shadow)
                continue  # nothing else about a route that is never picked is worth saying
            for found in (_strip_prefix_miss(route), self._suffix_leak(route)):
                if found is not None:
                    warnings.append(found)
        return warnings

    def shadowed(self) -> list[str]:
        """Warnings for routes that can never match because an earlier route accepts all they
        would.

        One warning per shadowed route, naming the first earlier route that shadows it, e.g.
        ``routes[3] "api": never matches: route "everything-else" (routes[1]) matches every
        request it would``. Conservative: a route is reported only when that is certain (regex
        against regex is only compared for identical patterns).
        """
        return [found for route in self._compiled if (found := self._shadow_of(route))]

    def _shadow_of(self, later: _CompiledRoute) -> str | None:
        for earlier in self._compiled[: later.index]:
            if _covers(earlier, later):
                return (
                    f'routes[{later.index}] "{later.route.name}": never matches: route '
                    f'"{earlier.route.name}" (routes[{earlier.index}]) matches every '
                    "request it would"
                )
        return None

    def _suffix_leak(self, route: _CompiledRoute) -> str | None:
        """A warning when ``route`` is a ``path_prefix`` rule whose last segment, with a suffix
        (``/notes/secrets.json``, ``/notes/secrets-x``), goes to a laxer route on the same
        upstream.

        Prefixes match whole segments, so such names are not under the rule; many apps serve the
        same resource there (another format, a download). Said only when it is so: a route that
        takes such a name for the same upstream and lets in someone this one keeps out. A table
        that sends them to an equally strict route, to another upstream or to no route at all
        (404) gets no warning.
        """
        if route.kind != "prefix" or route.pattern.endswith("/"):
            return None  # "/" and "/static/" hold every name that begins with them
        leaks: list[str] = []
        taker: _CompiledRoute | None = None
        for suffix in LEAK_SUFFIXES:
            probe = route.pattern + suffix
            other = next((o for o in self._compiled if _overlap(o, route, probe)), None)
            if other is None or other.route.upstream != route.route.upstream:
                continue
            if not _laxer(other.route.access, route.route.access):
                continue
            if taker is None or other is taker:
                taker = other
                leaks.append(probe)
        if taker is None:
            return None
        prefix = route.route.match.path_prefix or route.pattern
        shown = " and ".join(f'"{leak}"' for leak in leaks[:2])
        return (
            f'routes[{route.index}] "{route.route.name}": path_prefix "{prefix}" covers whole '
            f"path segments only ({prefix}, {prefix}/...): {shown} "
            f'{"go" if len(leaks) > 1 else "goes"} to route "{taker.route.name}" '
            f"(routes[{taker.index}], {_access_text(taker.route.access)}), a laxer rule on the "
            f'same upstream "{route.route.upstream}". If the app serves the same resource there '
            f"(as /x.json beside /x), use path_regex: '^{_regex_text(prefix)}.*' (every path "
            "beginning with these characters), or have the app serve such forms under a trailing "
            f"segment ({prefix}/data.json), which the prefix covers"
        )


# --------------------------------------------------------------------------------------------
# Shadowed routes
# --------------------------------------------------------------------------------------------


def shadowed_routes(routes: Sequence[RouteSettings]) -> list[str]:
    """:meth:`RouteTable.shadowed` of ``routes``."""
    return RouteTable(routes).shadowed()


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


# --------------------------------------------------------------------------------------------
# Prefix rules that leave suffixed names open; strip_prefix that never applies
# --------------------------------------------------------------------------------------------

LEAK_SUFFIXES = (".json", ".csv", ".txt", ".html", ".xml", "-x", "_x")
"""What is appended to a ``path_prefix`` rule's last segment to look for the same resource
under another name: formats apps commonly offer beside the plain path, and a sibling name."""

_STRICTNESS = {"deny": 0, "rules": 1, "authenticated": 2, "public": 3}


def _laxer(other: AccessSettings, than: AccessSettings) -> bool:
    """Whether ``other`` lets in a caller that ``than`` keeps out."""
    if other.kind == "rules" and than.kind == "rules":
        return bool(other.roles - than.roles or other.users - than.users)
    return _STRICTNESS[other.kind] > _STRICTNESS[than.kind]


def _access_text(access: AccessSettings) -> str:
    if access.kind != "rules":
        return access.kind
    names = [f"role {role}" for role in sorted(access.roles)]
    names += [f"user {user}" for user in sorted(access.users)]
    return ", ".join(names)


def _overlap(other: _CompiledRoute, route: _CompiledRoute, path: str) -> bool:
    """Whether ``other`` takes ``path`` for some request (method, Host) ``route`` also takes."""
    methods = (other.methods, route.methods)
    if methods[0] is not None and methods[1] is not None and not methods[0] & methods[1]:
        return False
    if (
        other.host is not None
        and route.host is not None
        and not (other.host.covers(route.host) or route.host.covers(other.host))
    ):
        return False
    return other.matches_path(path)


def _strip_prefix_miss(route: _CompiledRoute) -> str | None:
    """A warning when no path ``route`` matches begins with its ``strip_prefix`` (a whole
    leading segment, as :func:`gateway.paths.strip_route_prefix` removes it), so the upstream
    always receives the path unchanged."""
    strip = route.route.strip_prefix
    prefix = (strip or "").rstrip("/")
    if not prefix:
        return None  # none, or "/": nothing to remove
    if route.ignore_case:
        prefix = prefix.lower()
    if route.kind == "regex":
        start = _literal_start(route.pattern)
        start = start.lower() if route.ignore_case else start
        # Every match begins with `start`; what follows it is unknown.
        possible = prefix.startswith(start) or start.startswith(prefix + "/")
    elif route.kind == "path":
        possible = route.pattern == prefix or route.pattern.startswith(prefix + "/")
    else:
        pattern = route.pattern
        below = pattern if pattern.endswith("/") else pattern + "/"
        possible = (
            pattern.rstrip("/") == prefix
            or pattern.startswith(prefix + "/")
            or prefix.startswith(below)
        )
    if possible:
        return None
    match = route.route.match
    kind, value = next(
        (key, found)
        for key, found in (
            ("path", match.path),
            ("path_prefix", match.path_prefix),
            ("path_regex", match.path_regex),
        )
        if found is not None
    )
    return (
        f'routes[{route.index}] "{route.route.name}": strip_prefix "{strip}" is never removed: '
        f'no path the route matches ({kind} "{value}") begins with it. strip_prefix removes '
        "whole leading segments of the path the route matched, so it is the route's own "
        f'prefix or the start of it (e.g. path_prefix "/app" with strip_prefix "/app")'
    )


def _regex_text(path: str) -> str:
    """A regex matching ``path`` literally, as a YAML single-quoted string holds it."""
    escaped = "".join(f"\\{char}" if char in _REGEX_SPECIAL else char for char in path)
    return escaped.replace("'", "''")


_REGEX_SPECIAL = frozenset(".^$*+?{}[]\\|()")


def _literal_start(pattern: str) -> str:
    """Characters every match of ``pattern`` begins with (``"/api/v"`` for ``^/api/v[0-9]+/.*``);
    ``""`` when unsure (alternatives, groups, inline flags)."""
    if "|" in pattern:
        return ""
    text = pattern.removeprefix("^")
    start: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            literal = text[index + 1 : index + 2]
            if not literal or literal.isalnum():
                break  # a class (\d, \w) or an anchor, not a character
            width = 2
        elif char in _REGEX_SPECIAL:
            break
        else:
            literal, width = char, 1
        after = text[index + width : index + width + 1]
        if after and after in "*?{":
            break  # may be absent or repeated
        start.append(literal)
        index += width
        if after == "+":
            break
    return "".join(start)
