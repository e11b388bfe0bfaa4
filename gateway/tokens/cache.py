"""A bounded LRU cache of minted upstream tokens, keyed by (session, audience).

A token is reused only while more than a fifth of its lifetime remains, so an upstream never
receives one about to expire. Single-threaded (the event loop); not safe to share across threads.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

CacheKey = tuple[str, str]
"""``(session.sid_hash, audience)``."""

DEFAULT_MAX_ENTRIES = 10_000
"""About 1 KiB each (token, key, index): ~10 MiB at most. Live entries are (sessions active
within one token lifetime) x (audiences they visit); beyond that, the oldest are re-minted."""
REUSE_UNTIL_REMAINING = 0.2
"""A cached token is served only while more than this share of its lifetime remains."""


@dataclass(frozen=True, slots=True)
class _Entry:
    token: str
    issued_at: int
    expires_at: int
    stamp: Hashable


class TokenCache:
    """Tokens by :data:`CacheKey`, evicting the least recently used beyond ``max_entries``.

    ``stamp`` (optional, any hashable) describes what the token was minted from, e.g. the
    user's claims: a lookup with a different stamp is a miss, so changed roles are never served
    from an old token.
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._by_session: dict[str, set[CacheKey]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey, now: float, *, stamp: Hashable = None) -> str | None:
        """The cached token while more than a fifth of its lifetime remains, else ``None``."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        lifetime = entry.expires_at - entry.issued_at
        fresh = entry.issued_at <= now and entry.expires_at - now > lifetime * REUSE_UNTIL_REMAINING
        if not fresh or entry.stamp != stamp:
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry.token

    def put(
        self, key: CacheKey, token: str, *, issued_at: int, expires_at: int, stamp: Hashable = None
    ) -> None:
        """Remember ``token`` (valid from ``issued_at`` to ``expires_at``, Unix seconds)."""
        self._entries[key] = _Entry(token, issued_at, expires_at, stamp)
        self._entries.move_to_end(key)
        self._by_session.setdefault(key[0], set()).add(key)
        while len(self._entries) > self.max_entries:
            oldest = next(iter(self._entries))
            self._remove(oldest)

    def drop_session(self, sid_hash: str) -> int:
        """Forget every token of one session (logout); returns how many were dropped."""
        keys = self._by_session.pop(sid_hash, set())
        for key in keys:
            del self._entries[key]
        return len(keys)

    def clear(self) -> None:
        self._entries.clear()
        self._by_session.clear()

    def _remove(self, key: CacheKey) -> None:
        del self._entries[key]
        keys = self._by_session.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_session[key[0]]
