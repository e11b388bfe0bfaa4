"""Who is calling: the client address, scheme, host and request id, through trusted proxies only.

The TCP peer is the only fact; ``X-Forwarded-*`` and ``X-Request-ID`` are claims, believed only when
the peer is one of ``server.trusted_proxies``.

Rules when the peer is trusted:

- ``X-Forwarded-For`` (all headers joined, in order) is walked right to left; hops in a trusted
  network are skipped and the first untrusted one is the client. If every hop is trusted, the
  left-most is the client. A malformed hop stops the walk: it is never believed, and the client is
  the last valid hop seen before it (on the peer side).
- ``X-Forwarded-Proto`` and ``X-Forwarded-Host``: the right-most value, i.e. what the proxy next to
  the gateway set (the same choice as Werkzeug's ``ProxyFix``). An invalid value falls back to what
  the connection says.
- ``X-Request-ID`` (the last one sent): kept when it is 1-128 characters of ``[A-Za-z0-9._-]``;
  otherwise generated.
- ``forwarded_for`` is the received chain with the peer appended (what nginx calls
  ``$proxy_add_x_forwarded_for``).

An untrusted peer's claims are all ignored: the peer is the client and the chain restarts at it.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import os
import re
from collections.abc import Sequence

from gateway.config.settings import IPNetwork
from gateway.headers import last_value, list_items
from gateway.hosts import valid_host
from gateway.http import Incoming

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

UNKNOWN = "unknown"
"""Client address used when the peer is not an IP socket (closed transport, unix socket)."""

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


class ClientInfo:
    """Who is on the other end, as far as the trusted-proxy chain lets us believe.

    (A plain class: one is made per request, and mypyc compiles this ``__init__``, not a
    dataclass's.)"""

    __slots__ = ("forwarded_for", "host", "ip", "proto", "request_id")

    def __init__(
        self, *, ip: str, proto: str, host: str, request_id: str, forwarded_for: str
    ) -> None:
        self.ip = ip
        """The client address: the peer, or the first untrusted X-Forwarded-For hop."""
        self.proto = proto
        """``http`` or ``https`` as the client used it."""
        self.host = host
        """The Host the client asked for (before any ``preserve_host`` decision)."""
        self.request_id = request_id
        self.forwarded_for = forwarded_for
        """The X-Forwarded-For value to send upstream (existing trusted chain + the peer)."""


class _RequestIds:
    """Request ids: 64 random bits chosen once per process, then a counter, as 32 hex digits.

    Unique across processes and replicas without asking the OS for randomness per request; a
    forked worker chooses its own prefix."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


_REQUEST_IDS = _RequestIds()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_REQUEST_IDS.reseed)


def new_request_id() -> str:
    """A fresh request id (32 hex digits, unique per process and request)."""
    return _REQUEST_IDS.new()


def resolve_client(request: Incoming, trusted: Sequence[IPNetwork]) -> ClientInfo:
    """Work out who is calling, believing forwarding headers only from a trusted peer.

    ``request`` must be the request as aiohttp received it (not a ``clone()`` with another
    ``remote``): the peer address comes from the transport.
    """
    found = _peer_address(request)
    peer, peer_ip = found if found is not None else (None, UNKNOWN)
    scheme = "https" if request.secure else "http"
    if peer is None or not trusted or not _is_trusted(peer, trusted):
        # SECURITY: an untrusted peer's X-Forwarded-* and X-Request-ID are all ignored.
        return ClientInfo(
            ip=peer_ip,
            proto=scheme,
            host=request.host,
            request_id=new_request_id(),
            forwarded_for=peer_ip,
        )

    headers = request.headers
    hops = list_items(headers.getall("X-Forwarded-For", ()))
    proto = (last_value(headers, "X-Forwarded-Proto") or "").lower()
    host = last_value(headers, "X-Forwarded-Host")
    # Not a list header: the last one sent, whole (a comma makes it insane, hence regenerated).
    request_ids = headers.getall("X-Request-ID", ())
    request_id = request_ids[-1].strip() if request_ids else None
    return ClientInfo(
        ip=str(_client_from_chain(hops, peer, trusted)),
        proto=proto if proto in ("http", "https") else scheme,
        host=host if host is not None and valid_host(host) else request.host,
        request_id=(
            request_id
            if request_id is not None and _REQUEST_ID.fullmatch(request_id)
            else new_request_id()
        ),
        forwarded_for=", ".join([*hops, peer_ip]) if hops else peer_ip,
    )


def _client_from_chain(
    hops: Sequence[str], peer: IPAddress, trusted: Sequence[IPNetwork]
) -> IPAddress:
    client = peer
    for hop in reversed(hops):
        addr = parse_hop(hop)
        if addr is None:
            # SECURITY: a malformed hop is never believed; keep the last valid hop peer-side of it.
            break
        client = addr
        if not _is_trusted(addr, trusted):
            break
    return client


def parse_hop(hop: str) -> IPAddress | None:
    """An address from one ``X-Forwarded-For`` hop: ``1.2.3.4``, ``2001:db8::1``, and the
    ``1.2.3.4:5678`` / ``[2001:db8::1]:5678`` forms some proxies write. ``None`` if malformed."""
    try:
        return _unmapped(ipaddress.ip_address(hop))
    except ValueError:
        pass
    if hop.startswith("["):
        end = hop.find("]")
        candidate = hop[1:end] if end > 0 and hop[end + 1 :][:1] in ("", ":") else ""
    elif hop.count(":") == 1:
        candidate, _, port = hop.partition(":")
        if not port.isdigit():
            return None
    else:
        return None
    try:
        return _unmapped(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def _peer_address(request: Incoming) -> tuple[IPAddress, str] | None:
    """The peer's address, and its text."""
    transport = request.transport
    if transport is None:
        return None
    peername = transport.get_extra_info("peername")
    # AF_INET gives (host, port), AF_INET6 (host, port, flowinfo, scope); AF_UNIX a str or bytes.
    if not isinstance(peername, tuple | list) or not peername:
        return None
    return _peer_ip(peername[0])


@functools.lru_cache(maxsize=4096)
def _peer_ip(host: str) -> tuple[IPAddress, str] | None:
    """The peer's address and its text, worked out once per distinct peer (not once per
    request)."""
    try:
        address = _unmapped(ipaddress.ip_address(host))
    except ValueError:
        return None
    return address, str(address)


def _unmapped(addr: IPAddress) -> IPAddress:
    # A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; trust lists are written in IPv4.
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _is_trusted(addr: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    # Membership across IP versions is simply False, so one list can mix v4 and v6 networks.
    return any(addr in network for network in trusted)
