"""One exception tree for everything that ends a request early.

Each class knows its HTTP status, a client-safe message and ``code`` (both shown to clients),
and a stable ``reason`` for logs and metrics (more precise than ``code``; defaults to it).
:mod:`gateway.pages` turns them into HTML or JSON responses; the detail (``str(exc)``) goes to
the log only.
"""

from __future__ import annotations

from typing import ClassVar


class GatewayError(Exception):
    status: int = 500
    public_message: ClassVar[str] = "Internal error"
    code: str = "internal"
    reason: str = "internal"

    def __init__(self, detail: str = "", *, reason: str | None = None) -> None:
        super().__init__(detail or self.public_message)
        if reason is not None:
            self.reason = reason


class BadRequest(GatewayError):
    status = 400
    public_message = "Bad request"
    code = "bad_request"
    reason = "bad_request"


class Unauthenticated(GatewayError):
    status = 401
    public_message = "Authentication required"
    code = "unauthenticated"
    reason = "unauthenticated"


class Forbidden(GatewayError):
    status = 403
    public_message = "Access denied"
    code = "forbidden"
    reason = "forbidden"


class AccessDenied(Forbidden):
    """A signed-in caller whom the route's access rule refuses. A browser signed in with a
    session gets a page saying who is signed in, with "sign in as someone else" (back to
    ``rd``) and "sign out"; everyone else the plain 403."""

    def __init__(self, detail: str, *, username: str, by_session: bool, rd: str) -> None:
        super().__init__(detail)
        self.username = username
        self.by_session = by_session
        self.rd = rd
        """The refused request's path and query: where signing in again returns to."""


class NotFound(GatewayError):
    status = 404
    public_message = "Not found"
    code = "not_found"
    reason = "no_route"


class MethodNotAllowed(GatewayError):
    status = 405
    public_message = "Method not allowed"
    code = "method_not_allowed"
    reason = "method_not_allowed"


class ExpectationFailed(GatewayError):
    status = 417
    public_message = "Unsupported Expect header"
    code = "expectation_failed"
    reason = "bad_expect"


class PayloadTooLarge(GatewayError):
    status = 413
    public_message = "Request body too large"
    code = "body_too_large"
    reason = "body_too_large"


class UpstreamError(GatewayError):
    """The upstream could not give a usable answer."""

    status = 502
    public_message = "Bad gateway: the application did not answer"
    code = "bad_gateway"
    reason = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    status = 502
    public_message = "Bad gateway: the application is unreachable"
    reason = "connect_failed"


class UpstreamTimeout(UpstreamError):
    status = 504
    public_message = "Gateway timeout: the application took too long to answer"
    code = "gateway_timeout"
    reason = "timeout"


class ServiceUnavailable(GatewayError):
    status = 503
    public_message = "Service temporarily unavailable"
    code = "unavailable"
    reason = "unavailable"


class SessionStoreUnavailable(ServiceUnavailable):
    """The session store cannot be reached: requests that need a session fail closed (503)."""

    reason = "session_store_unavailable"


class UpstreamAborted(UpstreamError):
    """The upstream closed the connection before the response body was complete."""

    reason = "upstream_aborted"


class ClientStalled(GatewayError):
    """The client stopped reading the response (``server.timeouts.send``): it is dropped."""

    status = 408
    public_message = "Request timeout"
    code = "timeout"
    reason = "client_stalled"
