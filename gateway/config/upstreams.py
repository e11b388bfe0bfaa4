"""The ``upstreams:`` section: named backends that routes forward to."""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway.config import addresses, values
from gateway.config.errors import describe
from gateway.config.interpolate import INVALID
from gateway.config.reader import Section, join
from gateway.config.settings import UpstreamSettings

KEYS = ("url", "connect_timeout", "read_timeout", "preserve_host", "max_connections",
        "allow_get_body", "keepalive_after_body")

# Names appear in metrics labels, logs and the default JWT audience: keep them plain.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
NAME_RULE = "letters, digits, '-', '_' and '.', starting with a letter or digit"


def build_upstreams(root: Section) -> tuple[dict[str, UpstreamSettings], set[str]]:
    """Validate ``upstreams:``. Also returns every well-formed name, even of an upstream whose
    settings are invalid, so routes naming it are not reported a second time."""
    ctx = root.ctx
    raw = root.raw("upstreams")
    if raw is INVALID:
        return {}, set()
    if not isinstance(raw, Mapping) or not raw:
        got = "none" if not raw else describe(raw)
        ctx.error(
            "upstreams",
            "expected a mapping of upstream names to settings, "
            f'e.g. app: {{url: "http://127.0.0.1:9000"}}; got {got}',
        )
        return {}, set()
    upstreams: dict[str, UpstreamSettings] = {}
    for name, item in raw.items():
        path = join("upstreams", name)
        if not isinstance(name, str) or not NAME.fullmatch(name):
            ctx.error(path, f"upstream names may use {NAME_RULE}; got {describe(name)}")
            continue
        section = Section(ctx, path, item, KEYS)
        if item is INVALID or (item is not None and not isinstance(item, Mapping)):
            continue  # already reported; the name is still known to routes
        url = section.require("url", addresses.upstream_url, 'e.g. "http://127.0.0.1:9000"')
        upstreams[name] = UpstreamSettings(
            name=name,
            url=url or "",
            connect_timeout_s=section.get("connect_timeout", 5.0, values.duration(positive=True)),
            read_timeout_s=section.get("read_timeout", 60.0, values.duration(positive=True)),
            preserve_host=section.get("preserve_host", False, values.boolean),
            max_connections=section.get("max_connections", 100, values.integer(minimum=1)),
            allow_get_body=section.get("allow_get_body", False, values.boolean),
            keepalive_after_body=section.get("keepalive_after_body", False, values.boolean),
        )
    names = {name for name in raw if isinstance(name, str) and NAME.fullmatch(name)}
    return upstreams, names
