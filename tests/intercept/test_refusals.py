"""The gateway's own limits on one in-process gateway (the in-process limiter store):
refusals in each provider's shape with Retry-After and x-ratelimit-*, nothing upstream,
recorded under the limit's error type; settlement freeing slots (cancellation included);
budgets crossing, refusing and resetting with the clock moved; the Responses WebSocket.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType

from aibridge.clock import FakeClock
from aibridge.fakellm import Scenario
from aibridge.governance.prices import Price, PriceTable
from aibridge.testing.recorded import interceptions
from aibridge.testing.replicas import poll
from aibridge.testing.stack import TIMEOUT, Stack, stack

ANTHROPIC = {"anthropic-version": "2023-06-01"}
START = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def messages(model: str = "claude-sonnet-4", **extra: Any) -> dict[str, Any]:
    """A small Messages request."""
    return {
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }


def chat(model: str = "gpt-5", **extra: Any) -> dict[str, Any]:
    """A small Chat Completions request."""
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


async def post(
    s: Stack, path: str, body: dict[str, Any], *, anthropic: bool = False
) -> tuple[int, dict[str, str], Any]:
    """POST as the member: status, headers, parsed body."""
    headers = {"Authorization": f"Bearer {s.user_token}"}
    if anthropic:
        headers = {"x-api-key": s.user_token, **ANTHROPIC}
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.post(path, json=body, headers=headers)
        raw = await resp.read()
    parsed = orjson.loads(raw) if raw.startswith(b"{") else raw
    return resp.status, dict(resp.headers), parsed


async def providers(s: Stack) -> None:
    """An Anthropic provider ``ant`` and an OpenAI one ``oai`` on the fake upstream."""
    await s.add_provider("ant", "anthropic")
    await s.add_provider("oai", "openai")


async def metrics_text(s: Stack) -> str:
    """The gateway's /metrics."""
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.get("/metrics")
        return await resp.text()


async def test_allowed_models_refuse_other_models_on_every_api(pg_url: str, tmp_path: Path) -> None:
    overrides = {"default_allowed_models": "claude-*,oai/gpt-5-mini"}
    async with stack(pg_url, tmp_path, settings_overrides=overrides) as s:
        await providers(s)
        status, _, _ = await post(s, "/ant/v1/messages", messages(), anthropic=True)
        assert status == 200
        status, _, _ = await post(s, "/oai/v1/chat/completions", chat("gpt-5-mini"))
        assert status == 200
        before = len(s.fake.generation_requests())

        status, headers, body = await post(
            s, "/ant/v1/messages", messages("gpt-opus-4"), anthropic=True
        )
        assert status == 403
        assert body["type"] == "error"
        assert body["error"]["type"] == "permission_error"
        assert "'gpt-opus-4'" in body["error"]["message"]
        assert "claude-*" in body["error"]["message"]
        assert "Retry-After" not in headers

        for path, request in (
            ("/oai/v1/chat/completions", chat("gpt-5")),
            ("/oai/v1/responses", {"model": "gpt-5", "input": "hi"}),
        ):
            status, _, body = await post(s, path, request)
            assert status == 403, body
            assert body["error"]["code"] == "model_not_allowed"
            assert "'gpt-5'" in body["error"]["message"]
        # Nothing of the refused requests went upstream.
        assert len(s.fake.generation_requests()) == before

        await s.flush_records()
        refused = [r.error_type for r in await interceptions(s.services) if r.error_type]
        assert refused == ["model_not_allowed"] * 3
        text = await metrics_text(s)
        assert 'aibridge_limit_refusals_total{reason="model_not_allowed"} 3.0' in text


async def test_request_rate_refusal_carries_retry_after_and_ratelimit_headers(
    sqlite_url: str, tmp_path: Path
) -> None:
    clock = FakeClock(now=START)
    overrides = {"default_requests_per_minute": 2}
    async with stack(sqlite_url, tmp_path, settings_overrides=overrides, clock=clock) as s:
        await providers(s)
        remaining = []
        for _ in range(2):
            status, headers, _ = await post(s, "/oai/v1/chat/completions", chat())
            assert status == 200
            assert headers["x-ratelimit-limit-requests"] == "2"
            remaining.append(headers["x-ratelimit-remaining-requests"])
        assert remaining == ["1", "0"]
        before = len(s.fake.generation_requests())

        clock.advance(20)
        status, headers, body = await post(s, "/oai/v1/chat/completions", chat())
        assert status == 429
        assert body["error"]["code"] == "request_rate_limited"
        assert body["error"]["type"] == "rate_limit_exceeded"
        # The oldest request leaves the 60 s window 40 s from now.
        assert headers["Retry-After"] == "40"
        assert headers["x-ratelimit-limit-requests"] == "2"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert "2 requests per minute" in body["error"]["message"]
        assert "x-should-retry" not in headers

        status, headers, body = await post(s, "/ant/v1/messages", messages(), anthropic=True)
        assert status == 429
        assert body["error"]["type"] == "rate_limit_error"
        assert len(s.fake.generation_requests()) == before

        clock.advance(41)
        status, _, _ = await post(s, "/oai/v1/chat/completions", chat())
        assert status == 200


async def test_replica_max_concurrency_refuses_beyond_and_frees_on_settle(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path, settings_overrides={"max_concurrency": 1}) as s:
        await providers(s)
        release = asyncio.Event()
        s.fake.enqueue(Scenario.stall(release))
        slow = asyncio.create_task(
            post(s, "/ant/v1/messages", messages(stream=True), anthropic=True)
        )
        try:
            await asyncio.wait_for(s.fake.wait_for_requests(1), TIMEOUT)
            status, headers, body = await post(s, "/oai/v1/chat/completions", chat())
            assert status == 429
            assert body["error"]["code"] == "concurrency_limited"
            assert "max_concurrency" in body["error"]["message"]
            assert headers["Retry-After"] == "1"
            # Passthrough routes are not limited (model lists at client start).
            async with asyncio.timeout(TIMEOUT):
                resp = await s.client.get(
                    "/oai/v1/models", headers={"Authorization": f"Bearer {s.user_token}"}
                )
                assert resp.status == 200
        finally:
            release.set()
        status, _, _ = await asyncio.wait_for(slow, TIMEOUT)
        assert status == 200
        status, _, _ = await post(s, "/oai/v1/chat/completions", chat())
        assert status == 200


async def test_a_client_leaving_mid_stream_frees_its_slot(sqlite_url: str, tmp_path: Path) -> None:
    overrides = {"default_max_concurrent": 1}
    async with stack(sqlite_url, tmp_path, settings_overrides=overrides) as s:
        await providers(s)
        s.fake.enqueue(Scenario.stall())
        headers = {"x-api-key": s.user_token, **ANTHROPIC}
        async with aiohttp.ClientSession() as session, asyncio.timeout(TIMEOUT):
            resp = await session.post(
                f"{s.base}/ant/v1/messages", json=messages(stream=True), headers=headers
            )
            assert resp.status == 200
            await resp.content.readany()
            status, _, body = await post(s, "/oai/v1/chat/completions", chat())
            assert (status, body["error"]["code"]) == (429, "concurrency_limited")
            resp.close()  # the client leaves: the handler is cancelled

        async def admitted() -> bool:
            return (await post(s, "/oai/v1/chat/completions", chat()))[0] == 200

        await poll(admitted, TIMEOUT, "the cancelled request's slot to be freed")


@pytest.mark.parametrize("stream", [False, True])
async def test_budget_crossing_request_completes_next_is_refused_until_the_new_period(
    sqlite_url: str, tmp_path: Path, stream: bool
) -> None:
    clock = FakeClock(now=START)
    overrides = {"default_budget": "0.0001/day"}
    async with stack(sqlite_url, tmp_path, settings_overrides=overrides, clock=clock) as s:
        await providers(s)
        # $10 / $30 per million tokens: the fake's usage costs more than $0.0001.
        s.services.limiter.prices.replace(
            PriceTable([Price("anthropic", "claude-*", 10_000_000, 30_000_000, 0, 0, "2025-01-01")])
        )
        status, _, _ = await post(s, "/ant/v1/messages", messages(stream=stream), anthropic=True)
        assert status == 200
        status, headers, body = await post(s, "/ant/v1/messages", messages(), anthropic=True)
        assert status == 429
        assert body["error"]["type"] == "rate_limit_error"
        message = body["error"]["message"]
        assert "$0.0001 daily budget" in message
        assert "resets at 2025-03-11T00:00:00+00:00" in message
        assert headers["Retry-After"] == str(12 * 3600)
        # A budget resets in hours: the SDKs must not retry on their own backoff.
        assert headers["x-should-retry"] == "false"

        clock.advance(12 * 3600)
        status, _, _ = await post(s, "/ant/v1/messages", messages(), anthropic=True)
        assert status == 200


async def test_websocket_creates_are_admitted_and_the_socket_holds_a_slot(
    sqlite_url: str, tmp_path: Path
) -> None:
    overrides = {"default_allowed_models": "gpt-4.1", "default_max_concurrent": 1}
    async with stack(sqlite_url, tmp_path, settings_overrides=overrides) as s:
        await providers(s)
        auth = {"Authorization": f"Bearer {s.user_token}"}
        async with aiohttp.ClientSession() as session, asyncio.timeout(TIMEOUT):
            ws = await session.ws_connect(f"{s.base}/oai/v1/responses", headers=auth)
            try:
                # The socket holds the user's only slot: a second handshake and an HTTP
                # request are refused.
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(f"{s.base}/oai/v1/responses", headers=auth)
                assert refused.value.status == 429
                status, _, body = await post(s, "/oai/v1/chat/completions", chat("gpt-4.1"))
                assert (status, body["error"]["code"]) == (429, "concurrency_limited")

                for model, last in (("gpt-5", "error"), ("gpt-4.1", "response.completed")):
                    create = {"type": "response.create", "model": model, "input": "hi"}
                    await ws.send_str(orjson.dumps({**create, "stream": True}).decode())
                    while True:
                        msg = await ws.receive()
                        assert msg.type is WSMsgType.TEXT, msg
                        event = orjson.loads(msg.data)
                        if event["type"] in ("error", "response.completed"):
                            break
                    assert event["type"] == last
                    if last == "error":
                        assert event["status"] == 403
                        assert event["error"]["code"] == "model_not_allowed"
            finally:
                await ws.close()
        # Closing the socket freed its slot.
        await poll(
            lambda: _admitted(s, "/oai/v1/chat/completions", chat("gpt-4.1")),
            TIMEOUT,
            "the socket's slot to be freed",
        )


async def _admitted(s: Stack, path: str, body: dict[str, Any]) -> bool:
    return (await post(s, path, body))[0] == 200
