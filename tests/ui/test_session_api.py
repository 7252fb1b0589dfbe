"""Dashboard sign-in over plain HTTP: the session and CSRF cookies, cookie authentication
of the admin API (and never of the data plane), CSRF on unsafe methods, sign-out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path

import aiohttp
import pytest

from aibridge.testing.stack import Stack, stack

TIMEOUT = 60.0


@pytest.fixture
async def st(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    async with stack(sqlite_url, tmp_path) as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No cookie jar: every test says exactly which cookies a request carries.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


def _cookies(resp: aiohttp.ClientResponse) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in resp.headers.getall("Set-Cookie", []):
        jar.load(header)
    return jar


async def _sign_in(http: aiohttp.ClientSession, st: Stack, key: str) -> tuple[str, str]:
    async with asyncio.timeout(TIMEOUT):
        resp = await http.post(f"{st.base}/api/v1/session", json={"key": key})
        assert resp.status == 200, await resp.text()
    jar = _cookies(resp)
    return jar["aibridge_session"].value, jar["aibridge_csrf"].value


async def test_sign_in_sets_httponly_strict_session_and_readable_csrf_cookie(
    st: Stack, http: aiohttp.ClientSession
) -> None:
    async with asyncio.timeout(TIMEOUT):
        resp = await http.post(f"{st.base}/api/v1/session", json={"key": st.user_token})
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    assert body["username"] == "dev"
    assert body["role"] == "member"
    jar = _cookies(resp)
    session, csrf = jar["aibridge_session"], jar["aibridge_csrf"]
    assert session.value == st.user_token
    assert session["httponly"] is True
    assert session["samesite"] == "Strict"
    assert session["path"] == "/"
    # Plain http here: Secure would make the browser drop the cookie.
    assert not session["secure"]
    assert session["max-age"] == "" and session["expires"] == ""  # a session cookie
    assert csrf["httponly"] == ""  # the page must read it
    assert csrf["samesite"] == "Strict"
    assert len(csrf.value) >= 40
    # A new token at every sign-in.
    _, again = await _sign_in(http, st, st.user_token)
    assert again != csrf.value


async def test_sign_in_refuses_bad_keys_and_non_json(
    st: Stack, http: aiohttp.ClientSession
) -> None:
    async with asyncio.timeout(TIMEOUT):
        resp = await http.post(f"{st.base}/api/v1/session", json={"key": "aib-nope-nope"})
        assert resp.status == 401
        assert "Set-Cookie" not in resp.headers
        resp = await http.post(f"{st.base}/api/v1/session", json={"token": "x"})
        assert resp.status == 400
        fields = {v["field"] for v in (await resp.json())["validations"]}
        assert fields == {"token", "key"}
        # A cross-site HTML form can only send form or text bodies.
        resp = await http.post(
            f"{st.base}/api/v1/session",
            data=f'{{"key": "{st.user_token}"}}',
            headers={"Content-Type": "text/plain"},
        )
        assert resp.status == 415
        assert "application/json" in (await resp.json())["detail"]
        assert "Set-Cookie" not in resp.headers


async def test_cookie_authenticates_the_admin_api(st: Stack, http: aiohttp.ClientSession) -> None:
    session, _ = await _sign_in(http, st, st.user_token)
    async with asyncio.timeout(TIMEOUT):
        resp = await http.get(
            f"{st.base}/api/v1/me", headers={"Cookie": f"aibridge_session={session}"}
        )
        assert resp.status == 200
        assert (await resp.json())["username"] == "dev"
        # A member's cookie is a member: admin routes still say 403.
        resp = await http.get(
            f"{st.base}/api/v1/users", headers={"Cookie": f"aibridge_session={session}"}
        )
        assert resp.status == 403
        # A header key wins over the cookie.
        resp = await http.get(
            f"{st.base}/api/v1/users",
            headers={
                "Cookie": f"aibridge_session={session}",
                "Authorization": f"Bearer {st.admin_token}",
            },
        )
        assert resp.status == 200


async def test_cookie_authenticated_unsafe_request_needs_the_csrf_token(
    st: Stack, http: aiohttp.ClientSession
) -> None:
    session, csrf = await _sign_in(http, st, st.admin_token)
    cookie = f"aibridge_session={session}; aibridge_csrf={csrf}"
    url = f"{st.base}/api/v1/users/dev"
    wrong = csrf[:-1] + ("A" if csrf[-1] != "A" else "B")
    async with asyncio.timeout(TIMEOUT):
        resp = await http.patch(url, json={"email": "a@example.com"}, headers={"Cookie": cookie})
        assert resp.status == 403
        body = await resp.json()
        assert body == {
            "message": "CSRF token missing or wrong",
            "detail": "send the aibridge_csrf cookie's value in X-CSRF-Token",
        }
        resp = await http.patch(
            url,
            json={"email": "a@example.com"},
            headers={"Cookie": cookie, "X-CSRF-Token": wrong},
        )
        assert resp.status == 403
        # The header alone is not enough either: it must match the cookie.
        resp = await http.patch(
            url,
            json={"email": "a@example.com"},
            headers={"Cookie": f"aibridge_session={session}", "X-CSRF-Token": csrf},
        )
        assert resp.status == 403
        resp = await http.patch(
            url, json={"email": "a@example.com"}, headers={"Cookie": cookie, "X-CSRF-Token": csrf}
        )
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["email"] == "a@example.com"
        # A key in a header needs no CSRF token (no browser sends it on its own).
        resp = await http.patch(url, json={"email": "b@example.com"}, headers=st.admin_headers())
        assert resp.status == 200


async def test_data_plane_ignores_the_session_cookie(
    st: Stack, http: aiohttp.ClientSession
) -> None:
    await st.add_provider("openai", "openai")
    session, csrf = await _sign_in(http, st, st.user_token)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with asyncio.timeout(TIMEOUT):
        resp = await http.post(
            f"{st.base}/openai/v1/chat/completions",
            json=body,
            headers={"Cookie": f"aibridge_session={session}; aibridge_csrf={csrf}"},
        )
        assert resp.status == 401
        # The same key in a header is served: the cookie alone was the reason.
        resp = await http.post(
            f"{st.base}/openai/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {st.user_token}"},
        )
        assert resp.status == 200, await resp.text()


async def test_sign_out_clears_both_cookies(st: Stack, http: aiohttp.ClientSession) -> None:
    await _sign_in(http, st, st.user_token)
    async with asyncio.timeout(TIMEOUT):
        resp = await http.delete(f"{st.base}/api/v1/session")
        assert resp.status == 204
    jar = _cookies(resp)
    for name in ("aibridge_session", "aibridge_csrf"):
        assert jar[name].value == ""
        assert jar[name]["max-age"] == "0"
        assert jar[name]["path"] == "/"
    async with asyncio.timeout(TIMEOUT):
        resp = await http.get(f"{st.base}/api/v1/me")
        assert resp.status == 401
