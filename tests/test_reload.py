"""A reload that fails for any reason leaves the running configuration in place."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

from gateway import reload as reload_module
from gateway.bundle import load
from gateway.runtime import Runtime, RuntimeHolder

CONFIG = """
server: { listen: "127.0.0.1:8080", public_url: "http://127.0.0.1:8080", data_dir: %s }
upstreams: { app: { url: "http://127.0.0.1:9000" } }
routes: [ { name: all, match: { path_prefix: / }, upstream: app, access: public } ]
"""


def failures() -> float:
    value = REGISTRY.get_sample_value("gateway_config_reloads_total", {"result": "failure"})
    return value or 0.0


@pytest.mark.parametrize(
    "error", [ValueError("Port out of range 0-65535"), OSError(13, "Permission denied")]
)
async def test_an_unexpected_build_error_is_refused_logged_and_counted(
    tmp_path, monkeypatch, caplog, error
):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG % tmp_path)
    running = Runtime.build(load(config))
    holder = RuntimeHolder(running)

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(reload_module.Runtime, "build", broken)
    before = failures()
    with caplog.at_level(logging.ERROR, logger="gateway.reload"):
        assert await reload_module.reload(holder, config) is False
    assert holder.current is running
    assert failures() == before + 1
    assert any(getattr(r, "reason", None) == "reload_error" for r in caplog.records)
    await running.close()
