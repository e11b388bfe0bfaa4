"""Listen addresses, URLs and networks as the configuration writes them."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import SplitResult, urlsplit

from gateway.config.errors import describe
from gateway.config.settings import IPNetwork
from gateway.config.values import Invalid, string
from gateway.hosts import is_host_name

_LISTEN_HELP = '"host:port", e.g. "0.0.0.0:8080", "[::1]:8080" or ":8080" (all IPv4 interfaces)'


def listen_address(value: Any) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; ``":8080"`` listens on every IPv4 interface."""
    address = string(value).strip()
    host, colon, port = address.rpartition(":")
    if not colon:
        raise Invalid(f"expected {_LISTEN_HELP}, got {describe(value)}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise Invalid(f"{describe(value)}: [{host}] is not an IPv6 address") from None
    elif ":" in host:
        raise Invalid(f'{describe(value)}: put an IPv6 address in brackets, e.g. "[::1]:8080"')
    elif not host:
        host = "0.0.0.0"  # noqa: S104 - an empty host explicitly asks for every interface
    elif not is_host_name(host):
        raise Invalid(f"{describe(value)}: {describe(host)} is not a host name or IP address")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise Invalid(f"{describe(value)}: the port must be a number from 0 to 65535")
    return host, int(port)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _http_url(value: Any) -> tuple[SplitResult, str]:
    """Split an http(s) URL, checking what both public_url and upstream URLs need."""
    url = string(value).strip()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not url.lower().startswith(f"{scheme}://"):
        raise Invalid(f"expected an http:// or https:// URL, got {describe(value)}")
    if parts.username is not None or parts.password is not None:
        # SECURITY: credentials in a URL end up in logs and error pages.
        raise Invalid("the URL must not contain credentials (user:password@)")
    host = parts.hostname or ""
    if not host or not is_host_name(host):
        raise Invalid(f"{describe(value)}: the URL needs a valid host")
    try:
        port = parts.port
    except ValueError:
        raise Invalid(f"{describe(value)}: invalid port") from None
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise Invalid(f"{describe(value)}: the URL must not have a query (?) or fragment (#)")
    netloc = f"[{host}]" if ":" in host else host
    # The default port is left out, as browsers leave it out of Origin and Host: an explicit
    # ":443" would make every Origin check of the login form fail.
    if port == _DEFAULT_PORTS[scheme]:
        port = None
    origin = f"{scheme}://{netloc}" + (f":{port}" if port is not None else "")
    return parts, origin


def origin_url(value: Any) -> str:
    """An origin (``https://app.example.com[:port]``), lower-cased, without a trailing slash."""
    parts, origin = _http_url(value)
    if parts.path not in ("", "/"):
        raise Invalid(
            f"{describe(value)}: expected an origin (scheme://host[:port]) without a path; "
            "the gateway serves the whole origin"
        )
    return origin


def upstream_url(value: Any) -> str:
    """An http(s) base URL, host lower-cased, path kept, trailing slash removed."""
    parts, origin = _http_url(value)
    return origin + parts.path.rstrip("/")


def ip_network(value: Any) -> IPNetwork:
    """An IP address or CIDR network; host bits are allowed (``10.1.2.3/8`` -> ``10.0.0.0/8``)."""
    try:
        return ipaddress.ip_network(string(value).strip(), strict=False)
    except ValueError:
        raise Invalid(
            f'expected an IP address or CIDR network (e.g. "10.0.0.0/8"), got {describe(value)}'
        ) from None
