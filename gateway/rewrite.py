"""The upstream's own URLs in response headers, turned into what the client must use.

An app behind ``strip_prefix: /pypi`` sees ``/simple`` where the browser asked for
``/pypi/simple``; when it answers ``Location: /simple/`` or ``Set-Cookie: ...; Path=/``, the
browser would leave the route. The functions here map the app's paths back:

- ``Location`` / ``Content-Location`` (:func:`rewrite_location`):

  * an absolute URL on the upstream's own origin (``http://127.0.0.1:9000/x``, or scheme-relative
    ``//127.0.0.1:9000/x``) becomes ``public_url`` with the public path;
  * an absolute URL on the gateway's own host (the request's ``Host``, or ``public_url``'s), as
    apps that build links from ``Host`` or ``X-Forwarded-Host`` write them, keeps its scheme and
    authority and gets the public path;
  * an absolute path (``/simple/``) gets the public path;
  * a relative reference (``simple/``, ``../x``) is resolved against the path the upstream was
    asked for and then gets the public path, so ``..`` cannot climb out of the route; a
    reference to the same document (``?q``, ``#f``, empty) is left alone;
  * anything else (another host, another port, ``mailto:``...) is left untouched.

  The public path of an app path: dot-segments resolved and ``\\`` read as ``/`` (as browsers
  do), the upstream URL's base path taken off, then the stripped prefix put in front. A path
  already under the prefix is kept as it is (an app that honours ``X-Forwarded-Prefix`` or is
  configured with its own base URL already wrote it), and so is a path under the gateway's own
  ``/.gateway/`` (an app sending its users to the gateway's sign-out page). The query and the
  fragment are kept byte-exact.

- ``Set-Cookie`` (:func:`rewrite_set_cookie`): every ``Path`` attribute gets the public path
  (``Path=/`` -> ``Path=/pypi``, ``Path=/x`` -> ``Path=/pypi/x``, ``/pypi/...`` kept); a cookie
  without a valid ``Path`` is left to the browser's default (the directory of the public path,
  already under the prefix) except on the route's root, where that default would be ``/``:
  there it gets ``Path=<prefix>``. ``__Host-`` cookies keep ``Path=/``, which browsers require.

Nothing changes for a route without ``strip_prefix`` whose upstream URL has no path, except
absolute URLs on the upstream's own origin.

SECURITY: every path produced starts with the prefix (or ``/.gateway/``) and holds no dot-segment,
backslash or empty segment, so a browser resolving it can neither leave the route nor read it as
another host (``//evil.example``, ``/\\evil.example``); URLs on hosts other than the upstream's
and the gateway's are never rewritten, so nothing is ever made to point at a foreign host.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final

from yarl import URL

__all__ = [
    "GATEWAY_PREFIX",
    "Mount",
    "rewrite_location",
    "rewrite_response_headers",
    "rewrite_set_cookie",
]

GATEWAY_PREFIX: Final = "/.gateway/"
"""The gateway's own prefix (``plan.RESERVED_PREFIX``): paths under it are never mapped."""

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_MAX_HOST_PORT: Final = 300
"""Longer than any ``host:port`` (a DNS name is at most 253 characters)."""
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
# What browsers (WHATWG URL) ignore: C0 controls and spaces around the URL, tabs and newlines in it.
_C0_AND_SPACE: Final = "".join(map(chr, range(0x21)))
_NO_TAB_NEWLINE: Final = str.maketrans("", "", "\t\n\r")
_DOT: Final = frozenset({".", "%2e"})
_DOT_DOT: Final = frozenset({"..", ".%2e", "%2e.", "%2e%2e"})


@dataclass(slots=True, kw_only=True)
class Mount:
    """Where the upstream's paths appear to the client, for one request (built for every
    response: not frozen, since a frozen dataclass costs several times as much to build)."""

    upstream_url: str
    """The upstream's base URL (``upstreams.<name>.url``), its path prepended to every request."""
    public_url: str
    """``server.public_url``: where URLs on the upstream's own origin are sent."""
    prefix: str
    """What ``strip_prefix`` removed from this request's path, or ``""``."""
    upstream_path: str
    """The path the upstream was asked for, without the upstream URL's base path."""
    request_host: str
    """The ``Host`` the client asked for (``X-Forwarded-Host`` from a trusted proxy)."""
    request_scheme: str
    """The scheme the client used (``X-Forwarded-Proto`` from a trusted proxy)."""
    ignore_case: bool = False
    """The route matches case-insensitively: a path under the prefix in any case is public."""


REWRITTEN_HEADERS = frozenset({"location", "content-location", "set-cookie"})
"""The response headers (lower case) :func:`rewrite_response_headers` may change."""


def rewrite_response_headers(headers: list[tuple[str, str]], mount: Mount) -> None:
    """Rewrite, in place, the ``Location``, ``Content-Location`` and ``Set-Cookie`` values of
    ``headers`` (the upstream's response headers) for ``mount`` (:data:`REWRITTEN_HEADERS`)."""
    for i, (name, value) in enumerate(headers):
        lname = name.lower()
        if lname == "location" or lname == "content-location":
            headers[i] = (name, rewrite_location(value, mount))
        elif lname == "set-cookie":
            headers[i] = (name, rewrite_set_cookie(value, mount))


@dataclass(frozen=True, slots=True)
class _Upstream:
    scheme: str
    host: str
    port: int | None
    base_path: str


@functools.lru_cache(maxsize=256)
def _upstream(url: str) -> _Upstream:
    parsed = URL(url)
    return _Upstream(
        scheme=parsed.scheme,
        host=(parsed.host or "").lower(),
        port=parsed.port,
        base_path=parsed.raw_path.rstrip("/"),
    )


def rewrite_location(value: str, mount: Mount) -> str:
    """The ``Location`` (or ``Content-Location``) the client receives for the upstream's
    ``value``: see the module's docstring."""
    # Read the value as a browser does before deciding anything about it.
    cleaned = value.strip(_C0_AND_SPACE).translate(_NO_TAB_NEWLINE)
    upstream = _upstream(mount.upstream_url)
    remaps = bool(mount.prefix or upstream.base_path)
    scheme_match = _SCHEME.match(cleaned)
    if scheme_match is not None:
        scheme = scheme_match.group()[:-1].lower()
        if scheme not in _DEFAULT_PORTS:
            return value  # mailto:, javascript:, ftp:...: not ours to touch
        rest = _slashes(cleaned[scheme_match.end() :])
        if not rest.startswith("//"):
            return value  # "http:x": relative in a browser only on a page of the same scheme
        return _rewrite_absolute(value, scheme, rest[2:], mount, upstream, remaps)
    cleaned = _slashes(cleaned)
    if cleaned.startswith("//"):  # scheme-relative (also "/\host", which browsers read so)
        return _rewrite_absolute(value, "", cleaned[2:], mount, upstream, remaps)
    if cleaned.startswith("/"):
        if not remaps:
            return value
        path, tail = _split_path(cleaned)
        return _public_path(path, mount, upstream) + tail
    if not mount.prefix or cleaned[:1] in ("", "?", "#"):
        # Without a prefix a browser resolves it exactly as the app meant; "", "?q" and "#f"
        # name the document itself, which is inside the route.
        return value
    # Resolved against what the app saw, so that "simple/" from the route's root (/pypi, the
    # app's /) and "../.." name what the app meant, inside the route.
    path, tail = _split_path(cleaned)
    base = upstream.base_path + mount.upstream_path
    return _public_path(base[: base.rfind("/") + 1] + path, mount, upstream) + tail


def _rewrite_absolute(
    value: str, scheme: str, rest: str, mount: Mount, upstream: _Upstream, remaps: bool
) -> str:
    """``scheme://rest`` (``scheme`` empty: scheme-relative, ``rest`` after ``//``)."""
    end = len(rest)
    for delimiter in "/?#":
        index = rest.find(delimiter)
        if index != -1 and index < end:
            end = index
    authority, tail = rest[:end], rest[end:]
    if _is_upstream(scheme or upstream.scheme, authority, upstream):
        path, tail = _split_path(tail)
        return mount.public_url + _public_path(path or "/", mount, upstream) + tail
    if remaps and _is_gateway(scheme or mount.request_scheme, authority, mount):
        path, tail = _split_path(tail)
        origin = f"{scheme}://{authority}" if scheme else f"//{authority}"
        return origin + _public_path(path or "/", mount, upstream) + tail
    return value


def _is_upstream(scheme: str, authority: str, upstream: _Upstream) -> bool:
    if scheme != upstream.scheme:
        return False
    found = _host_port(scheme, authority.rpartition("@")[2])
    if found is None:
        return False
    port = upstream.port if upstream.port != _DEFAULT_PORTS.get(scheme) else None
    return found == (upstream.host, port)


def _is_gateway(scheme: str, authority: str, mount: Mount) -> bool:
    """The authority names the gateway itself: the request's Host or public_url's host, with
    the same port (a default port written or not; the scheme may differ, as it does for an app
    that does not know the client came over https)."""
    found = _host_port(scheme, authority.rpartition("@")[2])
    if found is None:
        return False
    return found == _host_port(mount.request_scheme, mount.request_host) or found == _public(
        mount.public_url
    )


@functools.lru_cache(maxsize=256)
def _host_port(scheme: str, host: str) -> tuple[str, int | None] | None:
    """``(host, port)`` of ``host[:port]`` (default port: ``None``), or ``None`` for what can
    name neither the upstream nor the gateway."""
    # SECURITY: an upstream's header can hold 16 KiB of non-ASCII host, which costs yarl a
    # tenth of a second to IDNA-encode; a response of such headers would stall the worker.
    # Hosts in HTTP headers are ASCII (IDNA A-labels), a DNS name at most 253 characters.
    if not host or len(host) > _MAX_HOST_PORT or not host.isascii():
        return None
    try:
        parsed = URL(f"{scheme or 'http'}://{host}")
        # Decoding an A-label happens here, and fails on one no IDNA decoder accepts
        # ("xn--a"): a UnicodeError, which is a ValueError.
        name = (parsed.host or "").lower()
        port = parsed.explicit_port
    except ValueError:
        return None
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    return name, port


@functools.lru_cache(maxsize=16)
def _public(public_url: str) -> tuple[str, int | None] | None:
    parsed = URL(public_url)
    return _host_port(parsed.scheme, parsed.raw_authority)


def _slashes(reference: str) -> str:
    """``\\`` read as ``/`` before the query, as browsers read http(s) URLs."""
    if "\\" not in reference:
        return reference
    path, tail = _split_path(reference)
    return path.replace("\\", "/") + tail


def _split_path(reference: str) -> tuple[str, str]:
    """``(path, query and fragment)``."""
    end = len(reference)
    for delimiter in "?#":
        index = reference.find(delimiter)
        if index != -1 and index < end:
            end = index
    return reference[:end], reference[end:]


def _public_path(path: str, mount: Mount, upstream: _Upstream) -> str:
    """The path the client must use for the app's absolute ``path``."""
    path = _resolve(path)
    prefix = mount.prefix
    if path[: len(GATEWAY_PREFIX)].lower() == GATEWAY_PREFIX:
        return path  # the gateway's own pages: an app sending its users to sign out
    if prefix and _under(path, prefix, mount.ignore_case):
        return path  # the app already knows its public prefix: never doubled
    base = upstream.base_path
    if base and _under(path, base, ignore_case=False):
        path = path[len(base) :] or "/"
    return prefix + path


def _under(path: str, prefix: str, ignore_case: bool) -> bool:
    """``path`` is ``prefix`` or below it, segment-wise."""
    head = path[: len(prefix)]
    same = head.lower() == prefix.lower() if ignore_case else head == prefix
    return same and path[len(prefix) : len(prefix) + 1] in ("", "/")


def _resolve(path: str) -> str:
    """An absolute path as a browser resolves it: dot-segments (``%2e`` too) removed, never
    above ``/``; and empty segments collapsed, as the gateway reads request paths. The result
    starts with exactly one ``/``."""
    if "//" not in path and "/." not in path and "%" not in path:
        return path or "/"
    segments = path.split("/")[1:]
    last = segments[-1].lower() if segments else ""
    trailing_slash = last == "" or last in _DOT or last in _DOT_DOT
    stack: list[str] = []
    for segment in segments:
        lowered = segment.lower()
        if not segment or lowered in _DOT:
            continue
        if lowered in _DOT_DOT:
            if stack:
                stack.pop()
            continue
        stack.append(segment)
    if not stack:
        return "/"
    return "/" + "/".join(stack) + ("/" if trailing_slash else "")


def rewrite_set_cookie(value: str, mount: Mount) -> str:
    """The ``Set-Cookie`` the client receives for the upstream's ``value``: see the module's
    docstring. The cookie itself and its other attributes are kept byte-exact."""
    upstream = _upstream(mount.upstream_url)
    if not (mount.prefix or upstream.base_path):
        return value
    parts = value.split(";")
    if parts[0].lstrip().lower().startswith("__host-"):
        return value  # browsers refuse a __Host- cookie unless it has Path=/
    # SECURITY: browsers use the LAST Path attribute: each one is rewritten, so a second
    # "Path=/" cannot widen the cookie to the whole site again.
    effective = False
    for i in range(1, len(parts)):
        key, _, path = parts[i].partition("=")
        if key.strip().lower() != "path":
            continue
        path = path.strip()
        effective = path.startswith("/")  # else the browser uses its default path
        if effective:
            parts[i] = f"{key}={_cookie_path(path, mount, upstream)}"
    if not effective and mount.prefix and mount.upstream_path == "/":
        # On /pypi the browser's default path would be "/": the whole site.
        parts.append(f" Path={mount.prefix}")
    return ";".join(parts)


def _cookie_path(path: str, mount: Mount, upstream: _Upstream) -> str:
    """Cookie paths are compared as written (browsers resolve nothing in them), so unlike
    :func:`_public_path` nothing is resolved: any result starts with the prefix."""
    prefix = mount.prefix
    if prefix and _under(path, prefix, mount.ignore_case):
        return path
    base = upstream.base_path
    if base and _under(path, base, ignore_case=False):
        path = path[len(base) :] or "/"
    if path == "/":
        return prefix or "/"  # /pypi, which also covers /pypi itself (/pypi/ would not)
    return prefix + path
