"""The fake upstream speaks each provider's wire format well enough for the official SDKs.

Every scenario is parsed by the real ``anthropic`` / ``openai`` SDK clients (async, no
retries), so the gateway's relay tests run against realistic upstream bytes.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from click.testing import CliRunner

from aibridge.fakellm import FakeLLM, Kind, Scenario, ToolCall, Usage, scenario_from_keyword
from aibridge.fakellm.exchange import load_exchange
from aibridge.fakellm.scenario import split_text, split_words
from aibridge.fakellm.wire import SSEEvent, cut_index

T = 10  # seconds: bound on every await that could hang

USER = [{"role": "user", "content": "hi"}]


async def raw_sse(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    """POST and return the whole response text (for wire-level assertions)."""
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, json=body, headers=headers or {}) as r,
    ):
        assert r.status == 200
        return await r.text()


def sse_data(text: str) -> list[tuple[str | None, Any]]:
    """Parse SSE text into (event name, decoded data) pairs."""
    out: list[tuple[str | None, Any]] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = None, None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        assert data is not None, block
        out.append((name, data if data == "[DONE]" else json.loads(data)))
    return out


# ====================================================================== Anthropic


async def claude_reply(
    claude: Any, stream: bool, count_delta: str | None = None
) -> tuple[Any, int]:
    """The SDK's message for ``USER``, created or (``stream``) streamed; and, when streaming
    with ``count_delta``, how many content-block deltas of that type arrived (else 0)."""
    if not stream:
        return await claude.messages.create(model="claude-x", max_tokens=10, messages=USER), 0
    deltas = 0
    async with claude.messages.stream(model="claude-x", max_tokens=10, messages=USER) as s:
        if count_delta is not None:
            async for event in s:
                if event.type == "content_block_delta" and event.delta.type == count_delta:
                    deltas += 1
        return await s.get_final_message(), deltas


async def test_an_anthropic_text_stream_has_the_real_event_sequence_and_parses_in_the_sdk(
    fake: FakeLLM, claude: Any
) -> None:
    scenario = Scenario.text_reply(usage=Usage(input_tokens=11, output_tokens=7))
    fake.enqueue(scenario, scenario)
    async with asyncio.timeout(T):
        text = await raw_sse(
            fake.url + "/v1/messages",
            {"model": "claude-x", "max_tokens": 10, "stream": True, "messages": USER},
        )
        events = sse_data(text)
        names = [n for n, _ in events]
        assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
        assert "ping" in names
        assert names.count("content_block_delta") == 4
        start, delta = events[0][1], events[-2][1]
        assert start["message"]["usage"]["output_tokens"] == 1
        assert start["message"]["usage"]["input_tokens"] == 11
        assert delta["usage"] == {
            "input_tokens": 11,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 7,
        }
        assert all(d["type"] != "error" for _, d in events)

        async with claude.messages.stream(model="claude-x", max_tokens=10, messages=USER) as stream:
            pieces = [t async for t in stream.text_stream]
            message = await stream.get_final_message()
    assert len(pieces) == 4 and "".join(pieces) == scenario.text
    assert message.id.startswith("msg_") and message.id == fake.requests[-1].response_id
    assert message.usage.input_tokens == 11 and message.usage.output_tokens == 7
    assert message.stop_reason == "end_turn"


async def test_an_anthropic_blocking_reply_carries_the_text_model_and_key(
    fake: FakeLLM, claude: Any
) -> None:
    async with asyncio.timeout(T):
        message = await claude.messages.create(model="claude-x", max_tokens=10, messages=USER)
    assert message.content[0].text == Scenario().text
    assert message.model == "claude-x"
    assert fake.requests[0].status == 200 and fake.requests[0].api == "anthropic"
    # This SDK generation sends the key as a Bearer token; older ones used x-api-key.
    assert fake.requests[0].credential() == "sk-ant-test"
    assert fake.requests[0].headers["anthropic-version"]


@pytest.mark.parametrize("stream", [True, False])
async def test_an_anthropic_tool_call_streams_its_input_in_deltas_and_logs_its_id(
    fake: FakeLLM, claude: Any, stream: bool
) -> None:
    call = ToolCall("read_file", {"path": "/tmp/blah/foo", "limit": 20})
    fake.enqueue(Scenario.tool_call(call))
    async with asyncio.timeout(T):
        message, deltas = await claude_reply(claude, stream, "input_json_delta")
    if stream:
        assert deltas >= 3
    tool_uses = [b for b in message.content if b.type == "tool_use"]
    assert [(b.name, b.input) for b in tool_uses] == [("read_file", call.arguments)]
    assert tool_uses[0].id.startswith("toolu_")
    assert [b.id for b in tool_uses] == fake.requests[-1].tool_call_ids
    assert message.content[0].type == "text"
    assert message.stop_reason == "tool_use"


@pytest.mark.parametrize("stream", [True, False])
async def test_anthropic_parallel_tool_calls_get_distinct_ids(
    fake: FakeLLM, claude: Any, stream: bool
) -> None:
    fake.enqueue(Scenario.parallel_tools())
    async with asyncio.timeout(T):
        message, _ = await claude_reply(claude, stream)
    calls = [(b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert calls == [
        ("get_weather", {"city": "Paris", "unit": "celsius"}),
        ("get_time", {"timezone": "Europe/Paris", "format": "24h"}),
    ]
    assert len({b.id for b in message.content}) == 2


@pytest.mark.parametrize("stream", [True, False])
async def test_anthropic_thinking_streams_text_and_signature_before_the_answer(
    fake: FakeLLM, claude: Any, stream: bool
) -> None:
    scenario = Scenario.thinking_reply()
    fake.enqueue(scenario)
    async with asyncio.timeout(T):
        message, thinking_deltas = await claude_reply(claude, stream, "thinking_delta")
    if stream:
        assert thinking_deltas > 1
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.thinking == scenario.thinking
    assert thinking.signature == scenario.signature and thinking.signature
    assert text.type == "text" and text.text == scenario.text


@pytest.mark.parametrize("stream", [True, False])
async def test_anthropic_usage_reports_uncached_input_and_cache_reads_and_writes(
    fake: FakeLLM, claude: Any, stream: bool
) -> None:
    scenario = Scenario.cached()
    fake.enqueue(scenario)
    async with asyncio.timeout(T):
        message, _ = await claude_reply(claude, stream)
    usage = message.usage
    assert usage.input_tokens == scenario.usage.input_tokens == 21
    assert usage.cache_read_input_tokens == scenario.usage.cache_read_tokens == 1800
    assert usage.cache_creation_input_tokens == scenario.usage.cache_write_tokens == 200
    assert usage.output_tokens == scenario.usage.output_tokens


ANTHROPIC_ERRORS = [
    (400, anthropic.BadRequestError, "invalid_request_error"),
    (401, anthropic.AuthenticationError, "authentication_error"),
    (429, anthropic.RateLimitError, "rate_limit_error"),
    (500, anthropic.InternalServerError, "api_error"),
    (503, anthropic.InternalServerError, "api_error"),
    (529, anthropic.InternalServerError, "overloaded_error"),
]


@pytest.mark.parametrize(("status", "exc", "error_type"), ANTHROPIC_ERRORS)
@pytest.mark.parametrize("stream", [True, False])
async def test_anthropic_http_errors_have_the_error_shape_request_id_and_retry_after(
    fake: FakeLLM, claude: Any, status: int, exc: type[Exception], error_type: str, stream: bool
) -> None:
    fake.enqueue(Scenario.http_error(status))
    async with asyncio.timeout(T):
        with pytest.raises(exc) as info:
            await claude.messages.create(
                model="claude-x", max_tokens=10, messages=USER, stream=stream
            )
    err = info.value
    assert isinstance(err, anthropic.APIStatusError)
    assert err.status_code == status
    assert isinstance(err.body, dict)
    assert err.body["type"] == "error" and err.body["error"]["type"] == error_type
    assert err.body["request_id"].startswith("req_")
    assert (err.response.headers.get("retry-after") == "7") == (status == 429)


async def test_an_anthropic_mid_stream_error_event_reaches_the_sdk_after_the_deltas(
    fake: FakeLLM, claude: Any
) -> None:
    fake.enqueue(Scenario.stream_error(deltas_before=2))
    received: list[str] = []
    async with asyncio.timeout(T):
        with pytest.raises(anthropic.APIStatusError) as info:
            async with claude.messages.stream(model="claude-x", max_tokens=10, messages=USER) as s:
                async for text in s.text_stream:
                    received.append(text)
    assert len(received) == 2
    assert info.value.type == "overloaded_error"
    assert info.value.body["error"]["message"] == "Overloaded"  # type: ignore[index]


async def test_count_tokens_and_models_answer_without_a_scenario(
    fake: FakeLLM, claude: Any
) -> None:
    async with asyncio.timeout(T):
        count = await claude.messages.count_tokens(model="claude-x", messages=USER)
        models = await claude.models.list()
        model = await claude.models.retrieve("claude-haiku-4-5-20251001")
        with pytest.raises(anthropic.NotFoundError):
            await claude.models.retrieve("nope")
    assert count.input_tokens > 0
    assert models.data[0].id == "claude-sonnet-4-5-20250929"
    assert model.display_name == "Claude Haiku 4.5"
    assert all(r.api is None for r in fake.requests)


async def test_an_invalid_anthropic_request_is_a_400_and_chooses_no_scenario(fake: FakeLLM) -> None:
    async with asyncio.timeout(T), aiohttp.ClientSession() as s:
        async with s.post(fake.url + "/v1/messages", json={"model": "m", "messages": []}) as r:
            assert r.status == 400
            body = await r.json()
        async with s.post(fake.url + "/v1/messages", data=b"{not json") as r:
            assert r.status == 400
    assert body["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }
    assert fake.requests[0].api is None and fake.requests[0].scenario is None


# ====================================================================== OpenAI chat


async def test_a_chat_stream_with_include_usage_ends_with_a_usage_only_chunk(
    fake: FakeLLM, oai: Any
) -> None:
    scenario = Scenario.thinking_reply()
    fake.enqueue(scenario)
    async with asyncio.timeout(T):
        stream = await oai.chat.completions.create(
            model="gpt-x", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == scenario.text
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    usage = chunks[-1].usage
    assert usage.completion_tokens == scenario.usage.output_tokens
    assert usage.completion_tokens_details.reasoning_tokens == 64
    assert chunks[0].id.startswith("chatcmpl-") and chunks[0].id == fake.requests[0].response_id
    assert fake.requests[0].headers["Authorization"] == "Bearer sk-test"


async def test_a_chat_stream_without_include_usage_has_no_usage_and_ends_with_done(
    fake: FakeLLM,
) -> None:
    async with asyncio.timeout(T):
        text = await raw_sse(
            fake.openai_url + "/chat/completions",
            {"model": "gpt-x", "messages": USER, "stream": True},
        )
    assert "event:" not in text
    events = sse_data(text)
    assert events[-1] == (None, "[DONE]")
    chunks = [d for _, d in events[:-1]]
    assert all("usage" not in c and c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("stream", [True, False])
async def test_chat_parallel_tool_calls_stream_their_arguments_and_log_their_ids(
    fake: FakeLLM, oai: Any, stream: bool
) -> None:
    fake.enqueue(Scenario.parallel_tools(arg_chunks=4))
    async with asyncio.timeout(T):
        if stream:
            arg_deltas = 0
            async with oai.chat.completions.stream(model="gpt-x", messages=USER) as s:
                async for event in s:
                    if event.type == "tool_calls.function.arguments.delta":
                        arg_deltas += 1
                completion = await s.get_final_completion()
            assert arg_deltas >= 8
        else:
            completion = await oai.chat.completions.create(model="gpt-x", messages=USER)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris", "unit": "celsius"}),
        ("get_time", {"timezone": "Europe/Paris", "format": "24h"}),
    ]
    assert [c.id for c in calls] == fake.requests[0].tool_call_ids
    assert all(c.id.startswith("call_") for c in calls)


async def test_a_blocking_chat_reply_counts_cached_tokens_in_prompt_tokens(
    fake: FakeLLM, oai: Any
) -> None:
    fake.enqueue(
        Scenario.tool_call(usage=Usage(input_tokens=29, output_tokens=5, cache_read_tokens=100))
    )
    async with asyncio.timeout(T):
        completion = await oai.chat.completions.create(model="gpt-x", messages=USER)
    assert completion.choices[0].message.content == "Let me check that."
    assert len(completion.choices[0].message.tool_calls) == 1
    usage = completion.usage
    assert usage.prompt_tokens == 129  # OpenAI counts cached tokens in prompt_tokens
    assert usage.prompt_tokens_details.cached_tokens == 100
    assert usage.total_tokens == 134


OPENAI_ERRORS = [
    (400, openai.BadRequestError),
    (401, openai.AuthenticationError),
    (429, openai.RateLimitError),
    (500, openai.InternalServerError),
    (503, openai.InternalServerError),
    (529, openai.InternalServerError),
]


@pytest.mark.parametrize(("status", "exc"), OPENAI_ERRORS)
@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_openai_http_errors_have_the_error_shape_code_and_retry_after(
    fake: FakeLLM, oai: Any, status: int, exc: type[Exception], api: str
) -> None:
    fake.enqueue(Scenario.http_error(status))
    async with asyncio.timeout(T):
        with pytest.raises(exc) as info:
            if api == "chat":
                await oai.chat.completions.create(model="gpt-x", messages=USER, stream=True)
            else:
                await oai.responses.create(model="gpt-x", input="hi", stream=True)
    err = info.value
    assert isinstance(err, openai.APIStatusError)
    assert err.status_code == status
    assert isinstance(err.body, dict) and set(err.body) == {"message", "type", "param", "code"}
    assert (err.response.headers.get("retry-after") == "7") == (status == 429)
    if status == 429:
        assert err.code == "rate_limit_exceeded"
    if status == 401:
        assert err.code == "invalid_api_key"


async def test_a_chat_mid_stream_error_chunk_reaches_the_sdk_after_the_deltas(
    fake: FakeLLM, oai: Any
) -> None:
    fake.enqueue(Scenario.stream_error(deltas_before=3, error_message="boom"))
    seen: list[str] = []
    async with asyncio.timeout(T):
        stream = await oai.chat.completions.create(model="gpt-x", messages=USER, stream=True)
        with pytest.raises(openai.APIError) as info:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    seen.append(chunk.choices[0].delta.content)
    assert len(seen) == 3
    assert info.value.message == "boom"
    assert info.value.type == "server_error"


async def test_openai_models_are_listed_and_retrieved(fake: FakeLLM, oai: Any) -> None:
    async with asyncio.timeout(T):
        models = await oai.models.list()
        model = await oai.models.retrieve("gpt-4.1")
    assert "gpt-4.1" in [m.id for m in models.data]
    assert model.owned_by == "system"
    assert "anthropic-version" not in fake.requests[0].headers


# ====================================================================== OpenAI Responses


async def test_a_streamed_response_is_stored_and_retrievable_by_id(fake: FakeLLM, oai: Any) -> None:
    scenario = Scenario.cached()
    fake.enqueue(scenario)
    async with asyncio.timeout(T):
        deltas = 0
        async with oai.responses.stream(model="gpt-5", input="hi") as s:
            async for event in s:
                if event.type == "response.output_text.delta":
                    deltas += 1
            response = await s.get_final_response()
        again = await oai.responses.retrieve(response.id)
        with pytest.raises(openai.NotFoundError):
            await oai.responses.retrieve("resp_missing")
    assert deltas == 4
    assert response.output_text == scenario.text and response.status == "completed"
    assert response.id.startswith("resp_") and again.id == response.id
    usage = response.usage
    assert usage.input_tokens == 1821
    assert usage.input_tokens_details.cached_tokens == 1800
    assert usage.output_tokens == scenario.usage.output_tokens
    assert usage.total_tokens == 1830


async def test_responses_events_are_numbered_in_sequence_and_end_completed(fake: FakeLLM) -> None:
    fake.enqueue(Scenario.thinking_reply())
    async with asyncio.timeout(T):
        text = await raw_sse(
            fake.openai_url + "/responses", {"model": "gpt-5", "input": "hi", "stream": True}
        )
    events = sse_data(text)
    assert all(name == data["type"] for name, data in events)
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    names = [n for n, _ in events]
    assert names[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert "response.reasoning_summary_text.delta" in names
    assert names[-1] == "response.completed"
    assert events[-1][1]["response"]["usage"]["output_tokens_details"]["reasoning_tokens"] == 64


@pytest.mark.parametrize("stream", [True, False])
async def test_a_response_carries_a_reasoning_summary_and_function_calls(
    fake: FakeLLM, oai: Any, stream: bool
) -> None:
    scenario = Scenario.parallel_tools(thinking="Two lookups are needed.")
    fake.enqueue(scenario)
    async with asyncio.timeout(T):
        if stream:
            arg_deltas = 0
            async with oai.responses.stream(model="gpt-5", input="hi") as s:
                async for event in s:
                    if event.type == "response.function_call_arguments.delta":
                        arg_deltas += 1
                response = await s.get_final_response()
            assert arg_deltas >= 6
        else:
            response = await oai.responses.create(model="gpt-5", input="hi")
    reasoning, *calls = response.output
    assert reasoning.type == "reasoning"
    assert [p.text for p in reasoning.summary] == ["Two lookups are needed."]
    assert [(c.type, c.name, json.loads(c.arguments)) for c in calls] == [
        ("function_call", "get_weather", {"city": "Paris", "unit": "celsius"}),
        ("function_call", "get_time", {"timezone": "Europe/Paris", "format": "24h"}),
    ]
    assert [c.call_id for c in calls] == fake.requests[0].tool_call_ids
    assert response.id == fake.requests[0].response_id


@pytest.mark.parametrize("event", ["error", "response.failed"])
async def test_a_responses_mid_stream_failure_ends_the_stream_and_is_not_stored(
    fake: FakeLLM, oai: Any, event: str
) -> None:
    fake.enqueue(Scenario.stream_error(responses_error_event=event, error_code="ERR_SOMETHING"))
    async with asyncio.timeout(T):
        stream = await oai.responses.create(model="gpt-5", input="hi", stream=True)
        events = [e async for e in stream]
    types = [e.type for e in events]
    assert types.count("response.output_text.delta") == 2
    assert types[-1] == event and "response.completed" not in types
    last = events[-1]
    if event == "error":
        assert last.code == "ERR_SOMETHING"
    else:
        assert last.response.status == "failed" and last.response.error.code == "ERR_SOMETHING"
    assert last.sequence_number == len(events) - 1
    assert events[0].response.id not in fake.responses  # failed responses are not stored


# ====================================================================== interruptions


@pytest.mark.parametrize("api", ["anthropic", "chat", "responses"])
async def test_a_dropped_stream_is_a_broken_transfer_not_a_client_disconnect(
    fake: FakeLLM, claude: Any, oai: Any, api: str
) -> None:
    fake.enqueue(Scenario.drop())
    got = 0
    async with asyncio.timeout(T):
        with pytest.raises(Exception) as info:  # the class depends on the SDK
            if api == "anthropic":
                async with claude.messages.stream(
                    model="claude-x", max_tokens=10, messages=USER
                ) as s:
                    async for _ in s.text_stream:
                        got += 1
            elif api == "chat":
                stream = await oai.chat.completions.create(
                    model="gpt-x", messages=USER, stream=True
                )
                async for _ in stream:
                    got += 1
            else:
                stream = await oai.responses.create(model="gpt-5", input="hi", stream=True)
                async for _ in stream:
                    got += 1
    assert got >= 2
    # A broken transfer (no chunked terminator), not a clean end of stream or an API error.
    err = info.value
    if api == "anthropic":
        # The Anthropic SDK lets the transport's RemoteProtocolError through mid-stream.
        assert "incomplete chunked read" in str(err)
    else:
        assert isinstance(err, openai.APIConnectionError)
        assert "incomplete chunked read" in str(err.__cause__)
    assert fake.disconnects == 0  # the fake dropped it; the client did not go away
    assert fake.requests[0].dropped and not fake.requests[0].disconnected


async def test_drop_blocking_sends_truncated_body(fake: FakeLLM) -> None:
    fake.enqueue(Scenario.drop())
    async with (
        asyncio.timeout(T),
        aiohttp.ClientSession() as s,
        s.post(fake.openai_url + "/chat/completions", json={"model": "m", "messages": USER}) as r,
    ):
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()


async def test_stall_until_released(fake: FakeLLM, claude: Any) -> None:
    release = asyncio.Event()
    scenario = Scenario.stall(release=release, deltas_before=1)
    fake.enqueue(scenario)
    pieces: list[str] = []
    async with asyncio.timeout(T):
        async with claude.messages.stream(model="claude-x", max_tokens=10, messages=USER) as s:
            async for text in s.text_stream:
                pieces.append(text)
                if len(pieces) == 1:
                    await scenario.stalled.wait()
                    assert len(pieces) == 1
                    release.set()
            message = await s.get_final_message()
    assert len(pieces) == 4 and message.content[0].text == scenario.text
    assert fake.disconnects == 0


@pytest.mark.parametrize("stream", [True, False])
async def test_stall_then_client_disconnect_is_noticed(fake: FakeLLM, stream: bool) -> None:
    scenario = Scenario.stall()
    fake.enqueue(scenario)
    url, body = fake.openai_url + "/chat/completions", {"model": "m", "messages": USER}
    async with asyncio.timeout(T), aiohttp.ClientSession() as session:
        if stream:
            # Headers and the first deltas arrive, then the fake goes silent.
            resp = await session.post(url, json=body | {"stream": True})
            assert resp.status == 200
            await scenario.stalled.wait()
            assert not fake.disconnected.is_set()
            resp.close()  # drops the connection
        else:
            # Blocking: nothing at all arrives while stalled.
            pending = asyncio.create_task(session.post(url, json=body))
            await scenario.stalled.wait()
            assert not pending.done() and not fake.disconnected.is_set()
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
        await fake.disconnected.wait()
    assert fake.disconnects == 1 and fake.requests[0].disconnected


async def test_a_slow_scenario_waits_its_delay_before_every_event(fake: FakeLLM, oai: Any) -> None:
    fake.enqueue(Scenario.slow(delay=0.05, chunks=4))
    start = time.monotonic()
    async with asyncio.timeout(T):
        stream = await oai.chat.completions.create(model="gpt-x", messages=USER, stream=True)
        arrivals = [time.monotonic() async for _ in stream]
    # 1 role chunk + 4 content chunks + finish chunk, each preceded by the delay.
    assert len(arrivals) == 6
    assert arrivals[-1] - start >= 6 * 0.05
    assert arrivals[-1] - arrivals[0] >= 5 * 0.05


# ====================================================================== selection, log, auth


async def test_the_queue_comes_before_the_default_and_the_default_before_keywords(
    fake: FakeLLM, claude: Any
) -> None:
    fake.enqueue(Scenario.text_reply("first"), Scenario.text_reply("second"))
    async with asyncio.timeout(T):
        replies = [
            (await claude.messages.create(model="m", max_tokens=5, messages=USER)).content[0].text
            for _ in range(2)
        ]
        fake.default = Scenario.text_reply("default")
        replies.append(
            (await claude.messages.create(model="m", max_tokens=5, messages=USER)).content[0].text
        )
        fake.default = None
        tool_msg = await claude.messages.create(
            model="m",
            max_tokens=5,
            messages=[{"role": "user", "content": [{"type": "text", "text": "do scenario:tools"}]}],
        )
        with pytest.raises(anthropic.RateLimitError):
            await claude.messages.create(
                model="m",
                max_tokens=5,
                messages=[{"role": "user", "content": "scenario:error-429"}],
            )
        plain = await claude.messages.create(model="m", max_tokens=5, messages=USER)
    assert replies == ["first", "second", "default"]
    assert tool_msg.stop_reason == "tool_use"
    assert plain.content[0].text == Scenario().text
    assert [r.scenario.kind for r in fake.requests if r.scenario] == [
        Kind.TEXT, Kind.TEXT, Kind.TEXT, Kind.TOOL_CALL, Kind.HTTP_ERROR, Kind.TEXT,
    ]  # fmt: skip


async def test_keywords_are_read_from_responses_and_chat_input(fake: FakeLLM, oai: Any) -> None:
    async with asyncio.timeout(T):
        r = await oai.responses.create(
            model="gpt-5",
            input=[
                {"role": "user", "content": [{"type": "input_text", "text": "scenario:parallel"}]}
            ],
        )
        c = await oai.chat.completions.create(
            model="gpt-x", messages=[{"role": "user", "content": "please scenario:thinking"}]
        )
    assert [i.type for i in r.output] == ["function_call", "function_call"]
    assert c.usage.completion_tokens_details.reasoning_tokens == 64


def test_keywords_name_scenarios_and_the_splitting_helpers_keep_the_text() -> None:
    assert scenario_from_keyword("nothing here") is None
    assert scenario_from_keyword("scenario:unknown") is None
    err = scenario_from_keyword("Scenario:Error-503")
    assert err is not None and err.kind is Kind.HTTP_ERROR and err.status == 503
    assert err.retry_after is None
    assert Scenario.http_error(429).retry_after == "7"
    with pytest.raises(ValueError):
        Scenario.parallel_tools([ToolCall("a", {})])
    for text, n in [("abcdefg", 3), ("a", 5), ("hello big world", 2), (" x  y ", 2)]:
        assert "".join(split_text(text, n)) == text and len(split_text(text, n)) <= n
        assert "".join(split_words(text, n)) == text
    assert split_words("one two three four", 2) == ["one two ", "three four"]
    events = [
        SSEEvent("a", {}),
        SSEEvent("d", {}, True),
        SSEEvent("d", {}, True),
        SSEEvent("z", {}),
    ]
    assert cut_index(events, 1) == 2 and cut_index(events, 5) == 3
    assert SSEEvent(None, "[DONE]").encode() == b"data: [DONE]\n\n"
    assert SSEEvent("ping", {"type": "ping"}).encode() == b'event: ping\ndata: {"type":"ping"}\n\n'


async def test_request_log_keeps_raw_body_headers_and_query(fake: FakeLLM) -> None:
    raw = b'{"model": "m",  "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}'
    async with (
        asyncio.timeout(T),
        aiohttp.ClientSession() as s,
        s.post(
            fake.url + "/v1/messages?beta=true",
            data=raw,
            headers={"x-api-key": "sk-ant-abc", "Content-Type": "application/json", "X-Extra": "1"},
        ) as r,
    ):
        assert r.status == 200
        assert r.headers["request-id"].startswith("req_")
    rec = fake.requests[0]
    assert rec.method == "POST" and rec.path == "/v1/messages"
    assert rec.query["beta"] == "true"
    assert rec.body == raw
    assert rec.json["max_tokens"] == 5
    assert rec.headers["X-API-KEY"] == "sk-ant-abc" and rec.headers["x-extra"] == "1"
    assert rec.credential() == "sk-ant-abc"
    assert fake.generation_requests() == [rec]


async def test_wait_for_requests_returns_once_enough_requests_arrived(
    fake: FakeLLM, oai: Any
) -> None:
    async with asyncio.timeout(T):
        waiter = asyncio.create_task(fake.wait_for_requests(2))
        await oai.models.list()
        assert not waiter.done()
        await oai.models.list()
        await waiter


async def test_unknown_keys_get_a_401_and_key_scenarios_apply_to_their_key_only() -> None:
    good, limited = "sk-good", "sk-limited"
    async with FakeLLM(valid_keys={good, limited}).serve() as fake:
        fake.key_scenarios[limited] = Scenario.http_error(429, retry_after="3")

        def clients(key: str) -> tuple[Any, Any]:
            return (
                anthropic.AsyncAnthropic(base_url=fake.url, api_key=key, max_retries=0),
                openai.AsyncOpenAI(base_url=fake.openai_url, api_key=key, max_retries=0),
            )

        async with asyncio.timeout(T):
            bad_a, bad_o = clients("sk-wrong")
            with pytest.raises(anthropic.AuthenticationError) as a_info:
                await bad_a.messages.create(model="m", max_tokens=5, messages=USER)
            with pytest.raises(openai.AuthenticationError):
                await bad_o.chat.completions.create(model="m", messages=USER)
            with pytest.raises(openai.AuthenticationError):
                await bad_o.models.list()

            lim_a, lim_o = clients(limited)
            with pytest.raises(anthropic.RateLimitError) as rl:
                await lim_a.messages.create(model="m", max_tokens=5, messages=USER)
            with pytest.raises(openai.RateLimitError) as orl:
                await lim_o.responses.create(model="m", input="hi")
            with pytest.raises(openai.RateLimitError):
                await lim_o.models.list()

            ok_a, ok_o = clients(good)
            msg = await ok_a.messages.create(model="m", max_tokens=5, messages=USER)
            chat = await ok_o.chat.completions.create(model="m", messages=USER)
            for c in (bad_a, bad_o, lim_a, lim_o, ok_a, ok_o):
                await c.close()
    assert a_info.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert rl.value.response.headers["retry-after"] == "3"
    assert orl.value.response.headers["retry-after"] == "3"
    assert msg.content[0].text and chat.choices[0].message.content
    assert fake.requests[-1].headers["Authorization"] == f"Bearer {good}"


async def test_serve_stops_promptly_with_a_stalled_stream() -> None:
    scenario = Scenario.stall()
    fake = FakeLLM(default=scenario)
    async with asyncio.timeout(T), aiohttp.ClientSession() as session:
        async with fake.serve() as f:
            resp = await session.post(
                f.url + "/v1/messages",
                json={"model": "m", "max_tokens": 5, "messages": USER, "stream": True},
            )
            await scenario.stalled.wait()
        # Stopping the server ends the stalled stream; that is not a client disconnect.
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert fake.requests[0].status == 200
    assert fake.disconnects == 0


# ====================================================================== CLI


def test_the_fake_upstream_cli_help_lists_listen_and_keywords() -> None:
    from aibridge.cli import main

    result = CliRunner().invoke(main, ["fake-upstream", "--help"])
    assert result.exit_code == 0, result.output
    assert "--listen" in result.output and "scenario:<keyword>" in result.output


def test_the_fake_upstream_cli_rejects_a_listen_without_host_and_port() -> None:
    from aibridge.cli import main

    result = CliRunner().invoke(main, ["fake-upstream", "--listen", "nope"])
    assert result.exit_code == 2
    assert "HOST:PORT" in result.output


async def test_cli_runner_serves_and_prints_urls() -> None:
    from aibridge.cli.fake import run_fake_upstream

    stop = asyncio.Event()
    lines: list[str] = []
    printed = asyncio.Event()

    def echo(text: str) -> None:
        lines.append(text)
        printed.set()

    async with asyncio.timeout(T):
        task = asyncio.create_task(run_fake_upstream("127.0.0.1", 0, stop=stop, echo=echo))
        await printed.wait()
        url = next(
            line.split("=", 1)[1] for line in lines[0].splitlines() if "ANTHROPIC_BASE_URL" in line
        )
        assert f"OPENAI_BASE_URL={url}/v1" in lines[0]
        assert "scenario:<keyword>" in lines[0] and "error-<status>" in lines[0]
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        reply = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "scenario:tool"}]
        )
        await client.close()
        stop.set()
        await task
    assert reply.choices[0].message.tool_calls[0].function.name == "get_weather"


async def test_cli_runner_replays_a_captured_exchange_from_its_fixtures_folder(
    exchanges_dir: Path,
) -> None:
    from aibridge.cli.fake import run_fake_upstream

    stop = asyncio.Event()
    lines: list[str] = []
    printed = asyncio.Event()

    def echo(text: str) -> None:
        lines.append(text)
        printed.set()

    exchange = load_exchange(exchanges_dir / "chat" / "reasoning.blocking.txt")
    async with asyncio.timeout(T):
        task = asyncio.create_task(
            run_fake_upstream("127.0.0.1", 0, fixtures=exchanges_dir, stop=stop, echo=echo)
        )
        await printed.wait()
        url = next(
            line.split("=", 1)[1] for line in lines[0].splitlines() if "OPENAI_BASE_URL" in line
        )
        async with aiohttp.ClientSession() as session:
            body = {
                "model": "o4-mini",
                "messages": [
                    {"role": "user", "content": "scenario:fixture:chat/reasoning.blocking"}
                ],
            }
            async with session.post(url + "/chat/completions", json=body) as resp:
                assert resp.status == exchange.status
                replayed = await resp.read()
        stop.set()
        await task
    assert replayed == exchange.response
