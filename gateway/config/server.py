"""The ``server:`` section."""

from __future__ import annotations

from typing import cast, get_args

from gateway.config import addresses, files, values
from gateway.config.reader import Section
from gateway.config.settings import AccessLog, ClientTimeouts, ServerSettings

KEYS = ("listen", "public_url", "admin_listen", "trusted_proxies", "workers", "shutdown_grace",
        "data_dir", "access_log", "timeouts")
TIMEOUT_KEYS = ("request_header", "keepalive", "body", "send")
_TIMEOUT = values.duration(positive=True, maximum=3600)

DEFAULT_LISTEN = ("0.0.0.0", 8080)  # noqa: S104 - a reverse proxy is meant to be reachable


def build_server(root: Section) -> ServerSettings:
    """Validate ``server:``. An invalid ``public_url`` is returned as ``""`` so that checks
    depending on it (cookie prefixes, same_site) are skipped rather than reported twice."""
    section = root.section("server", KEYS)
    listen_host, listen_port = section.get("listen", DEFAULT_LISTEN, addresses.listen_address)
    public_url = section.require(
        "public_url", addresses.origin_url, 'the origin users reach, e.g. "https://app.example.com"'
    )
    admin_listen = section.get("admin_listen", None, addresses.listen_address)
    if admin_listen is not None and _clash(admin_listen, (listen_host, listen_port)):
        section.ctx.error(
            section.at("admin_listen"), f"must use another port than server.listen ({listen_port})"
        )
    proxies = tuple(
        section.convert(path, item, None, addresses.ip_network)
        for path, item in section.items("trusted_proxies", "IP addresses or CIDR networks")
    )
    data_dir = section.get("data_dir", None, values.text)
    return ServerSettings(
        listen_host=listen_host,
        listen_port=listen_port,
        public_url=public_url or "",
        admin_listen=admin_listen,
        trusted_proxies=tuple(proxy for proxy in proxies if proxy is not None),
        workers=section.get("workers", 1, values.integer(minimum=1, maximum=1024)),
        shutdown_grace_s=section.get("shutdown_grace", 10.0, values.duration(maximum=3600)),
        data_dir=files.resolve(section.ctx.base_dir, data_dir or ".gateway"),
        access_log=cast(
            AccessLog, section.get("access_log", "json", values.choice(*get_args(AccessLog)))
        ),
        timeouts=_timeouts(section.section("timeouts", TIMEOUT_KEYS)),
    )


def _timeouts(section: Section) -> ClientTimeouts:
    defaults = ClientTimeouts()
    return ClientTimeouts(
        request_header_s=section.get("request_header", defaults.request_header_s, _TIMEOUT),
        keepalive_s=section.get("keepalive", defaults.keepalive_s, _TIMEOUT),
        body_s=section.get("body", defaults.body_s, _TIMEOUT),
        send_s=section.get("send", defaults.send_s, _TIMEOUT),
    )


def _clash(first: tuple[str, int], second: tuple[str, int]) -> bool:
    """Whether both listeners would want the same socket (port 0 picks a free one)."""
    wildcard = {"0.0.0.0", "::"}  # noqa: S104 - compared, not bound
    same_host = first[0] == second[0] or first[0] in wildcard or second[0] in wildcard
    return first[1] == second[1] != 0 and same_host
