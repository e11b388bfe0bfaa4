"""Existing apps mounted under a sub-path with ``strip_prefix``, behind a real ``gateway run``:
their redirects and cookies stay inside the route (README: "Putting an existing app behind the
gateway").

Three real upstream processes: a legacy app on the standard library's ``http.server`` that knows
nothing of the prefix (``legacy_app.py``), pypiserver (absolute redirects built from
``X-Forwarded-Host``) and Datasette (root-relative redirects, cookies with ``Path=/``, and links
built from ``Host``). The client is a real HTTP client that follows redirects and keeps cookies
by their ``Path``, as a browser does.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.configs import dump, route
from tests.e2e.harness import GatewayProcess, config, listen_port, login
from tests.redis_support import free_port

LEGACY_APP = Path(__file__).with_name("legacy_app.py")
WHEEL = "demo_pkg-1.0-py3-none-any.whl"


@dataclass(frozen=True)
class Apps:
    legacy: int
    pypiserver: int
    pypiserver_mounted: int
    datasette: int
    packages: Path


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """Until ``url`` answers at all (any status)."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"{url}: exited\n{log.read_text(errors='replace')}"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered\n{log.read_text()}"
        time.sleep(0.1)


def _wheel(directory: Path) -> None:
    """A minimal valid wheel for pypiserver to serve."""
    with zipfile.ZipFile(directory / WHEEL, "w") as archive:
        archive.writestr("demo_pkg/__init__.py", "VALUE = 1\n")
        info = "demo_pkg-1.0.dist-info"
        archive.writestr(
            f"{info}/METADATA", "Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n"
        )
        archive.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{info}/RECORD", "")


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apps]:
    work = tmp_path_factory.mktemp("legacy-apps")
    packages = work / "packages"
    packages.mkdir()
    _wheel(packages)
    database = work / "fixtures.db"
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("create table notes (id integer primary key, body text)")
        db.execute("insert into notes (body) values ('hello')")
        db.commit()
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, ready: str, command: Callable[[int], list[str]]) -> int:
        port = free_port()
        log = work / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, *command(port)],
                cwd=work,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(proc)
        _wait_http(f"http://127.0.0.1:{port}{ready}", proc, log)
        return port

    pypiserver = ["-m", "pypiserver", "run", "-i", "127.0.0.1", "-a", ".", "-P", "."]
    try:
        yield Apps(
            legacy=start("legacy", "/account", lambda port: [str(LEGACY_APP), str(port)]),
            pypiserver=start(
                "pypiserver",
                "/",
                lambda port: [*pypiserver, "--disable-fallback", "-p", str(port), str(packages)],
            ),
            pypiserver_mounted=start(
                "pypiserver-mounted",
                "/pypi-mounted/",
                lambda port: [
                    *pypiserver,
                    "--disable-fallback",
                    "--server-base-url",
                    "/pypi-mounted",
                    "-p",
                    str(port),
                    str(packages),
                ],
            ),
            datasette=start(
                "datasette",
                "/-/versions.json",
                lambda port: [
                    "-m",
                    "datasette",
                    "serve",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "--setting",
                    "base_url",
                    "/data/",
                    str(database),
                ],
            ),
            packages=packages,
        )
    finally:
        for proc in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def gateway(apps: Apps, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``gateway run`` with every app under a prefix of its own; its base URL."""
    work = tmp_path_factory.mktemp("legacy-gateway")

    def upstream(port: int, **options: object) -> dict[str, object]:
        return {"url": f"http://127.0.0.1:{port}", "read_timeout": 10, **options}

    document = config(
        work,
        upstreams={
            "legacy": upstream(apps.legacy),
            "pypi": upstream(apps.pypiserver),
            "pypi_mounted": upstream(apps.pypiserver_mounted),
            "datasette": upstream(apps.datasette, preserve_host=True),
            "datasette_internal": upstream(apps.datasette),
        },
        routes=[
            route("legacy", prefix="/legacy", upstream="legacy", strip_prefix="/legacy"),
            route("other", prefix="/other", upstream="legacy", strip_prefix="/other"),
            route(
                "private",
                prefix="/private",
                upstream="legacy",
                access="authenticated",
                strip_prefix="/private",
                identity_headers={"Remote-User": "sub"},
            ),
            route("pypi", prefix="/pypi", upstream="pypi", strip_prefix="/pypi"),
            route("pypi-mounted", prefix="/pypi-mounted", upstream="pypi_mounted"),
            route("data", prefix="/data", upstream="datasette", strip_prefix="/data"),
            route(
                "data-internal",
                prefix="/data-internal",
                upstream="datasette_internal",
                strip_prefix="/data-internal",
            ),
        ],
    )
    path = work / "gateway.yaml"
    path.write_text(dump(document), encoding="utf-8")
    process = GatewayProcess(path, listen_port(document))
    try:
        _wait_http(f"{process.base}/.gateway/healthz", process.proc, process.log_path)
        yield process.base
    finally:
        process.kill()


def browser() -> aiohttp.ClientSession:
    """Follows redirects, keeps cookies by Path (``unsafe``: the host is an IP address)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def locations(resp: aiohttp.ClientResponse) -> list[str]:
    """The Location of each redirect followed on the way to ``resp``."""
    return [hop.headers["Location"] for hop in resp.history]


async def test_relative_redirect_from_the_route_root_stays_in_the_route(gateway: str) -> None:
    """/legacy is the app's /, which answers "simple/": resolved by the browser against
    /legacy that would be /simple/, outside the route."""
    async with browser() as http, http.get(f"{gateway}/legacy") as resp:
        assert resp.status == 200
        assert resp.url.path == "/legacy/simple/"
        assert locations(resp) == ["/legacy/simple/"]


@pytest.mark.parametrize(
    ("path", "redirects", "final"),
    [
        ("/legacy/simple", ["/legacy/simple/"], "/legacy/simple/"),
        ("/legacy/simple/demo", ["{gw}/legacy/simple/demo/"], "/legacy/simple/demo/"),
        ("/legacy/internal", ["{gw}/legacy/simple/?from=internal"], "/legacy/simple/"),
    ],
    ids=["absolute-path", "absolute-url-from-host", "absolute-url-of-the-upstream"],
)
async def test_redirects_stay_in_the_route(
    gateway: str, path: str, redirects: list[str], final: str
) -> None:
    async with browser() as http, http.get(gateway + path) as resp:
        assert resp.status == 200
        assert resp.url.path == final
        assert locations(resp) == [hop.format(gw=gateway) for hop in redirects]


async def test_redirect_to_another_site_is_left_alone(gateway: str) -> None:
    async with (
        browser() as http,
        http.get(f"{gateway}/legacy/elsewhere", allow_redirects=False) as resp,
    ):
        assert resp.status == 302
        assert resp.headers["Location"] == "https://elsewhere.example/landing"


async def test_app_cookies_stay_with_the_app_and_its_redirect_keeps_query(gateway: str) -> None:
    async with browser() as http:
        async with http.get(f"{gateway}/legacy/login") as resp:
            assert locations(resp) == ["/legacy/account?welcome=1#top"]
            seen = await resp.json()
        assert seen["path"] == "/account?welcome=1"
        assert sorted(seen["cookie"].split("; ")) == ["sid=s3cret", "tab=2", "theme=dark"]
        paths = {cookie.key: cookie["path"] for cookie in http.cookie_jar}
        assert paths == {"sid": "/legacy", "tab": "/legacy/account", "theme": "/legacy"}

        # Another app on the same gateway never receives them.
        async with http.get(f"{gateway}/other/account") as resp:
            assert (await resp.json())["cookie"] is None

        # The app's own deletion (Path=/) still finds the cookie it set.
        async with http.get(f"{gateway}/legacy/logout") as resp:
            assert resp.url.path == "/legacy/simple/"
        async with http.get(f"{gateway}/legacy/account") as resp:
            assert sorted((await resp.json())["cookie"].split("; ")) == ["tab=2", "theme=dark"]


async def test_identity_header_for_an_app_that_cannot_verify_jwts(gateway: str) -> None:
    """identity_headers: {Remote-User: sub}: the app reads who is signed in from a header the
    client cannot forge; the gateway adds no Cache-Control to the app's answers and keeps the
    app's own, as the README says."""
    session = await login(gateway, "alice")
    forged = {"Remote-User": "mallory", "Accept": "text/html"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway}/private/account", headers=forged) as resp:
            assert locations(resp)[0].startswith("/.gateway/login?rd=")
            assert resp.history[0].headers["Cache-Control"] == "no-store"
        signed_in = {**forged, "Cookie": f"gw_session={session}"}
        async with http.get(f"{gateway}/private/account", headers=signed_in) as resp:
            assert (await resp.json())["user"] == "alice"
            assert "Cache-Control" not in resp.headers
        async with http.get(f"{gateway}/private/cached", headers=signed_in) as resp:
            assert resp.headers["Cache-Control"] == "max-age=60"


@pytest.mark.parametrize(
    ("path", "final"),
    [
        ("/pypi/simple", "/pypi/simple/"),
        ("/pypi/simple/demo-pkg", "/pypi/simple/demo-pkg/"),
        ("/pypi/simple/Demo_Pkg/", "/pypi/simple/demo-pkg/"),
        ("/pypi/packages", "/pypi/packages/"),
    ],
    ids=["index", "project", "pep503-normalised-name", "packages"],
)
async def test_pypiserver_redirects_stay_under_its_prefix(
    gateway: str, path: str, final: str
) -> None:
    async with browser() as http, http.get(gateway + path) as resp:
        assert resp.status == 200
        assert resp.url.path == final
        assert all(hop.startswith(f"{gateway}/pypi/") for hop in locations(resp))
        assert "demo" in await resp.text()


def test_pip_installs_from_pypiserver_told_its_sub_path(gateway: str, tmp_path: Path) -> None:
    """pypiserver writes its package links as absolute paths in the page, which no header
    rewriting reaches: told its sub-path (``--server-base-url``) and mounted without
    ``strip_prefix``, pip finds and downloads through the gateway."""
    dest = tmp_path / "downloads"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--isolated", "--no-deps"),
            *("--disable-pip-version-check", "--no-cache-dir", "-d", str(dest)),
            *("--index-url", f"{gateway}/pypi-mounted/simple/", "demo-pkg"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert [file.name for file in dest.iterdir()] == [WHEEL]


async def test_datasette_redirects_with_and_without_its_base_url(gateway: str) -> None:
    """Datasette (base_url /data/) strips a trailing slash with a redirect to the raw path it
    received (/fixtures, which gets the prefix) and writes other redirects with its base_url
    (/data/, kept as it is, never doubled)."""
    async with browser() as http:
        async with http.get(f"{gateway}/data/fixtures/") as resp:
            assert resp.status == 200
            assert resp.url.path == "/data/fixtures"
            assert locations(resp) == ["/data/fixtures"]
            assert "notes" in await resp.text()

        async with http.get(f"{gateway}/data/-/messages") as resp:
            page = await resp.text()
        found = re.search(r'name="csrftoken" value="([^"]+)"', page)
        assert found is not None
        form = {"csrftoken": found[1], "message": "Saved under a sub-path", "message_type": "INFO"}
        async with http.post(f"{gateway}/data/-/messages", data=form) as resp:
            assert resp.status == 200
            assert locations(resp) == ["/data/"]
            assert "Saved under a sub-path" in await resp.text()
            assert "; Path=/data;" in resp.history[0].headers["Set-Cookie"]
        # Datasette clears the message once shown (ds_messages with Path=/): that finds the
        # cookie it set, under /data.
        assert {cookie.key: cookie["path"] for cookie in http.cookie_jar} == {
            "ds_csrftoken": "/data"
        }


async def test_datasette_links_built_from_host_need_preserve_host(gateway: str) -> None:
    """Datasette builds absolute links (the Link header, JSON next_url) from Host: with
    preserve_host they name the gateway, without it the app's own internal address."""
    async with browser() as http:
        async with http.get(f"{gateway}/data/fixtures/notes") as resp:
            assert f"{gateway}/data/fixtures/notes.json" in resp.headers["Link"]
        async with http.get(f"{gateway}/data-internal/fixtures/notes") as resp:
            assert gateway not in resp.headers["Link"]
            assert "127.0.0.1" in resp.headers["Link"]
