"""setuptools' entry point. The project's metadata is in pyproject.toml; this adds the modules
of ``gateway_build.COMPILED`` as mypyc extensions when ``GATEWAY_COMPILE=1``
(gateway_build/backend.py)."""

from setuptools import setup

from gateway_build import COMPILED
from gateway_build.backend import compiling

if compiling():
    from mypyc.build import mypycify

    setup(ext_modules=mypycify(list(COMPILED), opt_level="3"))
else:
    setup()
