"""Anthropic Messages extraction: usage snapshots, tool calls, thinking, errors, bodies."""

from __future__ import annotations

from typing import Any

import orjson

from aibridge.intercept.messages import MessagesStreamObserver, observe_body
from aibridge.intercept.observations import Observation, Thought, TokenUsage
from aibridge.intercept.sse import encode_event
from aibridge.testing.observe import observe_stream


def ev(obj: dict[str, Any]) -> bytes:
    """Frame one Anthropic event the way the API does (event name = data type)."""
    return encode_event(orjson.dumps(obj), obj["type"])


def message_start(usage: dict[str, Any], msg_id: str = "msg_01") -> bytes:
    return ev(
        {
            "type": "message_start",
            "message": {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5-20250929",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage,
            },
        }
    )


def block_start(index: int, block: dict[str, Any]) -> bytes:
    return ev({"type": "content_block_start", "index": index, "content_block": block})


def delta(index: int, d: dict[str, Any]) -> bytes:
    return ev({"type": "content_block_delta", "index": index, "delta": d})


def block_stop(index: int) -> bytes:
    return ev({"type": "content_block_stop", "index": index})


def message_delta(stop_reason: str | None, usage: dict[str, Any]) -> bytes:
    return ev(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": usage,
        }
    )


MESSAGE_STOP = ev({"type": "message_stop"})
PING = ev({"type": "ping"})


def json_deltas(index: int, text: str, size: int) -> bytes:
    """input_json_delta events carrying ``text`` in pieces of ``size`` characters."""
    return b"".join(
        delta(index, {"type": "input_json_delta", "partial_json": text[i : i + size]})
        for i in range(0, len(text), size)
    )


def observe(stream: bytes, chunk_size: int | None = None) -> Observation:
    """Run ``stream`` through the SSE parser (in chunks) and a fresh observer."""
    return observe_stream(MessagesStreamObserver, stream, chunk_size)


def test_a_text_stream_gives_its_usage_ids_and_stop_reason_and_nothing_else() -> None:
    stream = b"".join(
        [
            message_start({"input_tokens": 25, "output_tokens": 1}),
            block_start(0, {"type": "text", "text": ""}),
            PING,
            delta(0, {"type": "text_delta", "text": "Hello"}),
            delta(0, {"type": "text_delta", "text": " there"}),
            block_stop(0),
            message_delta("end_turn", {"output_tokens": 12}),
            MESSAGE_STOP,
        ]
    )
    obs = observe(stream)
    assert obs.usages == [
        TokenUsage(response_id="msg_01", model="claude-sonnet-4-5-20250929", input=25, output=12)
    ]
    assert obs.response_id == "msg_01"
    assert obs.model == "claude-sonnet-4-5-20250929"
    assert obs.stop_reason == "end_turn"
    assert obs.completed is True
    assert obs.error is None
    assert obs.tool_calls == []
    assert obs.thoughts == []
    assert obs.malformed_events == 0


def test_cumulative_usage_takes_latest_value_of_each_field_never_the_sum() -> None:
    stream = b"".join(
        [
            message_start(
                {
                    "input_tokens": 472,
                    "cache_creation_input_tokens": 1200,
                    "cache_read_input_tokens": 8000,
                    "cache_creation": {
                        "ephemeral_5m_input_tokens": 1200,
                        "ephemeral_1h_input_tokens": 0,
                    },
                    "output_tokens": 2,
                    "service_tier": "standard",
                }
            ),
            block_start(0, {"type": "text", "text": ""}),
            delta(0, {"type": "text_delta", "text": "Searching"}),
            block_stop(0),
            # With server tools the snapshot grows mid-stream, input and cache included.
            message_delta(
                None,
                {
                    "input_tokens": 1510,
                    "cache_creation_input_tokens": 1300,
                    "cache_read_input_tokens": 8000,
                    "output_tokens": 50,
                    "server_tool_use": {"web_search_requests": 1},
                },
            ),
            # The final snapshot omits some fields: they keep their earlier values.
            message_delta(
                "end_turn",
                {"output_tokens": 89, "server_tool_use": {"web_search_requests": 2}},
            ),
            MESSAGE_STOP,
        ]
    )
    (usage,) = observe(stream).usages
    assert usage.input == 1510  # not 472 + 1510
    assert usage.output == 89  # not 2 + 50 + 89
    assert usage.cache_read == 8000  # not 16000
    assert usage.cache_write == 1300
    assert usage.reasoning == 0
    assert usage.extra == {"web_search_requests": 2, "cache_ephemeral_5m_input": 1200}


def test_thinking_block_becomes_thought_and_redacted_thinking_is_ignored() -> None:
    stream = b"".join(
        [
            message_start({"input_tokens": 10, "output_tokens": 1}),
            block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
            delta(0, {"type": "thinking_delta", "thinking": "Let me think "}),
            delta(0, {"type": "thinking_delta", "thinking": "about ünïcode."}),
            delta(0, {"type": "signature_delta", "signature": "EqQBCgIYAhIM"}),
            block_stop(0),
            block_start(1, {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3p"}),
            block_stop(1),
            block_start(2, {"type": "text", "text": ""}),
            delta(2, {"type": "text_delta", "text": "Answer"}),
            block_stop(2),
            message_delta(
                "end_turn",
                {"output_tokens": 40, "output_tokens_details": {"thinking_tokens": 25}},
            ),
            MESSAGE_STOP,
        ]
    )
    obs = observe(stream, chunk_size=7)
    assert obs.thoughts == [Thought(content="Let me think about ünïcode.", source="thinking")]
    assert obs.usages[0].reasoning == 25
    assert obs.usages[0].output == 40


def test_single_tool_call_with_arguments_split_across_many_deltas() -> None:
    args = '{"path": "src/日本.py", "content": "line1\\nline2 😀"}'
    stream = b"".join(
        [
            message_start({"input_tokens": 100, "output_tokens": 3}),
            block_start(0, {"type": "text", "text": ""}),
            delta(0, {"type": "text_delta", "text": "I'll write it."}),
            block_stop(0),
            block_start(
                1, {"type": "tool_use", "id": "toolu_01A", "name": "write_file", "input": {}}
            ),
            delta(1, {"type": "input_json_delta", "partial_json": ""}),
            json_deltas(1, args, 3),
            block_stop(1),
            message_delta("tool_use", {"output_tokens": 61}),
            MESSAGE_STOP,
        ]
    )
    # One byte at a time through the SSE parser: multibyte characters split everywhere.
    obs = observe(stream, chunk_size=1)
    (call,) = obs.tool_calls
    assert call.call_id == "toolu_01A"
    assert call.name == "write_file"
    assert call.arguments_raw == args
    assert call.arguments == {"path": "src/日本.py", "content": "line1\nline2 😀"}
    assert call.response_id == "msg_01"
    assert call.complete is True
    assert call.kind == "function"
    assert obs.stop_reason == "tool_use"


def test_parallel_tool_calls_are_keyed_by_block_index() -> None:
    a = '{"city": "Paris"}'
    b = '{"city": "Tokyo", "units": "metric"}'
    # Deltas of the two blocks interleaved, to prove they are accumulated per index.
    interleaved = b"".join(
        delta(i, {"type": "input_json_delta", "partial_json": text[j : j + 4]})
        for j in range(0, max(len(a), len(b)), 4)
        for i, text in ((1, a), (2, b))
        if j < len(text)
    )
    stream = b"".join(
        [
            message_start({"input_tokens": 50, "output_tokens": 1}),
            block_start(0, {"type": "text", "text": ""}),
            block_stop(0),
            block_start(1, {"type": "tool_use", "id": "toolu_A", "name": "weather", "input": {}}),
            block_start(2, {"type": "tool_use", "id": "toolu_B", "name": "weather", "input": {}}),
            interleaved,
            block_stop(1),
            block_stop(2),
            message_delta("tool_use", {"output_tokens": 80}),
            MESSAGE_STOP,
        ]
    )
    obs = observe(stream)
    assert [(c.call_id, c.arguments) for c in obs.tool_calls] == [
        ("toolu_A", {"city": "Paris"}),
        ("toolu_B", {"city": "Tokyo", "units": "metric"}),
    ]
    assert [c.arguments_raw for c in obs.tool_calls] == [a, b]


def test_tool_without_parameters_uses_start_input() -> None:
    stream = b"".join(
        [
            message_start({"input_tokens": 5, "output_tokens": 1}),
            block_start(0, {"type": "tool_use", "id": "toolu_X", "name": "now", "input": {}}),
            block_stop(0),
            message_delta("tool_use", {"output_tokens": 9}),
            MESSAGE_STOP,
        ]
    )
    (call,) = observe(stream).tool_calls
    assert (call.arguments_raw, call.arguments) == ("{}", {})


def test_server_tool_use_is_recorded_as_server_kind() -> None:
    stream = b"".join(
        [
            message_start({"input_tokens": 5, "output_tokens": 1}),
            block_start(
                0,
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
            ),
            json_deltas(0, '{"query": "aiohttp"}', 5),
            block_stop(0),
            message_delta("end_turn", {"output_tokens": 9}),
            MESSAGE_STOP,
        ]
    )
    (call,) = observe(stream).tool_calls
    assert (call.kind, call.name, call.arguments) == ("server", "web_search", {"query": "aiohttp"})


def test_an_error_event_mid_stream_keeps_the_usage_so_far_and_the_cut_call() -> None:
    stream = b"".join(
        [
            message_start({"input_tokens": 30, "output_tokens": 1}),
            block_start(0, {"type": "tool_use", "id": "toolu_E", "name": "edit", "input": {}}),
            json_deltas(0, '{"file": "a.', 4),
            ev({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ]
    )
    obs = observe(stream)
    assert obs.error is not None
    assert (obs.error.type, obs.error.message) == ("overloaded_error", "Overloaded")
    assert obs.completed is False
    # The usage known so far is still reported (the provider bills the input).
    assert [(u.input, u.output) for u in obs.usages] == [(30, 1)]
    # The unfinished call is reported as incomplete, with its partial arguments kept.
    (call,) = obs.tool_calls
    assert call.complete is False
    assert call.arguments is None
    assert call.arguments_raw == '{"file": "a.'


def test_max_tokens_truncated_tool_arguments_are_kept_raw() -> None:
    stream = b"".join(
        [
            message_start({"input_tokens": 30, "output_tokens": 1}),
            block_start(0, {"type": "tool_use", "id": "toolu_T", "name": "edit", "input": {}}),
            json_deltas(0, '{"file": "a.py", "text": "abc', 6),
            block_stop(0),
            message_delta("max_tokens", {"output_tokens": 4096}),
            MESSAGE_STOP,
        ]
    )
    obs = observe(stream)
    (call,) = obs.tool_calls
    assert call.arguments is None
    assert call.arguments_raw == '{"file": "a.py", "text": "abc'
    assert obs.stop_reason == "max_tokens"
    assert obs.completed is True


def test_malformed_event_is_counted_and_observer_continues() -> None:
    stream = b"".join(
        [
            message_start({"input_tokens": 11, "output_tokens": 1}),
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,\n\n',
            b"event: message_delta\ndata: [1, 2]\n\n",  # valid JSON, wrong shape
            ev({"type": "content_block_start", "index": "zero", "content_block": None}),
            ev({"type": "some_future_event", "payload": {"x": 1}}),  # unknown: ignored
            message_delta("end_turn", {"output_tokens": 7}),
            MESSAGE_STOP,
        ]
    )
    obs = observe(stream)
    assert obs.malformed_events == 3
    assert [(u.input, u.output) for u in obs.usages] == [(11, 7)]
    assert obs.completed is True


def test_stream_cut_before_message_stop_is_not_completed() -> None:
    stream = message_start({"input_tokens": 11, "output_tokens": 1})
    obs = observe(stream)
    assert obs.completed is False
    assert obs.usages[0].input == 11


def test_second_message_start_starts_a_new_usage_entry() -> None:
    first = message_start({"input_tokens": 10, "output_tokens": 1}, msg_id="msg_A")
    second = message_start({"input_tokens": 20, "output_tokens": 1}, msg_id="msg_B")
    stream = b"".join(
        [
            first,
            message_delta("tool_use", {"output_tokens": 5}),
            MESSAGE_STOP,
            second,
            message_delta("end_turn", {"output_tokens": 6}),
            MESSAGE_STOP,
        ]
    )
    obs = observe(stream)
    assert [(u.response_id, u.input, u.output) for u in obs.usages] == [
        ("msg_A", 10, 5),
        ("msg_B", 20, 6),
    ]
    assert obs.response_id == "msg_A"


BLOCKING_BODY = (
    b'{"id":"msg_B1","type":"message","role":"assistant","model":"claude-opus-4-1",'
    b'"content":[{"type":"thinking","thinking":"Plan: read file.","signature":"sig"},'
    b'{"type":"redacted_thinking","data":"xx"},'
    b'{"type":"text","text":"Reading."},'
    b'{"type":"tool_use","id":"toolu_1","name":"read","input":{"path": "a.py", "n": 2}},'
    b'{"type":"tool_use","id":"toolu_2","name":"ls","input":{}}],'
    b'"stop_reason":"tool_use","stop_sequence":null,'
    b'"usage":{"input_tokens":12,"cache_creation_input_tokens":300,'
    b'"cache_read_input_tokens":4000,"output_tokens":77,'
    b'"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":300},'
    b'"server_tool_use":{"web_search_requests":0,"web_fetch_requests":3}}}'
)


def test_a_blocking_body_gives_usage_tool_calls_with_exact_arguments_and_thoughts() -> None:
    obs = observe_body(BLOCKING_BODY)
    assert obs.completed is True
    assert (obs.response_id, obs.model, obs.stop_reason) == (
        "msg_B1",
        "claude-opus-4-1",
        "tool_use",
    )
    assert obs.usages == [
        TokenUsage(
            response_id="msg_B1",
            model="claude-opus-4-1",
            input=12,
            output=77,
            cache_read=4000,
            cache_write=300,
            extra={"web_fetch_requests": 3, "cache_ephemeral_1h_input": 300},
        )
    ]
    assert [(c.call_id, c.name, c.arguments) for c in obs.tool_calls] == [
        ("toolu_1", "read", {"path": "a.py", "n": 2}),
        ("toolu_2", "ls", {}),
    ]
    # The exact argument bytes the model produced, spacing included.
    assert obs.tool_calls[0].arguments_raw == '{"path": "a.py", "n": 2}'
    assert obs.thoughts == [Thought(content="Plan: read file.", source="thinking")]


def test_a_blocking_error_body_is_an_error_without_usage() -> None:
    body = (
        b'{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long"}}'
    )
    obs = observe_body(body)
    assert obs.error is not None
    assert (obs.error.type, obs.error.message) == ("invalid_request_error", "prompt is too long")
    assert obs.usages == []
    assert obs.completed is False


def test_blocking_truncated_body_records_nothing() -> None:
    obs = observe_body(BLOCKING_BODY[:100])
    assert obs.malformed_events == 1
    assert obs.usages == [] and obs.tool_calls == [] and obs.completed is False
