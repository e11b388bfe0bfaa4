"""Talking to upstreams: the client interface (:mod:`.base`) and its aiohttp implementation."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.config.settings import UpstreamSettings
from gateway.upstream.aiohttp_client import AiohttpUpstreamClient
from gateway.upstream.base import (
    Headers,
    UpstreamClient,
    UpstreamRequest,
    UpstreamResponse,
    WebSocketRefused,
    WebSocketUpstreamClient,
)

__all__ = [
    "AiohttpUpstreamClient",
    "Headers",
    "UpstreamClient",
    "UpstreamRequest",
    "UpstreamResponse",
    "WebSocketRefused",
    "WebSocketUpstreamClient",
    "create_client",
]


def create_client(upstreams: Mapping[str, UpstreamSettings]) -> UpstreamClient:
    """The upstream client for ``settings.upstreams`` (HTTP and WebSocket capable).

    Build it at start-up (no loop needed: the pooled session is created inside the loop by the
    first request) and ``await client.close()`` on shutdown, e.g. from a ``cleanup_ctx``.
    """
    return AiohttpUpstreamClient(upstreams)
