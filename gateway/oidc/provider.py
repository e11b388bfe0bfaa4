"""One OpenID Connect provider as the gateway talks to it: discovery, its keys, the token
endpoint.

- **Discovery** reads ``<issuer>/.well-known/openid-configuration``; the document's ``issuer``
  must equal the configured one exactly (OpenID Connect Discovery 4.3), and its endpoints must
  be https (http only on loopback, like the issuer). Until discovery succeeds the provider is
  *unavailable*: its button says so, and :meth:`Provider.discover` is retried in the
  background with a growing delay (see :mod:`gateway.oidc`).
- **Keys** (the JWKS) are cached; a token signed with a ``kid`` not in the cache triggers one
  refresh, at most once per :data:`JWKS_MIN_REFRESH_S` (a stream of tokens with made-up kids
  must not make us hammer the provider). Only asymmetric signature keys are kept, at most
  :data:`MAX_KEYS`.
- Every request to the provider has a timeout (:data:`TIMEOUT_S`) and a bounded answer
  (:data:`MAX_DOCUMENT_BYTES`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import jwt

from gateway.config.settings import OidcProviderSettings

log = logging.getLogger("gateway.oidc")

TIMEOUT_S = 5.0
MAX_DOCUMENT_BYTES = 256 * 1024
MAX_KEYS = 50
JWKS_MIN_REFRESH_S = 30.0
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
"""The only signature algorithms accepted from a provider. Never ``none``, never HS*: an HMAC
"key" made from a provider's public key is a classic forgery."""

_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


class ProviderError(Exception):
    """The provider could not be used (down, bad answer, refused); ``reason`` for the log.
    Messages never hold a secret, a code or a token."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class Metadata:
    """What discovery told us."""

    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None
    algorithms: frozenset[str]
    """ID token algorithms: those the provider advertises that we accept."""
    auth_methods: tuple[str, ...]
    """``token_endpoint_auth_methods_supported`` (default ``client_secret_basic``)."""
    iss_parameter: bool = False
    """``authorization_response_iss_parameter_supported``: its answers always carry ``iss``
    (RFC 9207)."""


class Provider:
    """A provider of ``login.oidc``; its metadata and keys are learnt from the network."""

    def __init__(self, settings: OidcProviderSettings) -> None:
        self.settings = settings
        self.metadata: Metadata | None = None
        self._keys: dict[str, dict[str, Any]] = {}
        self._keys_fetched_at = float("-inf")
        self._keys_lock = asyncio.Lock()
        self._discover_lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None
        self.retry_at = 0.0
        """Monotonic time of the next discovery attempt while unavailable."""
        self._retry_s = RETRY_FIRST_S

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def available(self) -> bool:
        return self.metadata is not None

    # --- discovery -----------------------------------------------------------------------------

    async def discover(self) -> bool:
        """Read the discovery document and the keys; ``True`` when the provider is usable.
        A failure is logged (once per attempt) and the next attempt scheduled later."""
        async with self._discover_lock:
            if self.metadata is not None:
                return True
            try:
                metadata = await self._read_metadata()
                keys = await self._read_keys(metadata.jwks_uri)
            except ProviderError as exc:
                log.warning(
                    "OpenID Connect provider %s unavailable: %s; retrying in %.0fs",
                    self.name,
                    exc,
                    self._retry_s,
                    extra={"reason": exc.reason},
                )
                self.retry_at = time.monotonic() + self._retry_s
                self._retry_s = min(RETRY_MAX_S, self._retry_s * 2)
                return False
            self._keys, self._keys_fetched_at = keys, time.monotonic()
            self.metadata = metadata
            self._retry_s = RETRY_FIRST_S
            log.info(
                "OpenID Connect provider %s discovered (%d signing key(s))",
                self.name,
                len(keys),
                extra={"reason": "oidc_discovered"},
            )
            return True

    async def _read_metadata(self) -> Metadata:
        issuer = self.settings.issuer
        document = await self._get_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
        # SECURITY: exact match (OpenID Connect Discovery 4.3): a document that names another
        # issuer would let that issuer's tokens in.
        if document.get("issuer") != issuer:
            raise ProviderError(
                "the discovery document names another issuer", reason="oidc_issuer_mismatch"
            )
        endpoints = {}
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            endpoints[key] = _endpoint(document.get(key), key)
        end_session = document.get("end_session_endpoint")
        advertised = document.get("id_token_signing_alg_values_supported", ["RS256"])
        if not isinstance(advertised, list):
            advertised = ["RS256"]
        algorithms = frozenset(a for a in advertised if a in ASYMMETRIC_ALGORITHMS)
        if not algorithms:
            raise ProviderError(
                "the provider signs ID tokens with no algorithm the gateway accepts",
                reason="oidc_no_algorithm",
            )
        methods = document.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
        if not isinstance(methods, list):
            methods = ["client_secret_basic"]
        return Metadata(
            authorization_endpoint=endpoints["authorization_endpoint"],
            token_endpoint=endpoints["token_endpoint"],
            jwks_uri=endpoints["jwks_uri"],
            end_session_endpoint=(
                _endpoint(end_session, "end_session_endpoint") if end_session else None
            ),
            algorithms=algorithms,
            auth_methods=tuple(m for m in methods if isinstance(m, str)),
            iss_parameter=document.get("authorization_response_iss_parameter_supported") is True,
        )

    async def _read_keys(self, jwks_uri: str) -> dict[str, dict[str, Any]]:
        document = await self._get_json(jwks_uri)
        raw = document.get("keys")
        if not isinstance(raw, list):
            raise ProviderError("the JWKS has no keys list", reason="oidc_bad_jwks")
        keys: dict[str, dict[str, Any]] = {}
        for index, jwk in enumerate(raw):
            if len(keys) >= MAX_KEYS:
                break
            if not isinstance(jwk, dict) or jwk.get("kty") not in ("RSA", "EC", "OKP"):
                continue  # SECURITY: never a symmetric ("oct") key from a provider
            if jwk.get("use", "sig") != "sig":
                continue
            kid = jwk.get("kid")
            keys[kid if isinstance(kid, str) else f"\x00{index}"] = jwk
        return keys

    # --- keys ----------------------------------------------------------------------------------

    async def signing_key(self, header: dict[str, Any]) -> jwt.PyJWK:
        """The provider's key for a token with this (unverified) header: its ``alg`` in the
        allow-list, its ``kid`` in the JWKS (refreshed once, rate-limited, when unknown).
        Raises :class:`ProviderError` for anything else."""
        metadata = self.metadata
        if metadata is None:
            raise ProviderError("provider not discovered", reason="oidc_unavailable")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in metadata.algorithms:
            raise ProviderError(
                f"token algorithm {str(alg)[:20]!r} not accepted", reason="oidc_bad_algorithm"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise ProviderError("token kid is not a string", reason="oidc_unknown_key")
        jwk = self._find(kid, alg)
        if jwk is None:
            await self._refresh_keys()
            jwk = self._find(kid, alg)
        if jwk is None:
            raise ProviderError("token signed with an unknown key", reason="oidc_unknown_key")
        try:
            return jwt.PyJWK(jwk, algorithm=alg)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            raise ProviderError("the provider's key is unusable", reason="oidc_bad_jwks") from None

    def _find(self, kid: str | None, alg: str) -> dict[str, Any] | None:
        fitting = [
            (found_kid, jwk)
            for found_kid, jwk in self._keys.items()
            if _fits(jwk, alg) and (kid is None or found_kid == kid)
        ]
        if kid is None and len(fitting) != 1:
            return None  # without a kid, only an unambiguous key will do
        return fitting[0][1] if fitting else None

    async def _refresh_keys(self) -> None:
        async with self._keys_lock:
            if time.monotonic() - self._keys_fetched_at < JWKS_MIN_REFRESH_S:
                return
            self._keys_fetched_at = time.monotonic()
            assert self.metadata is not None
            try:
                self._keys = await self._read_keys(self.metadata.jwks_uri)
            except ProviderError as exc:
                log.warning(
                    "could not refresh the keys of %s: %s",
                    self.name,
                    exc,
                    extra={"reason": exc.reason},
                )

    # --- the token endpoint --------------------------------------------------------------------

    async def exchange_code(self, code: str, *, verifier: str, redirect_uri: str) -> dict[str, Any]:
        """The token response for an authorization code (with its PKCE verifier); raises
        :class:`ProviderError` when the provider refuses or cannot be reached."""
        metadata = self.metadata
        if metadata is None:
            raise ProviderError("provider not discovered", reason="oidc_unavailable")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        headers = {"Accept": "application/json"}
        secret = self.settings.client_secret
        client_id = self.settings.client_id
        if secret is None:
            form["client_id"] = client_id
        elif "client_secret_basic" in metadata.auth_methods or (
            "client_secret_post" not in metadata.auth_methods
        ):
            # RFC 6749 2.3.1: both parts are form-encoded before Basic encoding.
            pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = client_id
            form["client_secret"] = secret
        try:
            async with self._session().post(
                metadata.token_endpoint, data=form, headers=headers, allow_redirects=False
            ) as response:
                body = await _read_bounded(response)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ProviderError(
                f"token endpoint unreachable ({type(exc).__name__})", reason="oidc_unavailable"
            ) from None
        document = _json_object(body)
        if status != 200 or document is None:
            error = document.get("error") if document is not None else None
            shown = error[:64] if isinstance(error, str) else f"HTTP {status}"
            raise ProviderError(
                f"the token endpoint refused the code ({shown})", reason="oidc_code_refused"
            )
        return document

    # --- HTTP ----------------------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
                headers={"User-Agent": "gateway"},
            )
        return self._http

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self._session().get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise ProviderError(
                        f"{urlsplit(url).path} answered HTTP {response.status}",
                        reason="oidc_unavailable",
                    )
                body = await _read_bounded(response)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ProviderError(
                f"{urlsplit(url).path} unreachable ({type(exc).__name__})",
                reason="oidc_unavailable",
            ) from None
        document = _json_object(body)
        if document is None:
            raise ProviderError(
                f"{urlsplit(url).path} is not a JSON object", reason="oidc_bad_json"
            )
        return document

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > MAX_DOCUMENT_BYTES:
            raise ProviderError("the provider's answer is too large", reason="oidc_too_large")
    return bytes(body)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def _endpoint(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ProviderError(f"the discovery document has no {key}", reason="oidc_bad_discovery")
    parts = urlsplit(value)
    host = parts.hostname or ""
    loopback = host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        # SECURITY: codes, secrets and keys never travel in clear.
        raise ProviderError(f"the {key} is not https", reason="oidc_bad_discovery")
    return value


def _fits(jwk: dict[str, Any], alg: str) -> bool:
    """Whether a JWK can verify ``alg``: its own ``alg`` when it states one, else its type."""
    stated = jwk.get("alg")
    if stated is not None:
        return bool(stated == alg)
    if jwk.get("kty") != _KEY_TYPES[alg[:2]]:
        return False
    curve = _CURVES.get(alg)
    return curve is None or jwk.get("crv") == curve
