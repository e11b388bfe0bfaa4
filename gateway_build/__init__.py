"""How the gateway is built: setuptools, and mypyc for the modules on the request path when a
wheel is built with ``GATEWAY_COMPILE=1`` (:mod:`gateway_build.backend`)."""

COMPILED = (
    # what every plain request runs through, from the first byte read to the access-log line
    "gateway/app.py",
    "gateway/proxy.py",
    "gateway/plain.py",
    "gateway/http.py",
    "gateway/context.py",
    "gateway/forwarded.py",
    "gateway/hosts.py",
    "gateway/paths.py",
    "gateway/routing.py",
    "gateway/plan.py",
    "gateway/access.py",
    "gateway/auth.py",
    "gateway/headers.py",
    "gateway/rewrite.py",
    "gateway/metrics.py",
    "gateway/accesslog.py",
    "gateway/upstream/lean_client.py",
    # who is calling: sessions, users, tokens
    "gateway/identity/cookies.py",
    "gateway/identity/revocation.py",
    "gateway/identity/users.py",
    "gateway/identity/sessions/base.py",
    "gateway/identity/sessions/cookie.py",
    "gateway/identity/sessions/manager.py",
    "gateway/identity/sessions/memory.py",
    "gateway/identity/sessions/redis.py",
    "gateway/identity/sessions/tracking.py",
    "gateway/tokens/cache.py",
    "gateway/tokens/mint.py",
    "gateway/tokens/service.py",
    "gateway/tokens/upstream.py",
    "gateway/tokens/verify.py",
)
"""Compiled by mypyc into a ``GATEWAY_COMPILE=1`` wheel; every other module stays Python.
Each one compiles as it is (mypy strict); a module left out either runs rarely or uses what
mypyc does not compile (async generators, subclasses of aiohttp's classes) or a class it
cannot compile as written (gateway/upstream/base.py)."""
