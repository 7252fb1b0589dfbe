"""GitHub Copilot end to end: the official ``openai`` SDK through the gateway to a fake
Copilot API that checks it gets the developer's own token and Copilot's headers, and never
a gateway key.

Copilot is always bring-your-own-key (no provider keys, no ``allow_byok`` needed), its
routes have no ``/v1`` segment, and the token is recorded only as a masked hint.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from aibridge.fakellm import Scenario
from aibridge.fakellm.copilot import FakeCopilot
from aibridge.fakellm.scenario import Usage
from aibridge.providers.copilot import GATEWAY_KEY_AS_TOKEN, TOKEN_REQUIRED
from aibridge.secrets_mask import mask_secret
from aibridge.testing.copilot import (
    COPILOT_HEADERS,
    COPILOT_TOKEN,
    OTHER_TOKEN,
    copilot_headers,
    copilot_sdk,
    copilot_stack,
)
from aibridge.testing.openai_sdk import admin_get, collect, usage_row, usage_rows
from aibridge.testing.recorded import interceptions, recorded
from aibridge.testing.stack import TIMEOUT, Stack

USAGE = Usage(input_tokens=31, output_tokens=17, cache_read_tokens=5)
CHAT = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "Explain this file."}]}
RESPONSES = {"model": "gpt-5", "input": "Explain this file."}


def assert_copilot_request(copilot: FakeCopilot, path: str, token: str = COPILOT_TOKEN) -> None:
    """The fake's last request went to ``path`` with the developer's token and Copilot's
    headers exactly as the client sent them, and nothing of the gateway."""
    rec = copilot.requests[-1]
    assert rec.path == path
    assert rec.headers["Authorization"] == f"Bearer {token}"
    for name, value in COPILOT_HEADERS.items():
        assert rec.headers.getall(name) == [value], name
    assert "X-AIBridge-Token" not in rec.headers
    assert not [v for v in rec.headers.values() if "aib-" in v]
    assert copilot.gateway_keys_seen == 0


async def check_recorded(
    s: Stack, n: int, *, model: str, response_id: str | None, token: str = COPILOT_TOKEN
) -> None:
    """``n`` interceptions so far; the newest is a completed Copilot one with ``USAGE``,
    recorded as BYOK with the token's masked hint, never the token itself."""
    await s.flush_records()
    rows = await interceptions(s.services)
    assert len(rows) == n
    rec = await recorded(s.services, rows[-1].id)
    i = rec.interception
    assert (i.provider, i.provider_name, i.model) == ("copilot", "copilot", model)
    assert i.initiator_id == await s.member_id()
    assert (i.error_type, i.error_message) == (None, None) and i.ended_at is not None
    assert (i.credential_kind, i.credential_hint) == ("byok", mask_secret(token))
    # Copilot Chat in VS Code is recognised, and its interaction id is the session.
    assert (i.client, i.client_session_id) == (
        "GitHub Copilot (VS Code)",
        COPILOT_HEADERS["X-Interaction-Id"],
    )
    assert token not in orjson.dumps({k: str(v) for k, v in vars(i).items()}).decode()
    assert usage_rows(rec) == [usage_row(USAGE, response_id)]


async def test_chat_completions_blocking_and_streaming_reach_copilot_with_the_users_token(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with copilot_stack(db_url, tmp_path) as (s, copilot):
        copilot.enqueue(Scenario.text_reply("Blocking.", usage=USAGE))
        sdk = copilot_sdk(s)
        async with asyncio.timeout(TIMEOUT):
            done = await sdk.chat.completions.create(**CHAT)
        assert done.choices[0].message.content == "Blocking."
        assert_copilot_request(copilot, "/chat/completions")
        await check_recorded(s, 1, model="gpt-4.1", response_id=done.id)

        copilot.enqueue(Scenario.text_reply("Streamed.", usage=USAGE))
        async with asyncio.timeout(TIMEOUT):
            stream = await sdk.chat.completions.create(
                **CHAT, stream=True, stream_options={"include_usage": True}
            )
            chunks = await collect(stream)
        text = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
        assert text == "Streamed."
        assert chunks[-1]["usage"]["completion_tokens"] == USAGE.output_tokens
        assert_copilot_request(copilot, "/chat/completions")
        assert copilot.requests[-1].json["stream"] is True
        await check_recorded(s, 2, model="gpt-4.1", response_id=chunks[0]["id"])

        # A second developer on the same gateway key set-up: their own token goes upstream.
        copilot.enqueue(Scenario.text_reply("Other.", usage=USAGE))
        async with asyncio.timeout(TIMEOUT):
            other = await copilot_sdk(s, token=OTHER_TOKEN).chat.completions.create(**CHAT)
        assert_copilot_request(copilot, "/chat/completions", OTHER_TOKEN)
        await check_recorded(s, 3, model="gpt-4.1", response_id=other.id, token=OTHER_TOKEN)

        # The interceptions API shows the credential kind and the masked hint only.
        listed = (await admin_get(s, "/api/v1/interceptions"))["interceptions"]
        assert [(i["provider"], i["credential_kind"], i["credential_hint"]) for i in listed] == [
            ("copilot", "byok", mask_secret(OTHER_TOKEN)),
            ("copilot", "byok", mask_secret(COPILOT_TOKEN)),
            ("copilot", "byok", mask_secret(COPILOT_TOKEN)),
        ]
        assert COPILOT_TOKEN not in orjson.dumps(listed).decode()
    assert COPILOT_TOKEN not in caplog.text and OTHER_TOKEN not in caplog.text


async def test_responses_blocking_and_streaming_reach_copilot_with_the_users_token(
    db_url: str, tmp_path: Path
) -> None:
    async with copilot_stack(db_url, tmp_path) as (s, copilot):
        copilot.enqueue(Scenario.text_reply("Blocking.", usage=USAGE))
        sdk = copilot_sdk(s)
        async with asyncio.timeout(TIMEOUT):
            done = await sdk.responses.create(**RESPONSES)
        assert done.output_text == "Blocking."
        assert_copilot_request(copilot, "/responses")
        await check_recorded(s, 1, model="gpt-5", response_id=done.id)

        copilot.enqueue(Scenario.text_reply("Streamed.", usage=USAGE))
        async with asyncio.timeout(TIMEOUT):
            stream = await sdk.responses.create(**RESPONSES, stream=True)
            events = await collect(stream)
        completed = [e for e in events if e["type"] == "response.completed"]
        assert len(completed) == 1
        assert completed[0]["response"]["output"][0]["content"][0]["text"] == "Streamed."
        assert_copilot_request(copilot, "/responses")
        await check_recorded(s, 2, model="gpt-5", response_id=completed[0]["response"]["id"])


async def send(
    s: Stack, method: str, path: str, headers: dict[str, str], body: Any = None
) -> tuple[int, Any]:
    """A raw request to the gateway; (status, parsed JSON body)."""
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.request(
            method, path, headers=headers, data=orjson.dumps(body) if body is not None else None
        )
        raw = await resp.read()
    return resp.status, orjson.loads(raw) if raw else None


BRIDGED = [("POST", "/copilot/chat/completions", CHAT), ("POST", "/copilot/responses", RESPONSES)]
PASSTHROUGH = [
    ("GET", "/copilot/models", None),
    ("GET", "/copilot/agents/list", None),
]


async def test_a_request_without_the_users_copilot_token_is_a_401_that_says_so(
    db_url: str, tmp_path: Path
) -> None:
    async with copilot_stack(db_url, tmp_path) as (s, copilot):
        bare = dict(COPILOT_HEADERS)
        cases: list[tuple[dict[str, str], str]] = [
            # The gateway key alone, where clients usually put it: it is not a Copilot token.
            ({**bare, "Authorization": f"Bearer {s.user_token}"}, GATEWAY_KEY_AS_TOKEN),
            # The gateway key in X-AIBridge-Token and no token at all.
            (copilot_headers(s), TOKEN_REQUIRED),
            (copilot_headers(s, Authorization="Bearer "), TOKEN_REQUIRED),
            # Not a bearer token: nothing is guessed, nothing goes upstream.
            (copilot_headers(s, Authorization=f"token {COPILOT_TOKEN}"), TOKEN_REQUIRED),
            (copilot_headers(s, Authorization=COPILOT_TOKEN), TOKEN_REQUIRED),
            # The gateway key twice: it is never forwarded, so still no token.
            (copilot_headers(s, Authorization=f"Bearer {s.user_token}"), GATEWAY_KEY_AS_TOKEN),
        ]
        for method, path, body in BRIDGED + PASSTHROUGH:
            for headers, message in cases:
                status, answer = await send(s, method, path, headers, body)
                assert status == 401, (path, headers, answer)
                # OpenAI's error shape, naming what is missing.
                assert answer["error"]["message"] == message, path
                assert "GitHub Copilot token is required" in message
                assert set(answer["error"]) >= {"message", "type", "code"}
        assert copilot.requests == []
        await s.flush_records()
        assert await interceptions(s.services) == []

        # A wrong gateway key is the gateway's own 401, before anything else.
        status, answer = await send(
            s,
            "POST",
            "/copilot/chat/completions",
            copilot_headers(
                s,
                **{"X-AIBridge-Token": "aib-nope-nope", "Authorization": f"Bearer {COPILOT_TOKEN}"},
            ),
            CHAT,
        )
        assert status == 401 and "gateway API key" in answer["error"]["message"]
        assert copilot.requests == []


async def test_copilots_passthrough_routes_relay_with_the_users_token_and_are_not_recorded(
    db_url: str, tmp_path: Path
) -> None:
    async with copilot_stack(db_url, tmp_path) as (s, copilot):
        headers = copilot_headers(s, Authorization=f"Bearer {COPILOT_TOKEN}")
        status, models = await send(s, "GET", "/copilot/models", headers)
        assert status == 200 and models["object"] == "list" and models["data"]
        assert_copilot_request(copilot, "/models")
        status, model = await send(s, "GET", "/copilot/models/gpt-4.1", headers)
        assert status == 200 and model["id"] == "gpt-4.1"
        assert_copilot_request(copilot, "/models/gpt-4.1")
        for method, path, body in (
            ("GET", "/copilot/agents/list?scope=user&x=%2B1", None),
            ("POST", "/copilot/mcp/readonly", {"jsonrpc": "2.0", "id": 1, "method": "ping"}),
            ("GET", "/copilot/.well-known/oauth-protected-resource", None),
        ):
            status, echoed = await send(s, method, path, headers, body)
            assert status == 200, (path, echoed)
            upstream_path = path.removeprefix("/copilot").split("?")[0]
            assert (echoed["method"], echoed["path"]) == (method, upstream_path)
            assert_copilot_request(copilot, upstream_path)
            if "?" in path:
                assert echoed["query"] == "scope=user&x=%2B1"  # the raw query, unchanged
            if body is not None:
                assert orjson.loads(echoed["body"]) == body

        # Copilot's API has no /v1 (so neither do its routes), and nothing else is relayed.
        for method, path in (
            ("POST", "/copilot/v1/chat/completions"),
            ("GET", "/copilot/v1/models"),
            ("GET", "/copilot/agents"),
            ("GET", "/copilot/conversations"),
        ):
            status, _ = await send(s, method, path, headers, CHAT if method == "POST" else None)
            assert status == 404, path
        # A bridged route is POST only.
        status, answer = await send(s, "GET", "/copilot/chat/completions", headers)
        assert status == 405 and "use POST" in answer["error"]["message"]
        await s.flush_records()
        assert await interceptions(s.services) == []


async def test_copilots_own_401_for_a_bad_token_is_relayed_and_recorded_as_byok(
    db_url: str, tmp_path: Path
) -> None:
    stale = "ghu_ExpiredDeveloperToken000000000000"
    async with copilot_stack(db_url, tmp_path) as (s, copilot):
        with pytest.raises(openai.AuthenticationError) as caught:
            async with asyncio.timeout(TIMEOUT):
                await copilot_sdk(s, token=stale).chat.completions.create(**CHAT)
        assert "token expired or invalid" in caught.value.message
        # Sent once (no key ring to fail over to) with exactly the client's token.
        assert [r.headers["Authorization"] for r in copilot.requests] == [f"Bearer {stale}"]
        await s.flush_records()
        (row,) = await interceptions(s.services)
        assert (row.credential_kind, row.credential_hint) == ("byok", mask_secret(stale))
        assert row.error_type is not None
