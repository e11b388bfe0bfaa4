"""Signing in through external OpenID Connect providers (``login.oidc``): the providers as the
gateway talks to them (:mod:`.provider`), verifying what they sign (:mod:`.verify`), the
identity mapped from their claims (:mod:`.claims`), the browser-bound sign-in in progress
(:mod:`.state`) and what may be used only once (:mod:`.replay`).

The endpoints (``/.gateway/oidc/...``) are :mod:`gateway.login.oidc`; sessions of provider users
are recognised by :class:`gateway.auth.SessionAuthenticator`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator

from gateway.config.settings import OidcProviderSettings
from gateway.oidc.provider import Provider

__all__ = ["Provider", "Providers", "keep_discovered"]

log = logging.getLogger("gateway.oidc")

_POLL_S = 1.0


class Providers:
    """The configured providers by name, in configuration order."""

    def __init__(self, providers: tuple[Provider, ...] = ()) -> None:
        self._by_name = {provider.name: provider for provider in providers}

    @classmethod
    def of(
        cls, settings: tuple[OidcProviderSettings, ...], previous: Providers | None = None
    ) -> Providers:
        """Providers for ``settings``; on reload, those whose settings did not change are
        carried over from ``previous`` (with what they learnt: no new discovery)."""
        kept = previous._by_name if previous is not None else {}
        return cls(
            tuple(
                kept[entry.name]
                if entry.name in kept and kept[entry.name].settings == entry
                else Provider(entry)
                for entry in settings
            )
        )

    def get(self, name: str) -> Provider | None:
        return self._by_name.get(name)

    def __iter__(self) -> Iterator[Provider]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    async def discover_due(self) -> None:
        """Try discovery again for every unavailable provider whose retry time has come."""
        now = time.monotonic()
        due = [p for p in self if not p.available and p.retry_at <= now]
        if due:
            await asyncio.gather(*(provider.discover() for provider in due))

    async def close(self, *, keep: Providers | None = None) -> None:
        """Close the providers' HTTP clients, except those ``keep`` (the successor) shares."""
        kept = set(map(id, keep)) if keep is not None else set()
        for provider in self:
            if id(provider) not in kept:
                await provider.close()


async def keep_discovered(current: Callable[[], Providers]) -> None:
    """Run until cancelled: discover the current runtime's providers, retrying those that are
    down (each with its own growing delay, see :class:`~.provider.Provider`)."""
    while True:
        with contextlib.suppress(Exception):
            await current().discover_due()
        await asyncio.sleep(_POLL_S)
