"""``GET /.gateway/userinfo`` asks the same authenticators as the routes: the session cookie,
and an API bearer token when API tokens are enabled (a failing token is a 401, never a
fall-back to the cookie)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.configs import PASSWORDS
from tests.e2e.harness import config, login, running


async def test_userinfo_answers_for_a_session_and_for_an_api_token(tmp_path: Path) -> None:
    document = config(
        tmp_path,
        upstreams={"app": "http://127.0.0.1:9"},
        routes=[
            {
                "name": "all",
                "match": {"path_prefix": "/"},
                "upstream": "app",
                "access": "authenticated",
            }
        ],
        tokens={"api_tokens": {"enabled": True}},
    )
    async with running(tmp_path, document) as gateway, aiohttp.ClientSession() as http:
        base = gateway.base
        async with http.post(
            f"{base}/.gateway/token", json={"username": "bob", "password": PASSWORDS["bob"]}
        ) as resp:
            token = (await resp.json())["access_token"]
        cookie = await login(base, "alice")
        userinfo = f"{base}/.gateway/userinfo"

        async with http.get(userinfo, headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200
            body = await resp.json()
            assert body["user"]["username"] == "bob"
            assert "session" not in body  # a token is not a browser session
        async with http.get(userinfo, headers={"Cookie": f"gw_session={cookie}"}) as resp:
            assert resp.status == 200
            body = await resp.json()
            assert body["user"]["username"] == "alice"
            assert set(body["session"]) == {"created_at", "expires_at"}
        # SECURITY: a bad token is refused even beside a valid session cookie.
        headers = {"Authorization": f"Bearer {token[:-4]}AAAA", "Cookie": f"gw_session={cookie}"}
        async with http.get(userinfo, headers=headers) as resp:
            assert resp.status == 401
            assert "invalid_token" in resp.headers["WWW-Authenticate"]
        async with http.get(userinfo) as resp:
            assert resp.status == 401


async def test_without_api_tokens_a_bearer_header_is_not_read(tmp_path: Path) -> None:
    document = config(
        tmp_path,
        upstreams={"app": "http://127.0.0.1:9"},
        routes=[
            {
                "name": "all",
                "match": {"path_prefix": "/"},
                "upstream": "app",
                "access": "authenticated",
            }
        ],
    )
    async with running(tmp_path, document) as gateway, aiohttp.ClientSession() as http:
        cookie = await login(gateway.base, "alice")
        headers = {"Authorization": "Bearer not-a-token", "Cookie": f"gw_session={cookie}"}
        async with http.get(f"{gateway.base}/.gateway/userinfo", headers=headers) as resp:
            assert resp.status == 200
            assert (await resp.json())["user"]["username"] == "alice"
