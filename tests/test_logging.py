"""What reaches the process's log: never a cookie or token, even from a malformed request."""

from __future__ import annotations

import io
import logging
import sys

from gateway.server import AiohttpSecretsFilter, JsonFormatter


def _emit(record: logging.LogRecord) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(AiohttpSecretsFilter())
    handler.handle(record)
    return stream.getvalue()


def test_aiohttp_errors_lose_the_request_line_and_traceback():
    secret = "gw_session=T8XNsecretsecretsecret"
    try:
        raise ValueError(f"Invalid header value: b'Cookie: {secret}; a=\\x01'")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        ("127.0.0.1",),
        exc_info,
    )
    line = _emit(record)
    assert "Error handling request from (ValueError)" in line
    assert secret not in line
    assert "Cookie" not in line


def test_the_gateways_own_records_keep_their_detail():
    record = logging.LogRecord(
        "gateway", logging.WARNING, __file__, 1, "request refused: %s", ("no route",), None
    )
    assert "request refused: no route" in _emit(record)
