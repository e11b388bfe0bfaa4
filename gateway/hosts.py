"""Host names: the one grammar for a ``Host`` header, a route's ``match.host`` and a configured
host (listen address, URL).

A name is dot-separated labels of letters, digits, ``-`` and ``_`` (underscores are not DNS but
are common in Docker and Compose service names), each 1-63 characters, not starting or ending
with ``-``; IPv4 addresses are names of this grammar too. IPv6 addresses are bracketed in a
``Host`` (``[::1]:8080``). A port is 1-5 digits, at most 65535. Names compare case-insensitively
and without a trailing dot (``Admin.Example.com.`` is ``admin.example.com``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = ["HostPattern", "is_host_name", "split_host", "valid_host"]

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_NAME = rf"{_LABEL}(?:\.{_LABEL})*"
_PORT = r"[0-9]{1,5}"
# A Host header: nothing that could smuggle a path, userinfo or whitespace into the upstream's
# URL building, nor a second host ("a, b").
_HOST = re.compile(
    rf"(?P<name>{_NAME})\.?(?::(?P<port>{_PORT}))?"
    rf"|\[(?P<ip6>[0-9A-Fa-f:.]{{2,45}})\](?::(?P<port6>{_PORT}))?"
)
_PATTERN = re.compile(rf"(?P<wildcard>\*\.)?(?P<name>{_NAME})(?::(?P<port>{_PORT}))?")
_NAME_ONLY = re.compile(rf"{_NAME}\.?")

MAX_HOST_LENGTH = 260
"""Longest ``Host`` value accepted (a 253-character name, a port and brackets)."""


def _port_ok(port: str | None) -> bool:
    return port is None or int(port) <= 65535


def valid_host(host: str) -> bool:
    """A well-formed ``Host`` value: ``name[:port]`` or ``[ipv6][:port]``, nothing else."""
    if len(host) > MAX_HOST_LENGTH:
        return False
    found = _HOST.fullmatch(host)
    if found is None:
        return False
    if found["ip6"] is not None:
        try:
            ipaddress.IPv6Address(found["ip6"])
        except ValueError:
            return False
        return _port_ok(found["port6"])
    return _port_ok(found["port"])


def split_host(host: str) -> tuple[str, int | None]:
    """A ``Host`` value -> (lower-case name without a trailing dot, port or None).

    An IPv6 literal keeps its brackets (``[::1]``); an empty port (``example.com:``) is none.
    """
    host = host.strip().lower()
    port: int | None = None
    if host.startswith("["):
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
    elif sep and not port_text:
        host = name
    # SECURITY: "admin.example.com." is the same DNS name as "admin.example.com"; without this a
    # trailing dot would skip a host-restricted route and fall through to a laxer one.
    return host.removesuffix("."), port


def is_host_name(host: str) -> bool:
    """A configured host (listen address, URL): a name of this grammar or an IP address
    (IPv6 without brackets)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return len(host) <= 253 and _NAME_ONLY.fullmatch(host) is not None
    return True


@dataclass(frozen=True, slots=True)
class HostPattern:
    """A route's ``match.host``: a name (``app.example.com``) or one wildcard label
    (``*.example.com``), with or without a port."""

    name: str
    """The exact name, or for a wildcard the parent domain (``example.com``); lower case."""
    wildcard: bool
    port: int | None
    """None: any port (and none)."""

    @classmethod
    def parse(cls, pattern: str) -> HostPattern:
        """Raises :class:`ValueError` for anything but ``[*.]name[:port]``."""
        found = _PATTERN.fullmatch(pattern.strip().lower())
        if found is None or not _port_ok(found["port"]) or len(found["name"]) > 253:
            raise ValueError(
                'expected a host such as "app.example.com" or "*.example.com" (one label), '
                "with an optional :port"
            )
        port = int(found["port"]) if found["port"] is not None else None
        return cls(name=found["name"], wildcard=found["wildcard"] is not None, port=port)

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{'*.' if self.wildcard else ''}{self.name}{port}"

    def matches(self, name: str, port: int | None) -> bool:
        """``name`` and ``port`` as :func:`split_host` gives them."""
        if self.port is not None and self.port != port:
            return False
        if self.wildcard:
            label, dot, parent = name.partition(".")
            return bool(label) and bool(dot) and parent == self.name
        return name == self.name

    def covers(self, other: HostPattern) -> bool:
        """True when every Host ``other`` accepts this accepts too (certain, not heuristic)."""
        if self.port is not None and self.port != other.port:
            return False
        if other.wildcard:
            return self.wildcard and self.name == other.name
        return self.matches(other.name, other.port)
