"""Talking to upstreams: the client interface (:mod:`.base`) and its implementations, on aiohttp
(:mod:`.aiohttp_client`) and on raw asyncio + httptools (:mod:`.lean_client`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

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
from gateway.upstream.lean_client import LeanUpstreamClient

__all__ = [
    "AiohttpUpstreamClient",
    "ClientFactory",
    "Headers",
    "LeanUpstreamClient",
    "UpstreamClient",
    "UpstreamRequest",
    "UpstreamResponse",
    "WebSocketRefused",
    "WebSocketUpstreamClient",
    "create_client",
]


ClientFactory = Callable[[Mapping[str, UpstreamSettings]], UpstreamClient]
"""Builds an upstream client for ``settings.upstreams``."""


def create_client(upstreams: Mapping[str, UpstreamSettings]) -> UpstreamClient:
    """The upstream client for ``settings.upstreams`` (HTTP and WebSocket capable): the lean
    client, whose WebSockets go through aiohttp.

    Build it at start-up (no loop needed: connections open on first use) and
    ``await client.close()`` on shutdown.
    """
    return LeanUpstreamClient(upstreams)
