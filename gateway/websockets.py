"""The WebSockets the gateway relays, so they can be ended on purpose: a user's when their
sessions end (close code 1008), everyone's when the process drains (1001)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("gateway.proxy")

POLICY_VIOLATION = 1008
"""Close code for a WebSocket whose user's sessions ended or whose route refuses them now."""
GOING_AWAY = 1001
"""Close code for every WebSocket when the process drains."""

Ender = Callable[[int, bytes], Awaitable[None]]
"""Closes a relayed WebSocket with a close code and reason (both sides)."""


@dataclass(frozen=True, slots=True, eq=False)
class OpenWebSocket:
    """One relayed WebSocket: whose it is (``None``: anonymous), on which route, how to end it."""

    username: str | None
    route: str
    end: Ender
    sid_hash: str | None = None
    """The session (or API token) it was opened with."""
    roles: frozenset[str] = frozenset()
    """The user's roles when it opened: what a reload's new rules are checked against for a
    user in no directory (a provider's, whose roles come from the session)."""


class OpenWebSockets:
    """The WebSockets relayed by this process (kept across reloads), so they can be closed when
    their user's sessions end, their route no longer admits them, or the process drains."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: set[OpenWebSocket] = set()

    def __len__(self) -> int:
        return len(self._open)

    def add(
        self,
        username: str | None,
        route: str,
        end: Ender,
        sid_hash: str | None = None,
        roles: frozenset[str] = frozenset(),
    ) -> OpenWebSocket:
        entry = OpenWebSocket(username, route, end, sid_hash, roles)
        self._open.add(entry)
        return entry

    def discard(self, entry: OpenWebSocket) -> None:
        self._open.discard(entry)

    async def close_where(
        self,
        doomed: Callable[[OpenWebSocket], bool],
        *,
        code: int = POLICY_VIOLATION,
        reason: bytes = b"session ended",
    ) -> int:
        """End every relay for which ``doomed(entry)`` holds; how many."""
        ending = [entry for entry in self._open if doomed(entry)]
        for entry in ending:
            self._open.discard(entry)
        results = await asyncio.gather(
            *(entry.end(code, reason) for entry in ending), return_exceptions=True
        )
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, ConnectionError):
                log.warning("closing a WebSocket failed: %s", type(result).__name__)
        return len(ending)
