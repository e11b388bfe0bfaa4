"""Who is calling: the authenticators, and the chain of them each route asks.

An :class:`Authenticator` looks for one kind of credential (an API bearer token, the session
cookie) and says who it proves, or ``None`` when the request carries none of its kind. A
:class:`Chain` asks its authenticators in order; the first that finds its credential decides, and
nobody else is asked: a bearer token that fails is a 401, never a fall-back to the cookie or to
anonymous. Routes get their chain from the runtime (bearer then session where
``accept_bearer``, else the session alone; nothing on a ``deny`` route); the login page,
``/.gateway/userinfo``, ``/.gateway/logout`` and the recheck of open WebSockets use the same
authenticators. An OpenID Connect session or a forward-auth check plugs in as one more
authenticator.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, Protocol

from gateway.config.settings import OidcProviderSettings
from gateway.errors import SessionStoreUnavailable
from gateway.http import Incoming, bearer_token
from gateway.identity.cookies import SessionCookie
from gateway.identity.revocation import Revocations, credentials_current
from gateway.identity.sessions import Session, SessionManager
from gateway.identity.users import User, UserDirectory
from gateway.oidc.claims import admits, provider_user
from gateway.tokens import InvalidBearer, Tokens

__all__ = [
    "ANONYMOUS",
    "Authenticated",
    "Authenticator",
    "BearerAuthenticator",
    "Chain",
    "Identity",
    "SessionAuthenticator",
]


# Plain classes with read-only (``Final``) attributes: made per request, and mypyc compiles
# their ``__init__`` (not a frozen dataclass's).


class Identity:
    __slots__ = ("session", "sid_hash", "user")

    def __init__(self, *, user: User, sid_hash: str, session: Session | None = None) -> None:
        self.user: Final = user
        self.sid_hash: Final = sid_hash
        """What tokens are minted and cached for: the session's hash, or an API token's
        stand-in."""
        self.session: Final = session
        """The browser session, when the caller came with the session cookie (not a bearer
        token)."""


class Authenticated:
    """What a chain found: an identity, or none, and why."""

    __slots__ = ("identity", "reason", "set_cookie")

    def __init__(
        self, *, identity: Identity | None, reason: str, set_cookie: str | None = None
    ) -> None:
        self.identity: Final = identity
        self.reason: Final = reason
        """``session`` or ``bearer`` (who proved the identity); without one, ``no_credentials``,
        ``session_unknown`` (expired, ended or tampered) or ``credentials_changed``."""
        self.set_cookie: Final = set_cookie
        """A ``Set-Cookie`` value for the response: a re-sealed session, or removal of a dead
        one."""


ANONYMOUS = Authenticated(identity=None, reason="no_credentials")


class Authenticator(Protocol):
    async def authenticate(self, request: Incoming, *, now: float) -> Authenticated | None:
        """Who the request's credential of this kind proves; ``None`` when it carries none.

        Raises :class:`~gateway.tokens.InvalidBearer` (401) for a credential that must not be
        passed over, :class:`~gateway.errors.SessionStoreUnavailable` when the store cannot
        answer."""
        ...


class SessionAuthenticator:
    """The session cookie: a live session of a user whose credentials have not changed since.

    A local user is looked up in the directory. A user who signed in at an OpenID Connect
    provider is not there: their identity is rebuilt from what the session kept of the ID
    token's claims, while the provider is still configured and its ``allowed`` rules still
    admit them."""

    def __init__(
        self,
        sessions: SessionManager,
        users: UserDirectory,
        revocations: Revocations,
        cookie: SessionCookie,
        providers: Iterable[OidcProviderSettings] = (),
    ) -> None:
        self._sessions = sessions
        self._users = users
        self._revocations = revocations
        self._cookie = cookie
        self._providers = {provider.name: provider for provider in providers}

    async def authenticate(self, request: Incoming, *, now: float) -> Authenticated | None:
        value = self._cookie.value(request)
        if value is None:
            return None
        loaded = await self._sessions.load(value, now=now)
        if loaded is None:
            # Expired, ended or tampered: drop the dead cookie.
            return Authenticated(
                identity=None, reason="session_unknown", set_cookie=self._cookie.expired()
            )
        session = loaded.session
        user = self._user(session)
        if user is None:
            # SECURITY: the user was removed or disabled, changed password, or was revoked since
            # this session began: it ends for good, in every backend that keeps sessions.
            await self._sessions.delete(value)
            return Authenticated(
                identity=None, reason="credentials_changed", set_cookie=self._cookie.expired()
            )
        set_cookie = None
        if loaded.refreshed_cookie is not None:
            remaining = session.created_at + self._sessions.absolute_s - now
            set_cookie = self._cookie.set(loaded.refreshed_cookie, max_age_s=remaining)
        identity = Identity(user=user, sid_hash=session.sid_hash, session=session)
        return Authenticated(identity=identity, reason="session", set_cookie=set_cookie)

    def _user(self, session: Session) -> User | None:
        """Who the session stands for, or ``None`` when it no longer counts."""
        login = session.provider
        if login is None:
            user = self._users.get(session.username)
            if user is None or not credentials_current(
                user, session.stamp, session.created_at, self._revocations
            ):
                return None
            return user
        provider = self._providers.get(login.idp)
        if (
            provider is None
            # The provider's name now stands for another issuer (a reload): not who signed in.
            or login.issuer != provider.issuer
            or not admits(provider.allowed, session.username, login)
            # SECURITY: a local user of that name appeared since (a reload): the name is theirs.
            or session.username in self._users
            or session.created_at < self._revocations.since(session.username)
        ):
            return None
        return provider_user(session.username, login)


class BearerAuthenticator:
    """An API client's ``Authorization: Bearer`` token, issued by ``POST /.gateway/token``."""

    def __init__(self, tokens: Tokens, users: UserDirectory, revocations: Revocations) -> None:
        self._tokens = tokens
        self._users = users
        self._revocations = revocations

    async def authenticate(self, request: Incoming, *, now: float) -> Authenticated | None:
        token = bearer_token(request)
        if token is None:
            return None
        claims = self._tokens.verify_bearer(token)
        user = self._users.get(claims.subject)
        if user is None:
            # The user was removed since the token was issued: the token dies with them.
            raise InvalidBearer("token subject is not a known user", reason="bearer_unknown_user")
        if not credentials_current(user, claims.stamp, claims.issued_at, self._revocations):
            # Disabled, another password, or revoked since the token was issued.
            raise InvalidBearer("credentials changed", reason="bearer_credentials_changed")
        return Authenticated(
            identity=Identity(user=user, sid_hash=claims.sid_hash), reason="bearer"
        )


class Chain:
    """Authenticators asked in order; the first that finds its credential decides."""

    __slots__ = ("_authenticators",)

    def __init__(self, authenticators: Sequence[Authenticator]) -> None:
        self._authenticators = tuple(authenticators)

    async def authenticate(self, request: Incoming, *, now: float) -> Authenticated:
        for authenticator in self._authenticators:
            found = await authenticator.authenticate(request, now=now)
            if found is not None:
                return found
        return ANONYMOUS

    async def still_valid(self, request: Incoming, identity: Identity, *, now: float) -> bool:
        """For an open WebSocket: whether the credential it was opened with still proves the
        same identity (the session lives, the bearer token has not expired, the user's
        credentials are unchanged). An outage of the store does not end every socket."""
        try:
            found = await self.authenticate(request, now=now)
        except InvalidBearer:
            return False
        except SessionStoreUnavailable:
            return True
        return found.identity is not None and found.identity.sid_hash == identity.sid_hash
