"""Reading the small bodies the login endpoints accept: an HTML form or JSON credentials."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs

from aiohttp import web

from gateway.errors import BadRequest, ClientStalled, PayloadTooLarge
from gateway.http import send_continue

MAX_FORM_BYTES = 16 * 1024


def is_json(request: web.BaseRequest) -> bool:
    return request.content_type == "application/json"


async def read_small_body(request: web.BaseRequest, timeout_s: float) -> bytes:
    """The whole body, at most :data:`MAX_FORM_BYTES`, sent within ``timeout_s``."""
    length = request.content_length
    if length is not None and length > MAX_FORM_BYTES:
        raise PayloadTooLarge(f"login body of {length} bytes", reason="login_body_too_large")
    await send_continue(request)
    data = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_any():
                data += chunk
                if len(data) > MAX_FORM_BYTES:
                    raise PayloadTooLarge("login body too large", reason="login_body_too_large")
    except TimeoutError:
        raise ClientStalled("login body not sent in time", reason="client_stalled") from None
    return bytes(data)


def parse_form(body: bytes) -> dict[str, str]:
    try:
        fields = parse_qs(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=16
        )
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("undecodable form", reason="bad_form") from None
    return {name: values[0] for name, values in fields.items()}


def parse_credentials_json(body: bytes) -> dict[str, str]:
    """``{"username": ..., "password": ...}``, both strings."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; [[[[... recurses
        raise BadRequest("login body is not JSON", reason="bad_json") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key), str) for key in ("username", "password")
    ):
        raise BadRequest('expected {"username": ..., "password": ...}', reason="bad_json")
    fields = {"username": data["username"], "password": data["password"]}
    # JSON can carry lone surrogates ("\ud800") that no store, hash or log can encode.
    for value in fields.values():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("credentials are not valid UTF-8", reason="bad_json") from None
    return fields
