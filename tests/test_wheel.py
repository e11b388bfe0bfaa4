"""The package as a user installs it: the wheel built from this checkout, installed into a fresh
virtual environment, runs ``gateway demo`` from an empty folder.

The wheel is built in a copy of the checkout (what git tracks, plus files not yet added), so the
working tree gets no ``build/`` directory. The fresh environment installs nothing from the
network: a ``.pth`` file lets it see the packages of the environment running the tests (its
dependencies), while its own ``site-packages`` holds the wheel's ``gateway``, which therefore
comes first; the checkout's editable install is not visible there (its finder is installed by a
``.pth`` file of the outer environment, which only that environment's start-up runs).
"""

from __future__ import annotations

import asyncio
import email.parser
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(argv: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _checkout_copy(target: Path) -> None:
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO)
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if not os.path.lexists(source):  # deleted in the working tree
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name, follow_symlinks=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    _checkout_copy(source)
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dist), str(source)])
    (built,) = dist.glob("gateway-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Iterator[Path]:
    """A fresh environment with the wheel installed; returns its ``bin`` directory."""
    root = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", str(root)])
    python = root / "bin" / "python"
    purelib = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).strip()
    )
    outer = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (purelib / "outer-environment.pth").write_text("".join(f"{path}\n" for path in outer))
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-index",
            "--no-deps",
            # the outer environment's gateway (an editable install) is visible through the .pth
            # file: without this, pip calls the wheel "already satisfied" and installs nothing
            "--ignore-installed",
            str(wheel),
        ]
    )
    yield root / "bin"


def test_the_license_file_is_the_license_pyproject_names():
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.split()[:5] == ["Apache", "License", "Version", "2.0,", "January"]
    assert "END OF TERMS AND CONDITIONS" in text


@pytest.mark.slow
def test_the_wheel_holds_the_example_config_pages_license_and_metadata(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        example = archive.read("gateway/config.example.yaml")
        license_text = archive.read("gateway-0.1.0.dist-info/licenses/LICENSE")
        metadata = email.parser.BytesParser().parsebytes(
            archive.read("gateway-0.1.0.dist-info/METADATA")
        )
    assert example == (REPO / "config.example.yaml").read_bytes()
    assert license_text == (REPO / "LICENSE").read_bytes()
    pages = {
        path.name
        for path in (REPO / "gateway" / "pages").iterdir()
        if path.is_file() and path.suffix not in (".py", ".pyc")
    }
    assert {f"gateway/pages/{name}" for name in pages} <= names
    assert "gateway/py.typed" in names
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata.get_all("Classifier") == PYPROJECT["project"]["classifiers"]


async def _read_banner(stream: asyncio.StreamReader) -> str:
    lines: list[str] = []
    while True:
        line = (await asyncio.wait_for(stream.readline(), 30)).decode()
        assert line, "the demo exited before it was ready:\n" + "".join(lines)
        lines.append(line)
        if line.startswith("Press Ctrl+C"):
            return "".join(lines)


def _clean_env() -> dict[str, str]:
    """The user's environment, without what would let the checkout's code in."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_the_installed_wheel_runs_the_demo_from_an_empty_folder(venv, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        str(venv / "gateway"),
        "demo",
        "--port",
        str(port),
        cwd=folder,
        env=_clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        banner = await _read_banner(proc.stdout)
        url = f"http://127.0.0.1:{port}"
        assert f"gateway demo: open {url}/" in banner
        shown = {line.split()[0]: line for line in banner.splitlines() if line.startswith("  ")}
        config = Path(shown["config"].split()[-1])
        assert config.is_relative_to(venv.parent), banner  # the wheel's copy
        assert config.name == "config.example.yaml"
        assert "http://127.0.0.1:9000" not in shown["upstream"]  # --port: any free port instead

        cookies = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(url, cookie_jar=cookies) as session:
            async with session.get("/.gateway/healthz") as resp:
                assert resp.status == 200
            async with session.get("/.gateway/login", headers=HTML) as resp:
                assert resp.status == 200
                assert "<form" in await resp.text()
            async with session.get("/.gateway/static/gateway.css") as resp:
                assert resp.status == 200
            login = {"username": "alice", "password": "wonderland"}
            async with session.post("/.gateway/login", json=login) as resp:
                assert resp.status == 200
            async with session.get("/api/v1/hello", headers=JSON) as resp:
                assert resp.status == 200
                data = await resp.json()
            assert data["token"]["claims"]["sub"] == "alice"
            assert data["token"]["verified"] is True, data["token"]

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        assert "Traceback" not in (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # The demo's key lived in a temporary data_dir: nothing is left in the folder or the package.
    assert list(folder.iterdir()) == []
    assert not (config.parent / ".gateway").exists()


@pytest.mark.slow
def test_the_installed_demo_on_a_busy_port_says_so_in_one_line(venv, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        done = subprocess.run(
            [str(venv / "gateway"), "demo", "--port", str(port)],
            cwd=tmp_path,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr.startswith(f"gateway demo: port {port} on 127.0.0.1 is already in use")
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Press Ctrl+C" not in done.stdout
