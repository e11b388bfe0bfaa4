"""Prometheus metrics of CONTRACT section 6, as module-level objects in the default registry.

Served as Prometheus text on the admin listener's ``/metrics``; with ``server.workers > 1``
summed over every worker through prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set up by ``gateway run``).

Label values must come from configuration or fixed vocabularies (route and upstream names,
result and reason codes, HTTP methods and status codes), never from request data, so the number
of series stays bounded.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "gateway_requests_total",
    "Requests answered, by route name (or a fixed placeholder), method and status code.",
    ["route", "method", "code"],
)
REQUEST_DURATION = Histogram(
    "gateway_request_duration_seconds",
    "Time from request received to response complete, by route name.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors_total",
    "Upstream requests that failed, by upstream name and reason code (connect_failed, ...).",
    ["upstream", "reason"],
)
PASSWORD_VERIFICATIONS = Counter(
    "gateway_password_verifications_total",
    "Password hashes verified (each costs the hash's CPU time and memory; a locked-out attempt "
    "costs none).",
)
LOGIN_ATTEMPTS = Counter(
    "gateway_login_attempts_total",
    "Login attempts by result (success, failure, locked, ...).",
    ["result"],
)
TOKENS_MINTED = Counter(
    "gateway_tokens_minted_total",
    "JWTs signed: upstream tokens minted on a cache miss, and API bearer tokens.",
)
TOKEN_CACHE_HITS = Counter(
    "gateway_token_cache_hits_total",
    "Upstream tokens served from the token cache instead of being signed again.",
)
CONFIG_RELOADS = Counter(
    "gateway_config_reloads_total",
    "Configuration reloads (SIGHUP) by result (success, failure).",
    ["result"],
)
SESSIONS_ACTIVE = Gauge(
    "gateway_sessions_active",
    "Live sessions in the memory session store of this process.",
)
SESSION_CACHE_LIVE = Gauge(
    "gateway_session_cache_live",
    "1 while this process keeps Redis sessions locally (Redis reports every write to them on "
    "its tracking connection); 0 while every request reads Redis.",
)
STORE_OUTAGES = Counter(
    "gateway_session_store_outages_total",
    "Times the session store (Redis) became unavailable: each outage counts once, however many "
    "requests it refused.",
)
