"""The build backend: setuptools', plus mypy's compiler (mypyc) when the environment says
``GATEWAY_COMPILE=1``.

A compiled wheel carries the modules of :data:`gateway_build.COMPILED` as C extensions built by
mypyc from the same, type-checked source: the request path runs without the interpreter's
per-bytecode overhead (``bench/run.py`` measures the difference). The container image is built
this way. An editable install (``pip install -e .``) is never compiled: an extension next to
its source would shadow every later edit of that source.
"""

from __future__ import annotations

import os
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  (the PEP 517 / 660 hooks, re-exported)
    build_sdist,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

MYPY = "mypy>=1.13"
"""mypyc comes with mypy."""


def compiling() -> bool:
    return os.environ.get("GATEWAY_COMPILE", "") == "1"


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    if not compiling():
        return list(_setuptools.get_requires_for_build_wheel(config_settings))
    # setuptools runs setup.py to find its own requirements, before mypy is there to import.
    os.environ["GATEWAY_COMPILE"] = "0"
    try:
        requires = list(_setuptools.get_requires_for_build_wheel(config_settings))
    finally:
        os.environ["GATEWAY_COMPILE"] = "1"
    return [*requires, MYPY]


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    return str(_setuptools.build_wheel(wheel_directory, config_settings, metadata_directory))


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    return list(_setuptools.get_requires_for_build_editable(config_settings))


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    os.environ.pop("GATEWAY_COMPILE", None)  # never compiled: see the module's docstring
    return str(_setuptools.build_editable(wheel_directory, config_settings, metadata_directory))
