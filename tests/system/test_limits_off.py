"""Limits that are off cost nothing per request, and limits added while the gateway runs
apply from the next request on.

With no limit configured anywhere a bridged response (blocking or stream) carries no
``x-ratelimit-*`` header and the limiter never settles anything (the shared no-limit
ticket); once the admin sets a user's limits (the auth cache is invalidated, as on every
replica through the ``api_keys_changed`` channel), the next requests carry the headers
and are settled.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from aibridge.governance.limiter import Limiter, Ticket, _Held
from aibridge.server.accesslog import REQUEST_ID_HEADER
from aibridge.testing.stack import TIMEOUT, Stack, stack

CHAT = "/oai/v1/chat/completions"


async def post(s: Stack, stream: bool) -> tuple[int, dict[str, str], bytes]:
    """One chat request with the member's key; the whole body read."""
    body = {"model": "gpt-4.1", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {s.user_token}", "Content-Type": "application/json"}
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.post(CHAT, data=orjson.dumps(body), headers=headers)
        return resp.status, dict(resp.headers), await resp.read()


def ratelimit_headers(headers: dict[str, str]) -> dict[str, str]:
    """The ``x-ratelimit-*`` headers of a response."""
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-ratelimit-")}


async def test_no_limit_anywhere_no_headers_no_settlement_until_limits_are_set(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settled: list[object] = []
    counted: list[str] = []
    original_settle = Limiter._settle
    original_add = _Held.add_usage

    def spy_settle(self: Limiter, ticket: _Held) -> Any:
        settled.append(ticket)
        return original_settle(self, ticket)

    def spy_base_add(self: Ticket, *args: Any) -> None:
        counted.append("no-limit ticket")

    def spy_held_add(self: _Held, *args: Any) -> None:
        counted.append("held")
        original_add(self, *args)

    monkeypatch.setattr(Limiter, "_settle", spy_settle)
    monkeypatch.setattr(Ticket, "add_usage", spy_base_add)
    monkeypatch.setattr(_Held, "add_usage", spy_held_add)

    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("oai", "openai")
        for stream in (False, True):
            status, headers, body = await post(s, stream)
            assert status == 200, body
            assert ratelimit_headers(headers) == {}, headers
            # The one prepare handler still names the request (the stream's inside it).
            assert len(headers[REQUEST_ID_HEADER]) == 32
        # Usage was observed (the responses reported it) but nothing was counted or
        # settled: the settlement addon skipped the no-limit ticket.
        assert counted == [] and settled == []

        # Limits set while the gateway runs: the next requests are admitted against them.
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.patch(
                "/api/v1/users/dev",
                json={"limits": {"requests_per_minute": 100, "tokens_per_minute": 1_000_000}},
                headers=s.admin_headers(),
            )
            assert resp.status == 200, await resp.text()
        for stream in (False, True):
            status, headers, body = await post(s, stream)
            assert status == 200, body
            limits = ratelimit_headers(headers)
            assert limits["x-ratelimit-limit-requests"] == "100", headers
            assert limits["x-ratelimit-limit-tokens"] == "1000000", headers
            assert len(headers[REQUEST_ID_HEADER]) == 32
        # Both were settled with their usage.
        assert counted == ["held", "held"]
        assert len(settled) == 2
