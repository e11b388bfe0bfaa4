"""Header hygiene shared by the proxy: what never crosses the gateway, in either direction.

Names are compared lower-cased and, on the request side, with ``_`` read as ``-``: several servers
and frameworks (CGI/WSGI ``HTTP_X_AUTH_USER``, PHP, some Java containers) fold the two together,
so ``X_Auth_User`` would otherwise reach an upstream as ``X-Auth-User``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence, Set

from multidict import MultiMapping

# Hop-by-hop headers (RFC 9110 7.6.1 plus the legacy ones every proxy drops); ``Proxy-*`` by prefix.
HOP_BY_HOP: frozenset[str] = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Request headers the client never gets to set upstream: the gateway either drops them or sets its
# own value after filtering.
_REQUEST_DROP: frozenset[str] = HOP_BY_HOP | {
    # SECURITY: a client-sent Authorization is never forwarded; the identity stage adds its own.
    "authorization",
    # Framing and the expectation are the gateway's business on each hop: the upstream client
    # writes its own Content-Length / Transfer-Encoding, and ``100 Continue`` is answered here.
    "content-length",
    "expect",
    "host",
    # SECURITY: client claims about the chain are replaced by what resolve_client believed.
    "x-request-id",
    "forwarded",
    "x-real-ip",
    # SECURITY: overrides that some frameworks honour over the request line: they would let a
    # request authorised as "GET /public" act as another method or path upstream.
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-original-uri",
    "x-original-method",
    "x-override-url",
    "x-rewrite-url",
    # SECURITY: identity headers that legacy apps and their auth-proxy modes trust (Apache's
    # REMOTE_USER, Grafana's X-WEBAUTH-USER, oauth2-proxy's X-Forwarded-User...): only the
    # gateway may set them, from a real identity (route identity_headers).
    "remote-user",
    "x-remote-user",
}
# SECURITY: spoofable identity and chain headers, in any case and with ``_`` for ``-``
# (X-Forwarded-User, -Email, -Preferred-Username, -Groups are among the X-Forwarded-* ones;
# Remote-Groups, -Email, -Name are Authelia's set; X-Remote-Group and X-Remote-Extra-* the
# Kubernetes request-header authentication's).
_REQUEST_DROP_PREFIXES = ("x-auth-", "x-forwarded-", "x-webauth-", "remote-", "x-remote-", "proxy-")

# Handshake headers the upstream WebSocket client generates itself.
_WEBSOCKET_DROP: frozenset[str] = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    }
)


def list_items(values: Iterable[str]) -> list[str]:
    """The items of a comma-separated list header sent as one or more lines, in order, stripped,
    empty ones skipped (``X-Forwarded-For``, ``Sec-WebSocket-Protocol``)."""
    return [item for value in values for part in value.split(",") if (item := part.strip())]


def header_tokens(values: Iterable[str]) -> frozenset[str]:
    """The items of a list header, lower-cased, as a set (``Connection``, ``Upgrade``)."""
    return frozenset(item.lower() for item in list_items(values))


def cookie_pairs(value: str) -> Iterator[tuple[str, str]]:
    """The ``(name, value)`` pairs of one ``Cookie`` header value, as RFC 6265 reads them.

    Pairs are separated by ``;`` and by nothing else: ``pref=x gw_session=B`` is ONE cookie named
    ``pref`` whose value is ``x gw_session=B``. Names and values are stripped of surrounding
    whitespace; a pair without ``=`` has no name and is skipped (nothing can be asked for by it).
    Values are returned as sent (quotes included): the gateway's own values never hold any.
    """
    for part in value.split(";"):
        name, equals, rest = part.partition("=")
        if equals:
            yield name.strip(), rest.strip()


def cookie_value(header_values: Iterable[str], name: str) -> str | None:
    """The value of cookie ``name`` across all ``Cookie`` headers, or ``None``.

    ``None`` also when the value is empty, and when the cookie is sent more than once with
    different values: a sibling subdomain or a plain-http page can plant a second cookie of the
    same name (with a longer Path, it is even sent first), and no rule for picking one of two is
    safe, so neither is believed.
    """
    found: str | None = None
    for header in header_values:
        if name not in header:
            continue
        for key, value in cookie_pairs(header):
            if key != name:
                continue
            # SECURITY: two different values for one of our cookies: believe neither.
            if found is not None and found != value:
                return None
            found = value
    return found or None


def strip_cookies(value: str, names: Set[str]) -> str:
    """Return a ``Cookie`` header value without the cookies named in ``names``.

    Split exactly as :func:`cookie_pairs` reads it; the other pairs are kept byte-exact (no
    parsing, unquoting or re-encoding). An empty result means the header should be dropped.
    """
    if not any(name in value for name in names):
        return value
    kept = [part for part in value.split(";") if part.partition("=")[0].strip() not in names]
    return ";".join(kept).strip()


def set_cookie_names(value: str) -> tuple[str, str]:
    """The names a ``Set-Cookie`` value can present itself under in a later ``Cookie`` header.

    The first is its own name. A cookie WITHOUT a name (``=gw_session=X``, RFC 6265bis 5.6) is
    sent back by browsers as its bare value, ``gw_session=X``, which reads as a cookie named
    ``gw_session``: the second is that name (empty when there is none).
    """
    pair = value.partition(";")[0]
    name, equals, rest = pair.partition("=")
    name = name.strip() if equals else ""
    if name or not equals:
        return name, ""
    return "", rest.partition("=")[0].strip() if "=" in rest else ""


def filter_request_headers(
    headers: Iterable[tuple[str, str]],
    connection: frozenset[str],
    *,
    strip_cookie_names: Set[str] = frozenset(),
    replaced: Set[str] = frozenset(),
    websocket: bool = False,
) -> list[tuple[str, str]]:
    """Client headers that may go upstream, in order and with their original casing.

    ``connection`` holds the tokens of the client's ``Connection`` header (normalised with
    :func:`header_tokens` and ``_`` -> ``-``): the headers they name are hop-by-hop. ``replaced``
    holds normalised names the gateway sets itself afterwards (``ctx.add_headers``).
    """
    out: list[tuple[str, str]] = []
    for name, value in headers:
        norm = name.lower().replace("_", "-")
        if (
            norm in _REQUEST_DROP
            or norm.startswith(_REQUEST_DROP_PREFIXES)
            # SECURITY: the Connection list only ever removes client headers; the gateway's own
            # Authorization / X-Forwarded-* are added after this filter, so
            # `Connection: X-Forwarded-For` cannot strip them.
            or norm in connection
            or norm in replaced
            or (websocket and norm in _WEBSOCKET_DROP)
        ):
            continue
        if norm == "cookie" and strip_cookie_names:
            # SECURITY: the gateway's session cookie never reaches an upstream.
            value = strip_cookies(value, strip_cookie_names)
            if not value:
                continue
        out.append((name, value))
    return out


def filter_response_headers(
    headers: Sequence[tuple[str, str]],
    *,
    extra_drop: Set[str] = frozenset(),
    own_cookies: Set[str] = frozenset(),
) -> list[tuple[str, str]]:
    """Upstream response headers that may go to the client: hop-by-hop ones removed, and any
    ``Set-Cookie`` for one of ``own_cookies`` (the gateway's session and CSRF cookies).

    ``Content-Length`` is kept (downloads show their size) unless the upstream also sent
    ``Transfer-Encoding``, which overrides it (RFC 9112 6.3).
    """
    connection: frozenset[str] = frozenset()
    chunked = False
    for name, value in headers:
        lname = name.lower()
        if lname == "connection":
            connection |= header_tokens((value,))
        elif lname == "transfer-encoding":
            chunked = True
    out: list[tuple[str, str]] = []
    for name, value in headers:
        lname = name.lower()
        if (
            lname in HOP_BY_HOP
            or lname.startswith("proxy-")
            or lname in connection
            or lname in extra_drop
            or (chunked and lname == "content-length")
            # SECURITY: an upstream must not set (fixate) or clear the gateway's cookies.
            or (lname == "set-cookie" and not own_cookies.isdisjoint(set_cookie_names(value)))
        ):
            continue
        out.append((name, value))
    return out


def normalised_names(names: Iterable[str]) -> frozenset[str]:
    """Lower-cased names with ``_`` read as ``-`` (how :func:`filter_request_headers` compares)."""
    return frozenset(name.lower().replace("_", "-") for name in names)


def last_value(headers: MultiMapping[str], name: str) -> str | None:
    """The right-most non-empty item of a list header, across repeated headers."""
    items = list_items(headers.getall(name, ()))
    return items[-1] if items else None
