"""The WebSockets the gateway relays for signed-in users, so they can be ended on purpose."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("gateway.proxy")


@dataclass(frozen=True, slots=True, eq=False)
class OpenWebSocket:
    """One relayed WebSocket: whose it is, on which route, and how to end it."""

    username: str
    route: str
    end: Callable[[], Awaitable[None]]


class OpenWebSockets:
    """The WebSockets relayed by this process for signed-in users (kept across reloads), so
    they can be closed when their user's sessions end or their route no longer admits them."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: set[OpenWebSocket] = set()

    def __len__(self) -> int:
        return len(self._open)

    def add(
        self, username: str, route: str, end: Callable[[], Awaitable[None]]
    ) -> OpenWebSocket:
        entry = OpenWebSocket(username, route, end)
        self._open.add(entry)
        return entry

    def discard(self, entry: OpenWebSocket) -> None:
        self._open.discard(entry)

    async def close_where(self, doomed: Callable[[OpenWebSocket], bool]) -> int:
        """End every relay for which ``doomed(entry)`` holds; how many."""
        ending = [entry for entry in self._open if doomed(entry)]
        for entry in ending:
            self._open.discard(entry)
        results = await asyncio.gather(*(entry.end() for entry in ending), return_exceptions=True)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, ConnectionError):
                log.warning("closing a WebSocket failed: %s", type(result).__name__)
        return len(ending)
