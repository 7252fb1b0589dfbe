"""End to end: the Anthropic Messages API through the gateway, with the official SDK.

Gateway + FakeLLM upstream + real database. Covers relay parity (the SDK sees the same
message through the gateway as directly from the upstream, and the relayed bytes are the
upstream's bytes), recording (usage, prompt, tool calls, thoughts, client, session),
upstream and gateway errors, client authentication, header/body hygiene and the
passthrough routes. OpenAI APIs and resilience (disconnects, failover, breaker, DB
outage) are covered elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest
from aiohttp import ClientResponse

from aibridge.fakellm import RecordedRequest, Scenario, Usage
from aibridge.fakellm import anthropic as wire
from aibridge.intercept.sse import SSEParser
from aibridge.providers.keyring import MSG_UNAUTHORIZED
from aibridge.store.pubsub import API_KEYS_CHANGED
from aibridge.testing import recorded
from aibridge.testing.clients import closed_after_test
from aibridge.testing.stack import TIMEOUT, Stack, stack

PROVIDER = "claude-main"
UPSTREAM_KEY = "sk-ant-upstream-key-0001"
MODEL = "claude-sonnet-4-5-20250929"
CLAUDE_UA = "claude-cli/1.0.0 (external, cli)"

WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
}
TIME_TOOL: dict[str, Any] = {
    "name": "get_time",
    "description": "Current time in a timezone.",
    "input_schema": {
        "type": "object",
        "properties": {"timezone": {"type": "string"}, "format": {"type": "string"}},
        "required": ["timezone"],
    },
}

SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "text": Scenario.text_reply,
    "thinking": Scenario.thinking_reply,
    "tool_call": Scenario.tool_call,
    "parallel_tools": Scenario.parallel_tools,
    "cache": Scenario.cached,
}


# --------------------------------------------------------------------------- helpers


def sdk_client(base_url: str, api_key: str, **kw: Any) -> anthropic.AsyncAnthropic:
    """An official SDK client without retries, closed after the test."""
    return closed_after_test(
        anthropic.AsyncAnthropic(base_url=base_url, api_key=api_key, max_retries=0, **kw)
    )


def gateway_sdk(s: Stack, api_key: str | None = None, **kw: Any) -> anthropic.AsyncAnthropic:
    """The official SDK pointed at the gateway with the member's key."""
    return sdk_client(f"{s.base}/{PROVIDER}", api_key or s.user_token, **kw)


def direct_sdk(s: Stack, **kw: Any) -> anthropic.AsyncAnthropic:
    """The official SDK pointed straight at the fake upstream."""
    return sdk_client(s.fake.url, UPSTREAM_KEY, **kw)


def request_kwargs(stream: bool = False) -> dict[str, Any]:
    """Request parameters shared by parity calls (tools are offered to every scenario)."""
    return {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [WEATHER_TOOL, TIME_TOOL],
        **({"stream": True} if stream else {}),
    }


def without_ids(value: Any) -> Any:
    """``value`` with every ``id`` / ``tool_use_id`` replaced (they differ per response)."""
    if isinstance(value, dict):
        return {
            k: "<id>" if k in ("id", "tool_use_id") else without_ids(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    return value


def expected_ids(scenario: Scenario, rec: RecordedRequest) -> wire.Ids:
    """The ids the fake used for the response it logged as ``rec``."""
    ids = wire.Ids(scenario)
    assert rec.response_id is not None
    ids.message_id = rec.response_id
    ids.tool_ids = list(rec.tool_call_ids)
    return ids


def expected_stream_bytes(scenario: Scenario, rec: RecordedRequest) -> bytes:
    """The exact SSE bytes the fake sent for ``rec`` (it is deterministic given the ids)."""
    events = wire.stream_events(scenario, MODEL, expected_ids(scenario, rec))
    return b"".join(event.encode() for event in events)


def sse_events(raw: bytes) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) of every data-carrying SSE event in ``raw``."""
    parser = SSEParser()
    events = [*parser.feed(raw), *parser.flush()]
    return [(e.event, orjson.loads(e.data)) for e in events if e.has_data]


async def assert_nothing_recorded(s: Stack) -> None:
    """No interception exists at all (after flushing)."""
    await s.flush_records()
    async with asyncio.timeout(TIMEOUT):
        assert await recorded.interceptions(s.services) == []


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def create_message(
    sdk: anthropic.AsyncAnthropic, stream: bool, **params: Any
) -> anthropic.types.Message:
    """``messages.create``, or when ``stream`` ``messages.stream`` drained to its final
    message."""
    if stream:
        async with sdk.messages.stream(**params) as st:
            return await st.get_final_message()
    return await sdk.messages.create(**params)


def assert_scenario_message(message: anthropic.types.Message, scenario: Scenario) -> None:
    """The SDK's message carries the scenario's content (so a parity comparison is not
    vacuous): stop reason, tool calls, thinking and usage."""
    assert message.stop_reason == ("tool_use" if scenario.tool_calls else "end_turn")
    tool_uses = [(b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert tool_uses == [(c.name, c.arguments) for c in scenario.tool_calls]
    thinking = [b.thinking for b in message.content if b.type == "thinking"]
    assert thinking == ([scenario.thinking] if scenario.thinking else [])
    u = message.usage
    assert (
        u.input_tokens,
        u.output_tokens,
        u.cache_read_input_tokens,
        u.cache_creation_input_tokens,
    ) == (
        scenario.usage.input_tokens,
        scenario.usage.output_tokens,
        scenario.usage.cache_read_tokens,
        scenario.usage.cache_write_tokens,
    )


async def raw_post(
    s: Stack, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[ClientResponse, bytes]:
    """POST raw bytes to the gateway with the member's key; returns (response, body)."""
    all_headers = {
        "x-api-key": s.user_token,
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
        **(headers or {}),
    }
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.post(path, data=body, headers=all_headers)
        data = await resp.read()
    return resp, data


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_a_blocking_message_through_the_gateway_equals_the_upstreams_byte_for_byte(
    name: str, sqlite_url: str, tmp_path: Path
) -> None:
    """Blocking: the SDK's message through the gateway equals the one straight from the
    upstream (ids aside), and the relayed body is the upstream's body byte for byte."""
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider(PROVIDER, "anthropic", keys=[UPSTREAM_KEY])
        scenario = SCENARIOS[name]()
        s.fake.enqueue(scenario, scenario)
        async with asyncio.timeout(TIMEOUT):
            raw = await gateway_sdk(s).messages.with_raw_response.create(**request_kwargs())
            via_gateway = await raw.parse()
            gateway_rec = s.fake.requests[-1]
            direct = await direct_sdk(s).messages.create(**request_kwargs())

        assert raw.http_response.status_code == 200
        expected_body = orjson.dumps(
            wire.blocking_body(scenario, MODEL, expected_ids(scenario, gateway_rec))
        )
        assert raw.http_response.content == expected_body
        assert via_gateway.id == gateway_rec.response_id
        assert without_ids(via_gateway.model_dump()) == without_ids(direct.model_dump())
        # The comparison is not vacuous: the scenario's content is really there.
        assert_scenario_message(via_gateway, scenario)


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_a_message_stream_through_the_gateway_equals_the_upstreams_byte_for_byte(
    name: str, sqlite_url: str, tmp_path: Path
) -> None:
    """Streaming: the SDK's event sequence and final message through the gateway equal the
    direct ones (ids aside), and the SSE bytes relayed are exactly the upstream's."""
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider(PROVIDER, "anthropic", keys=[UPSTREAM_KEY])
        scenario = SCENARIOS[name]()
        s.fake.enqueue(scenario, scenario, scenario)

        async def run(sdk: anthropic.AsyncAnthropic) -> tuple[list[Any], Any]:
            async with sdk.messages.stream(**request_kwargs()) as stream:
                events = [without_ids(e.model_dump()) async for e in stream]
                final = await stream.get_final_message()
            return events, final

        async with asyncio.timeout(TIMEOUT):
            gw_events, gw_final = await run(gateway_sdk(s))
            gw_rec = s.fake.requests[-1]
            direct_events, direct_final = await run(direct_sdk(s))
            resp, raw = await raw_post(
                s, f"/{PROVIDER}/v1/messages", orjson.dumps(request_kwargs(stream=True))
            )
            raw_rec = s.fake.requests[-1]

        assert gw_final.id == gw_rec.response_id
        assert gw_events == direct_events
        assert without_ids(gw_final.model_dump()) == without_ids(direct_final.model_dump())
        assert_scenario_message(gw_final, scenario)

        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert raw == expected_stream_bytes(scenario, raw_rec)


# --------------------------------------------------------------------------- recording

RECORDED_THINKING = "The user asks about two things; I will call both tools."
RECORDED_USAGE = Usage(
    input_tokens=37, output_tokens=91, cache_read_tokens=1800, cache_write_tokens=200
)


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streaming"])
async def test_each_message_records_one_interception_with_the_upstreams_exact_usage(
    stream: bool, db_url: str, tmp_path: Path
) -> None:
    """One interception per request with the member, provider, model, client, session,
    end time and no error; usage equals the upstream's numbers exactly (the cumulative
    stream snapshots are not added up); the last user text is the prompt; each tool call
    is recorded with its parsed arguments; the thinking is recorded. The admin API
    reports the same."""
    async with stack(db_url, tmp_path) as s:
        await s.add_provider(PROVIDER, "anthropic", keys=[UPSTREAM_KEY])
        scenario = Scenario.parallel_tools(
            thinking=RECORDED_THINKING, text="Checking both.", usage=RECORDED_USAGE
        )
        s.fake.enqueue(scenario)
        sdk = gateway_sdk(
            s,
            default_headers={"User-Agent": CLAUDE_UA, "X-Claude-Code-Session-Id": "sess-hdr-42"},
        )
        messages: list[Any] = [
            {"role": "user", "content": "An earlier question"},
            {"role": "assistant", "content": "An earlier answer"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Context that is not the prompt"},
                    {"type": "text", "text": "Weather and time in Paris, please"},
                ],
            },
        ]
        params: dict[str, Any] = {
            "model": MODEL,
            "max_tokens": 2048,
            "messages": messages,
            "tools": [WEATHER_TOOL, TIME_TOOL],
        }
        async with asyncio.timeout(TIMEOUT):
            message = await create_message(sdk, stream, **params)
        assert message.stop_reason == "tool_use"
        upstream = s.fake.requests[-1]
        assert upstream.headers["User-Agent"] == CLAUDE_UA

        rec = await s.only_recording()
        i = rec.interception
        assert i.initiator_id == await s.member_id()
        assert s.user_token.startswith(f"aib-{i.api_key_id}-")
        assert (i.provider, i.provider_name, i.model) == ("anthropic", PROVIDER, MODEL)
        assert (i.client, i.user_agent, i.client_session_id) == (
            "Claude Code",
            CLAUDE_UA,
            "sess-hdr-42",
        )
        assert i.credential_kind == "centralized"
        assert i.credential_hint == "sk-…0001"
        assert i.ended_at is not None and i.ended_at >= i.started_at
        assert (i.error_type, i.error_message) == (None, None)

        assert len(rec.token_usages) == 1
        t = rec.token_usages[0]
        assert (
            t.input_tokens,
            t.output_tokens,
            t.cache_read_input_tokens,
            t.cache_write_input_tokens,
            t.reasoning_tokens,
        ) == (37, 91, 1800, 200, 0)
        assert t.provider_response_id == upstream.response_id
        assert t.provider_model == MODEL
        assert t.extra_token_types == {"cache_ephemeral_5m_input": 200}

        assert [p.prompt for p in rec.prompts] == ["Weather and time in Paris, please"]
        assert rec.prompts[0].provider_response_id == upstream.response_id

        tools = sorted(
            (u.tool, u.provider_tool_call_id, json.loads(u.input), u.injected, u.server_url)
            for u in rec.tool_usages
        )
        call_ids = dict(
            zip([c.name for c in scenario.tool_calls], upstream.tool_call_ids, strict=True)
        )
        assert tools == sorted(
            (c.name, call_ids[c.name], c.arguments, False, None) for c in scenario.tool_calls
        )
        assert all(u.provider_response_id == upstream.response_id for u in rec.tool_usages)

        assert [(th.content, th.meta) for th in rec.thoughts] == [
            (RECORDED_THINKING, {"source": "thinking"})
        ]

        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.get(
                "/api/v1/interceptions", params={"user": "dev"}, headers=s.admin_headers()
            )
            assert resp.status == 200, await resp.text()
            listing = await resp.json()
        [item] = listing["interceptions"]
        assert item["id"] == str(i.id)
        assert item["user"]["username"] == "dev"
        assert (item["provider"], item["provider_name"], item["model"]) == (
            "anthropic",
            PROVIDER,
            MODEL,
        )
        assert (item["client"], item["session_id"]) == ("Claude Code", "sess-hdr-42")
        assert item["ended_at"] is not None and item["error_type"] is None
        assert item["tokens"] == {
            "input": 37,
            "output": 91,
            "cache_read": 1800,
            "cache_write": 200,
            "reasoning": 0,
        }
        assert item["prompt"] == "Weather and time in Paris, please"
        assert sorted(
            (c["name"], json.dumps(c["arguments"])) for c in item["tool_calls"]
        ) == sorted((c.name, json.dumps(c.arguments)) for c in scenario.tool_calls)
        assert item["thought_count"] == 1


@pytest.mark.parametrize(
    ("headers", "metadata", "client", "session"),
    [
        pytest.param(
            {"User-Agent": CLAUDE_UA, "X-Claude-Code-Session-Id": "sess-header"},
            {"user_id": json.dumps({"session_id": "sess-from-json"})},
            "Claude Code",
            "sess-header",
            id="header-wins",
        ),
        pytest.param(
            {"User-Agent": CLAUDE_UA},
            {
                "user_id": json.dumps(
                    {"device_id": "dev-1", "account_uuid": "acc-1", "session_id": "sess-json-7"}
                )
            },
            "Claude Code",
            "sess-json-7",
            id="metadata-json",
        ),
        pytest.param(
            {"User-Agent": CLAUDE_UA},
            {"user_id": "user_abc123_account_acc-1_session_7f1c2d3e-legacy"},
            "Claude Code",
            "7f1c2d3e-legacy",
            id="metadata-legacy",
        ),
        pytest.param({"User-Agent": CLAUDE_UA}, None, "Claude Code", None, id="no-session"),
        pytest.param(
            {"User-Agent": "my-script/0.1", "X-Claude-Code-Session-Id": "not-claude"},
            {"user_id": json.dumps({"session_id": "not-claude-either"})},
            "Unknown",
            None,
            id="other-client",
        ),
    ],
)
async def test_the_client_comes_from_the_user_agent_and_the_session_from_its_header_or_metadata(
    headers: dict[str, str],
    metadata: dict[str, str] | None,
    client: str,
    session: str | None,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    """Client from the User-Agent; Claude Code's session from its header, else from the
    ``metadata.user_id`` JSON (or legacy ``…_session_<id>``) fallback; other clients none."""
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider(PROVIDER, "anthropic", keys=[UPSTREAM_KEY])
        kwargs: dict[str, Any] = {
            "model": MODEL,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "hi"}],
        }
        if metadata is not None:
            kwargs["metadata"] = metadata
        async with asyncio.timeout(TIMEOUT):
            await gateway_sdk(s, default_headers=headers).messages.create(**kwargs)
        i = (await s.only_recording()).interception
        assert (i.client, i.client_session_id) == (client, session)
        assert i.user_agent == headers["User-Agent"]


# --------------------------------------------------------------------------- upstream errors


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streaming"])
@pytest.mark.parametrize(
    ("status", "exc_class", "error_type"),
    [
        (400, anthropic.BadRequestError, "bad_request"),
        (500, anthropic.InternalServerError, "server_error"),
        (529, anthropic.OverloadedError, "overloaded"),
    ],
)
async def test_an_upstream_http_error_reaches_the_sdk_unchanged_and_is_recorded(
    status: int,
    exc_class: type[anthropic.APIStatusError],
    error_type: str,
    stream: bool,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    """A non-key upstream error reaches the client with its status, body and headers; the
    SDK raises the matching class; the interception ends with the classified error."""
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider(PROVIDER, "anthropic", keys=[UPSTREAM_KEY])
        s.fake.enqueue(Scenario.http_error(status))
        sdk = gateway_sdk(s)
        with pytest.raises(exc_class) as caught:
            async with asyncio.timeout(TIMEOUT):
                await create_message(sdk, stream, **request_kwargs())
        err = caught.value
        assert err.status_code == status
        expected_type, expected_message = wire.ERROR_TYPES[status]
        assert isinstance(err.body, dict)
        assert err.body["type"] == "error"
        assert err.body["error"] == {"type": expected_type, "message": expected_message}
        # The upstream's own body and request id are relayed, not a gateway rewrite.
        assert err.body["request_id"].startswith("req_011")
        assert err.response.headers["request-id"].startswith("req_011")
        assert len(s.fake.requests) == 1

        i = (await s.only_recording()).interception
        assert (i.error_type, i.error_message) == (error_type, expected_message)
        assert i.ended_at is not None


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streaming"])
async def test_upstream_401_single_key_is_key_failure(
    stream: bool, sqlite_url: str, tmp_path: Path
) -> None:
    """An upstream 401 on a one-key ring means the gateway's credential is bad, not the
    client's: 502 in Anthropic's shape ("all configured keys failed authentication…"),
    so the SDK raises InternalServerError rather than telling the user to fix their key;
    recorded as ``unauthorized``. The upstream is asked once (no retry loop)."""
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider(PROVIDER, "anthropic", keys=[UPSTREAM_KEY])
        s.fake.enqueue(Scenario.http_error(401))
        sdk = gateway_sdk(s)
        with pytest.raises(anthropic.InternalServerError) as caught:
            async with asyncio.timeout(TIMEOUT):
                await create_message(sdk, stream, **request_kwargs())
        err = caught.value
        assert err.status_code == 502
        assert err.body == {
            "type": "error",
            "error": {"type": "api_error", "message": MSG_UNAUTHORIZED},
        }
        assert [r.credential() for r in s.fake.requests] == [UPSTREAM_KEY]

        i = (await s.only_recording()).interception
        assert (i.error_type, i.error_message) == ("unauthorized", MSG_UNAUTHORIZED)


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streaming"])
async def test_upstream_429_single_key_is_rate_limited(
    stream: bool, sqlite_url: str, tmp_path: Path
) -> None:
    """An upstream 429 on a one-key ring → 429 ``rate_limit_error`` with the upstream's
    Retry-After carried over; the SDK raises RateLimitError; recorded as ``rate_limited``.
    While the key cools down the next request is answered without asking the upstream."""
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider(PROVIDER, "anthropic", keys=[UPSTREAM_KEY])
        s.fake.enqueue(Scenario.http_error(429, retry_after="7"))
        sdk = gateway_sdk(s)
        with pytest.raises(anthropic.RateLimitError) as caught:
            async with asyncio.timeout(TIMEOUT):
                await create_message(sdk, stream, **request_kwargs())
        err = caught.value
        assert err.status_code == 429
        assert err.response.headers["Retry-After"] == "7"
        message = "all configured keys are rate-limited (retry after 7s)"
        assert err.body == {
            "type": "error",
            "error": {"type": "rate_limit_error", "message": message},
        }
        assert len(s.fake.requests) == 1

        i = (await s.only_recording()).interception
        assert (i.error_type, i.error_message) == ("rate_limited", message)

        with pytest.raises(anthropic.RateLimitError) as again:
            async with asyncio.timeout(TIMEOUT):
                await sdk.messages.create(**request_kwargs())
        assert 1 <= int(again.value.response.headers["Retry-After"]) <= 7
        assert len(s.fake.requests) == 1


async def test_a_mid_stream_error_event_is_relayed_verbatim_and_recorded(
    sqlite_url: str, tmp_path: Path
) -> None:
    """An upstream ``event: error`` after some deltas: the client gets the deltas and the
    error event verbatim (the stream then ends); the SDK raises; recorded as ``overloaded``."""
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider(PROVIDER, "anthropic", keys=[UPSTREAM_KEY])
        scenario = Scenario.stream_error(deltas_before=2)
        s.fake.enqueue(scenario, scenario)
        texts: list[str] = []
        with pytest.raises(anthropic.APIStatusError) as caught:
            async with asyncio.timeout(TIMEOUT):
                async with gateway_sdk(s).messages.stream(**request_kwargs()) as st:
                    async for event in st:
                        if event.type == "text":
                            texts.append(event.text)
        assert texts == scenario.text_pieces()[:2]
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}

        resp, raw = await raw_post(
            s, f"/{PROVIDER}/v1/messages", orjson.dumps(request_kwargs(stream=True))
        )
        assert resp.status == 200
        events = sse_events(raw)
        assert events[-1][0] == "error"
        assert events[-1][1]["error"] == {"type": "overloaded_error", "message": "Overloaded"}
        assert "message_stop" not in [name for name, _ in events]

        await s.flush_records()
        rows = await recorded.interceptions(s.services, initiator_id=await s.member_id())
        assert len(rows) == 2
        for row in rows:
            assert (row.error_type, row.error_message) == ("overloaded", "Overloaded")
            assert row.ended_at is not None


async def test_an_upstream_drop_mid_stream_ends_with_an_anthropic_error_event(
    sqlite_url: str, tmp_path: Path
) -> None:
    """The upstream connection breaks mid-stream: the client gets what arrived, then an
    Anthropic-shaped error event, and the stream ends; recorded as ``server_error`` with
    the usage the upstream had reported so far."""
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider(PROVIDER, "anthropic", keys=[UPSTREAM_KEY])
        scenario = Scenario.drop(deltas_before=2)
        s.fake.enqueue(scenario, scenario)
        resp, raw = await raw_post(
            s, f"/{PROVIDER}/v1/messages", orjson.dumps(request_kwargs(stream=True))
        )
        assert resp.status == 200
        events = sse_events(raw)
        names = [name for name, _ in events]
        assert names[0] == "message_start"
        assert names.count("content_block_delta") == 2
        assert names[-1] == "error" and names.count("error") == 1
        error = events[-1][1]
        assert error["type"] == "error"
        assert error["error"]["type"] == "api_error"
        assert error["error"]["message"].startswith("upstream stream broke")

        with pytest.raises(anthropic.APIStatusError) as caught:
            async with asyncio.timeout(TIMEOUT):
                async with gateway_sdk(s).messages.stream(**request_kwargs()) as st:
                    await st.get_final_message()
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["error"]["type"] == "api_error"

        await s.flush_records()
        rows = await recorded.interceptions(s.services, initiator_id=await s.member_id())
        assert len(rows) == 2
        for row in rows:
            assert row.error_type == "server_error"
            assert row.error_message is not None
            assert row.error_message.startswith("upstream stream broke")
            rec = await recorded.recorded(s.services, row.id)
            assert [(t.input_tokens, t.output_tokens) for t in rec.token_usages] == [
                (scenario.usage.input_tokens, 1)
            ]


async def test_a_blocking_response_cut_half_way_is_an_anthropic_shaped_502(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A blocking response cut half-way: 502 in Anthropic's shape (never a half body or
    an HTML 500); recorded as ``server_error``."""
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider(PROVIDER, "anthropic", keys=[UPSTREAM_KEY])
        s.fake.enqueue(Scenario.drop())
        with pytest.raises(anthropic.InternalServerError) as caught:
            async with asyncio.timeout(TIMEOUT):
                await gateway_sdk(s).messages.create(**request_kwargs())
        assert caught.value.status_code == 502
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["type"] == "error"
        assert caught.value.body["error"]["type"] == "api_error"
        i = (await s.only_recording()).interception
        assert i.error_type == "server_error"


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streaming"])
async def test_an_unreachable_upstream_is_an_anthropic_shaped_502(
    stream: bool, sqlite_url: str, tmp_path: Path
) -> None:
    """Nothing listens at the provider's base URL: 502 in Anthropic's shape; the SDK raises
    InternalServerError; recorded as ``server_error``."""
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider(
            PROVIDER, "anthropic", keys=[UPSTREAM_KEY], base_url=f"http://127.0.0.1:{closed_port()}"
        )
        sdk = gateway_sdk(s)
        with pytest.raises(anthropic.InternalServerError) as caught:
            async with asyncio.timeout(TIMEOUT):
                await create_message(sdk, stream, **request_kwargs())
        err = caught.value
        assert err.status_code == 502
        assert isinstance(err.body, dict)
        assert err.body["type"] == "error"
        assert err.body["error"]["type"] == "api_error"
        assert err.body["error"]["message"].startswith("upstream unreachable")
        assert UPSTREAM_KEY not in json.dumps(err.body)
        i = (await s.only_recording()).interception
        assert i.error_type == "server_error"


# --------------------------------------------------------------------------- gateway auth


def assert_anthropic_auth_error(err: anthropic.AuthenticationError, detail: str) -> None:
    """A 401 in Anthropic's error shape whose message mentions ``detail``."""
    assert err.status_code == 401
    assert isinstance(err.body, dict)
    assert err.body["type"] == "error"
    assert err.body["error"]["type"] == "authentication_error"
    assert detail in err.body["error"]["message"]


async def test_missing_wrong_and_revoked_gateway_keys_get_a_401_and_reach_no_upstream(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Missing, malformed, wrong and revoked gateway keys get 401 in Anthropic's shape (the
    SDK raises AuthenticationError); none of them reaches the upstream or is recorded."""
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider(PROVIDER, "anthropic", keys=[UPSTREAM_KEY])
        async with asyncio.timeout(TIMEOUT):
            resp, body = await raw_post(
                s,
                f"/{PROVIDER}/v1/messages",
                orjson.dumps(request_kwargs()),
                headers={"x-api-key": ""},
            )
        assert resp.status == 401
        missing = orjson.loads(body)
        assert missing["type"] == "error"
        assert missing["error"]["type"] == "authentication_error"
        assert "missing gateway API key" in missing["error"]["message"]

        key_id = s.user_token.split("-")[1]
        cases = {
            "not-a-gateway-key": "malformed gateway API key",
            f"aib-{key_id}-wrongsecret": "invalid gateway API key",
            "aib-nosuchkey-secret": "invalid gateway API key",
        }
        for token, detail in cases.items():
            with pytest.raises(anthropic.AuthenticationError) as caught:
                async with asyncio.timeout(TIMEOUT):
                    await gateway_sdk(s, api_key=token).messages.create(**request_kwargs())
            assert_anthropic_auth_error(caught.value, detail)

        # A second key of the member: it works, then it is revoked and stops working.
        async with asyncio.timeout(TIMEOUT):
            created = await s.client.post(
                "/api/v1/users/dev/keys", json={"name": "old"}, headers=s.admin_headers()
            )
            assert created.status == 201, await created.text()
            spare = (await created.json())["token"]
            await gateway_sdk(s, api_key=spare).messages.create(**request_kwargs())
        assert len(s.fake.requests) == 1

        invalidated = asyncio.Event()

        async def on_change(_payload: bytes, _error: Exception | None) -> None:
            # Subscribed after the authenticator, so it runs after its invalidation.
            invalidated.set()

        await s.services.pubsub.subscribe(API_KEYS_CHANGED, on_change)
        async with asyncio.timeout(TIMEOUT):
            revoked = await s.client.delete(
                f"/api/v1/users/dev/keys/{spare.split('-')[1]}", headers=s.admin_headers()
            )
            assert revoked.status == 204, await revoked.text()
            await invalidated.wait()
        with pytest.raises(anthropic.AuthenticationError) as caught:
            async with asyncio.timeout(TIMEOUT):
                await gateway_sdk(s, api_key=spare).messages.create(**request_kwargs())
        assert_anthropic_auth_error(caught.value, "revoked")

        assert len(s.fake.requests) == 1  # only the request made before revocation
        await s.flush_records()
        assert len(await recorded.interceptions(s.services)) == 1


async def test_upstream_headers_and_body_untouched(sqlite_url: str, tmp_path: Path) -> None:
    """The gateway key (in either header) never reaches the upstream; exactly one upstream
    credential is sent, the provider key in ``x-api-key``; anthropic-version/-beta and other
    headers pass through; the body arrives byte for byte (unknown fields, key order and
    whitespace included)."""
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider(PROVIDER, "anthropic", keys=[UPSTREAM_KEY])
        beta = "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"
        body = (
            b'{ "stream":false, "model": "' + MODEL.encode() + b'",\n'
            b'  "max_tokens": 77, "future_field": {"nested": [1, 2.50, null], "z": true},\n'
            b'  "messages": [{"role": "user", "content": "caf\\u00e9 \xe2\x98\x95"}],\n'
            b'  "context_management": {"edits": []}, "a_last_key": "x" }'
        )
        resp, relayed = await raw_post(
            s,
            f"/{PROVIDER}/v1/messages?beta=true",
            body,
            headers={
                "Authorization": f"Bearer {s.user_token}",
                "anthropic-beta": beta,
                "X-Custom-Trace": "trace-123",
                "User-Agent": CLAUDE_UA,
            },
        )
        assert resp.status == 200, relayed
        assert orjson.loads(relayed)["type"] == "message"
        seen = s.fake.requests[-1]
        assert seen.body == body
        assert seen.path == "/v1/messages"
        assert dict(seen.query) == {"beta": "true"}
        assert seen.headers.getall("x-api-key") == [UPSTREAM_KEY]
        assert "Authorization" not in seen.headers
        assert "api-key" not in seen.headers
        assert all(s.user_token not in value for value in seen.headers.values())
        assert seen.headers["anthropic-version"] == "2023-06-01"
        assert seen.headers["anthropic-beta"] == beta
        assert seen.headers["X-Custom-Trace"] == "trace-123"
        assert seen.headers["User-Agent"] == CLAUDE_UA

        # The same through the SDK, which sends the gateway key as x-api-key: the headers
        # the upstream sees are the ones the SDK sends when it talks to it directly.
        extra = {"anthropic-beta": beta, "anthropic-version": "2023-06-01"}
        async with asyncio.timeout(TIMEOUT):
            await gateway_sdk(s, default_headers=extra).messages.create(**request_kwargs())
            via_gateway = s.fake.requests[-1]
            await direct_sdk(s, default_headers=extra).messages.create(**request_kwargs())
            direct = s.fake.requests[-1]
        assert via_gateway.headers.getall("x-api-key") == [UPSTREAM_KEY]
        assert "Authorization" not in via_gateway.headers
        assert all(s.user_token not in value for value in via_gateway.headers.values())
        assert via_gateway.headers["anthropic-beta"] == beta
        assert via_gateway.headers["anthropic-version"] == "2023-06-01"
        assert via_gateway.body == direct.body
        # Everything but framing and the credential (asserted above) is the same; the
        # SDK's per-request headers (retry count, timeout) included.
        hop = {
            "host",
            "content-length",
            "accept-encoding",
            "connection",
            "x-api-key",
            "authorization",
        }
        assert {k.lower(): v for k, v in via_gateway.headers.items() if k.lower() not in hop} == {
            k.lower(): v for k, v in direct.headers.items() if k.lower() not in hop
        }


# --------------------------------------------------------------------------- passthrough


async def test_models_and_count_tokens_pass_through_with_the_provider_key_unrecorded(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Models and count_tokens reach the upstream with the provider key (not the gateway
    key), path and query preserved, and the answer relayed unchanged; nothing recorded."""
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider(PROVIDER, "anthropic", keys=[UPSTREAM_KEY])
        sdk = gateway_sdk(s)
        async with asyncio.timeout(TIMEOUT):
            page = await sdk.models.list(limit=2, after_id="claude-x")
            one = await sdk.models.retrieve(MODEL)
            count_params: dict[str, Any] = {
                "model": MODEL,
                "messages": [{"role": "user", "content": "count these tokens please"}],
                "system": "be brief",
            }
            counted = await sdk.messages.count_tokens(**count_params)
            resp = await s.client.get(
                f"/{PROVIDER}/v1/models?limit=2&after_id=claude-x",
                headers={"x-api-key": s.user_token, "anthropic-version": "2023-06-01"},
            )
            raw_models = await resp.read()

        assert [m.id for m in page.data] == [m[0] for m in wire.MODELS]
        assert one.id == MODEL and one.display_name == "Claude Sonnet 4.5"
        assert counted.input_tokens == wire.count_tokens_body(count_params)["input_tokens"]
        assert resp.status == 200
        assert orjson.loads(raw_models) == wire.models_body()

        models_req, model_req, count_req, raw_req = s.fake.requests
        assert (models_req.method, models_req.path) == ("GET", "/v1/models")
        assert dict(models_req.query) == {"limit": "2", "after_id": "claude-x"}
        assert dict(raw_req.query) == {"limit": "2", "after_id": "claude-x"}
        assert model_req.path == f"/v1/models/{MODEL}"
        assert (count_req.method, count_req.path) == ("POST", "/v1/messages/count_tokens")
        assert count_req.json == count_params
        for req in s.fake.requests:
            assert req.headers.getall("x-api-key") == [UPSTREAM_KEY]
            assert "Authorization" not in req.headers
            assert all(s.user_token not in value for value in req.headers.values())
        await assert_nothing_recorded(s)


# --------------------------------------------------------------------------- edges


async def test_unknown_route_is_404(sqlite_url: str, tmp_path: Path) -> None:
    """A path the provider does not serve (the legacy completions API) → 404; the upstream
    is not asked and nothing is recorded."""
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider(PROVIDER, "anthropic", keys=[UPSTREAM_KEY])
        resp, body = await raw_post(
            s, f"/{PROVIDER}/v1/complete", b'{"model":"claude-2","prompt":"Human: hi"}'
        )
        assert resp.status == 404
        assert orjson.loads(body)["message"] == f"route not supported: POST /{PROVIDER}/v1/complete"
        assert s.fake.requests == []
        await assert_nothing_recorded(s)


async def test_disabled_provider_is_503(sqlite_url: str, tmp_path: Path) -> None:
    """A disabled provider answers 503 in Anthropic's shape naming the provider; the SDK
    raises ServiceUnavailableError; the upstream is not asked, nothing is recorded."""
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider(PROVIDER, "anthropic", keys=[UPSTREAM_KEY], enabled=False)
        with pytest.raises(anthropic.ServiceUnavailableError) as caught:
            async with asyncio.timeout(TIMEOUT):
                await gateway_sdk(s).messages.create(**request_kwargs())
        assert caught.value.status_code == 503
        assert caught.value.body == {
            "type": "error",
            "error": {
                "type": "api_error",
                "message": f'provider_disabled: AI provider "{PROVIDER}" is disabled',
            },
        }
        assert s.fake.requests == []
        await assert_nothing_recorded(s)


async def test_body_over_limit_is_413(sqlite_url: str, tmp_path: Path) -> None:
    """A body over ``max_body_bytes`` → 413 in Anthropic's shape, on the bridged route and
    on passthrough; a body at the limit goes through. Nothing too large reaches upstream."""
    limit = 4096
    async with stack(sqlite_url, tmp_path, settings_overrides={"max_body_bytes": limit}) as s:
        await s.add_provider(PROVIDER, "anthropic", keys=[UPSTREAM_KEY])
        big = "x" * limit
        with pytest.raises(anthropic.ContentTooLargeError) as caught:
            async with asyncio.timeout(TIMEOUT):
                await gateway_sdk(s).messages.create(
                    model=MODEL, max_tokens=10, messages=[{"role": "user", "content": big}]
                )
        assert caught.value.status_code == 413
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["error"]["type"] == "request_too_large"
        assert "Request body too large" in caught.value.body["error"]["message"]
        assert "4096 bytes" in caught.value.body["error"]["message"]

        with pytest.raises(anthropic.ContentTooLargeError):
            async with asyncio.timeout(TIMEOUT):
                await gateway_sdk(s).messages.count_tokens(
                    model=MODEL, messages=[{"role": "user", "content": big}]
                )
        assert s.fake.requests == []
        await assert_nothing_recorded(s)

        template = request_kwargs()
        template["messages"] = [{"role": "user", "content": ""}]
        padding = limit - len(orjson.dumps(template))
        template["messages"] = [{"role": "user", "content": "y" * padding}]
        exact = orjson.dumps(template)
        assert len(exact) == limit
        resp, _ = await raw_post(s, f"/{PROVIDER}/v1/messages", exact)
        assert resp.status == 200
        assert s.fake.requests[-1].body == exact
