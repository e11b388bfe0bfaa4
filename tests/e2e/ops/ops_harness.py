"""Helpers for the operations tests (issue 5): health, metrics, access log, reload, drain.

Two ways to run the gateway:

- in-process: :class:`tests.support.GatewayClient`, the gateway served by the same listener as
  ``gateway run`` uses, see the ``make_gateway`` fixture in ``conftest.py``;
- as a real ``gateway run`` subprocess (:class:`tests.e2e.harness.GatewayProcess`) with a YAML
  file written by :func:`write_config`, for everything involving signals, workers or the admin
  listener.

Both sit in front of the recording upstream of :mod:`tests.upstreams`, which here can also
answer slowly, with a body of a given size, or as a long streamed download (:func:`ops_answer`).
``server.data_dir`` is always a ``tmp_path``, so no key is ever generated into the repository.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tests.configs import NO_THROTTLE, USERS, route, session_config
from tests.e2e.login.login_harness import login_config
from tests.redis_support import free_port as free_port  # re-exported for the tests
from tests.upstreams import Received

CHUNK = 64 * 1024
"""Size of one chunk of the upstream's downloads (:func:`ops_answer`)."""


# --- what the upstream answers ----------------------------------------------------------------


async def ops_answer(request: web.Request, received: Received) -> web.StreamResponse | None:
    """The recording upstream's answers for these tests, by the path's last segment:

    - ``.../sized?n=N``: ``N`` bytes of ``b"s"`` (with Content-Length);
    - ``.../slow?s=S``: waits ``S`` seconds, then ``slept S``;
    - ``.../download?s=S&chunks=K``: ``K`` chunks of :data:`CHUNK` bytes spread over ``S``
      seconds, with a Content-Length announcing all of them (the first chunk goes at once);
    - anything else: the default answer (what the upstream received, as JSON).
    """
    last = request.path.rstrip("/").rpartition("/")[2]
    if last == "sized":
        return web.Response(body=b"s" * int(request.query["n"]))
    if last == "slow":
        seconds = float(request.query["s"])
        await asyncio.sleep(seconds)
        return web.Response(text=f"slept {seconds}")
    if last == "download":
        return await _download(request)
    return None


async def _download(request: web.Request) -> web.StreamResponse:
    seconds = float(request.query["s"])
    chunks = int(request.query["chunks"])
    response = web.StreamResponse(
        headers={"Content-Type": "application/octet-stream"},
    )
    response.content_length = chunks * CHUNK
    await response.prepare(request)
    pause = seconds / (chunks - 1)
    try:
        for i in range(chunks):
            if i:
                await asyncio.sleep(pause)
            await response.write(bytes([65 + i % 26]) * CHUNK)
        await response.write_eof()
    except ConnectionError:
        pass  # the gateway cut the download: nobody is left to tell
    return response


def expected_download(chunks: int) -> bytes:
    return b"".join(bytes([65 + i % 26]) * CHUNK for i in range(chunks))


# --- in-process configurations ----------------------------------------------------------------


def ops_routes() -> list[dict[str, Any]]:
    """No catch-all: anything outside these prefixes is a 404 with route ``-``."""
    return [
        route("public", prefix="/public", access="public"),
        route("members", prefix="/members", access="authenticated"),
        route(
            "api",
            prefix="/api",
            access="authenticated",
            accept_bearer=True,
            unauthenticated="status",
        ),
    ]


def ops_config(
    upstream_url: str,
    data_dir: Path,
    *,
    access_log: str = "json",
    session: Mapping[str, Any] | None = None,
    routes: Iterable[Mapping[str, Any]] | None = None,
    throttle: Mapping[str, Any] = NO_THROTTLE,
    **server: Any,
) -> dict[str, Any]:
    """A configuration document for in-process tests: memory sessions unless told otherwise,
    the test users of :mod:`tests.configs` (cheap argon2 hashes), ``data_dir`` in ``tmp_path``,
    an admin listener (on a free port of its own: ``client.admin_url(...)``) for the metrics;
    ``server`` keys as the YAML spells them."""
    server.setdefault("admin_listen", "127.0.0.1:0")
    return login_config(
        upstream_url,
        session if session is not None else session_config("memory"),
        routes=ops_routes() if routes is None else routes,
        throttle=throttle,
        data_dir=str(data_dir),
        access_log=access_log,
        **server,
    )


def with_upstream_url(document: dict[str, Any], url: str) -> dict[str, Any]:
    """``document`` with every upstream at ``url``."""
    for upstream in document["upstreams"].values():
        upstream["url"] = url
    return document


# --- metrics ---------------------------------------------------------------------------------


def sample(name: str, **labels: str) -> float:
    """A sample of the process-global registry, 0 when the series does not exist (yet)."""
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


class Deltas:
    """Changes of chosen samples of the process-global registry since construction."""

    def __init__(self, *series: tuple[str, Mapping[str, str]]) -> None:
        self._start = {self._key(n, lb): sample(n, **lb) for n, lb in series}

    @staticmethod
    def _key(name: str, labels: Mapping[str, str]) -> tuple[str, frozenset[tuple[str, str]]]:
        return name, frozenset(labels.items())

    def __call__(self, name: str, labels: Mapping[str, str] | None = None, **kw: str) -> float:
        labels = {**(labels or {}), **kw}
        key = self._key(name, labels)
        assert key in self._start, f"{name}{labels} was not watched"
        return sample(name, **labels) - self._start[key]


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by (name, labels)."""
    result: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            result[(s.name, frozenset(s.labels.items()))] = s.value
    return result


def value_of(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(lb)[label] for (n, lb) in samples if n == name and label in dict(lb)}


# --- logs ------------------------------------------------------------------------------------


def access_lines(records: Iterable[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.name == "gateway.access"]


def access_entries(records: Iterable[logging.LogRecord]) -> list[dict[str, Any]]:
    """The JSON access-log entries, in order."""
    return [json.loads(line) for line in access_lines(records)]


def everything_logged(records: Iterable[logging.LogRecord]) -> str:
    """All a log handler could write about these records: message, arguments, extra fields,
    exception text, whatever the logger."""
    formatter = logging.Formatter()
    parts = []
    for record in records:
        parts.append(record.getMessage())
        parts.append(repr(vars(record)))
        if record.exc_info:
            parts.append(formatter.formatException(record.exc_info))
        if record.stack_info:
            parts.append(record.stack_info)
    return "\n".join(parts)


# --- a real `gateway run` ----------------------------------------------------------------------


def write_config(
    path: Path,
    *,
    port: int,
    upstream_port: int,
    data_dir: Path,
    admin_port: int | None = None,
    workers: int = 1,
    grace: str = "8s",
    access_log: str = "text",
    session: str = "  backend: memory\n",
    routes: str | None = None,
    users: Iterable[str] = ("alice", "bob"),
    upstream_extra: str = "",
    extra: str = "",
) -> Path:
    """A YAML configuration (ASCII only) for ``gateway run`` on ``127.0.0.1:port``; ``extra``
    holds more top-level sections (``tokens:``...)."""
    admin = f'  admin_listen: "127.0.0.1:{admin_port}"\n' if admin_port is not None else ""
    users_yaml = "".join(
        f"    - username: {name}\n"
        f'      password_hash: "{USERS[name]["password_hash"]}"\n'
        f"      roles: [{', '.join(USERS[name]['roles'])}]\n"
        for name in users
    )
    text = f"""\
server:
  listen: "127.0.0.1:{port}"
  public_url: "http://127.0.0.1:{port}"
{admin}  workers: {workers}
  shutdown_grace: {grace}
  data_dir: "{data_dir}"
  access_log: {access_log}
session:
{session}users:
  inline:
{users_yaml}{extra}upstreams:
  app:
    url: "http://127.0.0.1:{upstream_port}"
{upstream_extra}routes:
{routes if routes is not None else DEFAULT_ROUTES}"""
    text.encode("ascii")  # the brief: ASCII-only YAML
    path.write_text(text, encoding="ascii")
    return path


DEFAULT_ROUTES = """\
  - name: public
    match: { path_prefix: /public }
    upstream: app
    access: public
  - name: members
    match: { path_prefix: /members }
    upstream: app
    access: authenticated
    unauthenticated: status
"""


def cookie_session(tmp_path: Path) -> str:
    """``session:`` body for the cookie backend (what ``workers > 1`` needs), secret in a file."""
    secret = tmp_path / "session.key"
    secret.write_bytes(os.urandom(31) + b"k")  # never a trailing newline (it would be dropped)
    return f'  backend: cookie\n  cookie:\n    secret_file: "{secret}"\n'


async def get(
    url: str, *, headers: Mapping[str, str] | None = None, **kwargs: Any
) -> tuple[int, bytes]:
    """One GET on a connection of its own (``Connection: close``), as a new client would:
    with several workers, successive calls land on either of them."""
    sent = {"Connection": "close", **(headers or {})}
    async with aiohttp.ClientSession() as http, http.get(url, headers=sent, **kwargs) as resp:
        return resp.status, await resp.read()


async def scrape(url: str) -> Samples:
    status, body = await get(url)
    assert status == 200, body
    return parse_metrics(body.decode())
