"""Fixtures for identity tests: Redis helpers re-exported from :mod:`tests.redis_support`."""

from tests.redis_support import own_redis_server, redis_prefix, redis_url

__all__ = ["own_redis_server", "redis_prefix", "redis_url"]
