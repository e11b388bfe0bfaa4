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
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from setuptools import build_meta as _setuptools

MYPY = "mypy>=1.13"
"""mypyc comes with mypy."""

_VARIABLE = "GATEWAY_COMPILE"


def compiling() -> bool:
    return os.environ.get(_VARIABLE, "") == "1"


@contextmanager
def _not_compiling() -> Iterator[None]:
    """setup.py compiles only inside :func:`build_wheel`. Every other hook runs it too (for
    requirements, metadata, an sdist, an editable install) and runs it with the variable off:
    mypy may not be installed yet, and none of them needs the extensions."""
    saved = os.environ.get(_VARIABLE)
    os.environ[_VARIABLE] = "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[_VARIABLE]
        else:
            os.environ[_VARIABLE] = saved


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    wanted = compiling()
    with _not_compiling():
        requires = list(_setuptools.get_requires_for_build_wheel(config_settings))
    return [*requires, MYPY] if wanted else requires


def prepare_metadata_for_build_wheel(
    metadata_directory: str, config_settings: dict[str, Any] | None = None
) -> str:
    with _not_compiling():
        return str(
            _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)
        )


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    return str(_setuptools.build_wheel(wheel_directory, config_settings, metadata_directory))


def get_requires_for_build_sdist(config_settings: dict[str, Any] | None = None) -> list[str]:
    with _not_compiling():
        return list(_setuptools.get_requires_for_build_sdist(config_settings))


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    with _not_compiling():
        return str(_setuptools.build_sdist(sdist_directory, config_settings))


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    with _not_compiling():
        return list(_setuptools.get_requires_for_build_editable(config_settings))


def prepare_metadata_for_build_editable(
    metadata_directory: str, config_settings: dict[str, Any] | None = None
) -> str:
    with _not_compiling():
        return str(
            _setuptools.prepare_metadata_for_build_editable(metadata_directory, config_settings)
        )


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    with _not_compiling():  # never compiled: see the module's docstring
        return str(_setuptools.build_editable(wheel_directory, config_settings, metadata_directory))
