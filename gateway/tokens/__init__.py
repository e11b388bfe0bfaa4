"""JWTs: the key set and JWKS, minting for upstreams and API clients, the token cache, and
verification of API clients' bearer tokens.

Start-up: ``keyset = load_keyset(settings.tokens, settings.server.data_dir)`` then
``tokens = Tokens(keyset, settings.tokens)``; see :class:`Tokens` for the rest.
"""

from gateway.tokens.cache import TokenCache
from gateway.tokens.keys import (
    GENERATED_KEY_NAME,
    KeyConfigError,
    KeySet,
    SigningKey,
    generate_hmac_secret,
    generate_private_key,
    jwk_thumbprint,
    load_keyset,
    write_private_key,
)
from gateway.tokens.mint import TokenMinter, session_claim
from gateway.tokens.service import Tokens
from gateway.tokens.verify import ApiClaims, InvalidBearer, verify_api_token

__all__ = [
    "GENERATED_KEY_NAME",
    "ApiClaims",
    "InvalidBearer",
    "KeyConfigError",
    "KeySet",
    "SigningKey",
    "TokenCache",
    "TokenMinter",
    "Tokens",
    "generate_hmac_secret",
    "generate_private_key",
    "jwk_thumbprint",
    "load_keyset",
    "session_claim",
    "verify_api_token",
    "write_private_key",
]
