from tests.redis_support import own_redis_server, redis_prefix, redis_url  # noqa: F401
