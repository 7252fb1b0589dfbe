"""OpenAI Chat Completions extraction: usage, tool-call deltas, snapshots, errors, bodies."""

from __future__ import annotations

from typing import Any

import orjson

from aibridge.intercept.chat import ChatStreamObserver, observe_body
from aibridge.intercept.observations import Observation, Thought, TokenUsage
from aibridge.intercept.sse import CHAT_DONE, encode_event
from aibridge.testing.observe import observe_stream, openai_error_body

MODEL = "gpt-4o-2024-08-06"


def chunk(
    choices: list[dict[str, Any]] | None = None,
    usage: dict[str, Any] | None = None,
    chunk_id: str = "chatcmpl-1",
) -> bytes:
    """One ``chat.completion.chunk`` framed as ``data: …`` (Chat streams name no events)."""
    body: dict[str, Any] = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": 1730000000,
        "model": MODEL,
        "system_fingerprint": "fp_1",
        "choices": choices if choices is not None else [],
    }
    if usage is not None:
        body["usage"] = usage
    return encode_event(orjson.dumps(body))


def choice_delta(d: dict[str, Any], finish: str | None = None, index: int = 0) -> dict[str, Any]:
    return {"index": index, "delta": d, "logprobs": None, "finish_reason": finish}


def tool_delta(
    index: int, args: str, call_id: str | None = None, name: str | None = None
) -> dict[str, Any]:
    tc: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if call_id is not None:
        tc["id"] = call_id
        tc["type"] = "function"
        tc["function"]["name"] = name
    return choice_delta({"tool_calls": [tc]})


USAGE = {
    "prompt_tokens": 5049,
    "completion_tokens": 160,
    "total_tokens": 5209,
    "prompt_tokens_details": {"cached_tokens": 4864, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 64,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 3,
        "rejected_prediction_tokens": 2,
    },
}


def observe(stream: bytes, chunk_size: int | None = None) -> Observation:
    """Run ``stream`` through the SSE parser (in chunks) and a fresh observer."""
    return observe_stream(ChatStreamObserver, stream, chunk_size)


def test_a_text_stream_takes_usage_from_its_final_usage_chunk() -> None:
    stream = b"".join(
        [
            chunk([choice_delta({"role": "assistant", "content": "", "refusal": None})]),
            chunk([choice_delta({"content": "Hel"})]),
            chunk([choice_delta({"content": "lo"})]),
            chunk([choice_delta({}, finish="stop")]),
            chunk([], usage=USAGE),
            CHAT_DONE,
        ]
    )
    obs = observe(stream)
    assert obs.usages == [
        TokenUsage(
            response_id="chatcmpl-1",
            model=MODEL,
            input=5049 - 4864,
            output=160,
            cache_read=4864,
            cache_write=0,
            reasoning=64,
            extra={"completion_accepted_prediction": 3, "completion_rejected_prediction": 2},
        )
    ]
    assert (obs.response_id, obs.model, obs.stop_reason) == ("chatcmpl-1", MODEL, "stop")
    assert obs.completed is True
    assert obs.tool_calls == [] and obs.thoughts == []
    assert obs.malformed_events == 0


def test_usage_snapshot_on_every_chunk_takes_the_last_not_the_sum() -> None:
    def snap(prompt: int, completion: int) -> dict[str, Any]:
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    stream = b"".join(
        [
            chunk([choice_delta({"role": "assistant", "content": ""})], usage=snap(900, 0)),
            chunk([choice_delta({"content": "a"})], usage=snap(900, 1)),
            chunk([choice_delta({"content": "b"})], usage=snap(900, 2)),
            chunk([choice_delta({}, finish="stop")], usage=snap(900, 3)),
            CHAT_DONE,
        ]
    )
    (usage,) = observe(stream).usages
    assert (usage.input, usage.output) == (900, 3)  # not (3600, 6)


def test_null_usage_on_chunks_does_not_erase_the_final_usage() -> None:
    body = orjson.dumps(
        {"id": "c", "object": "chat.completion.chunk", "model": MODEL, "choices": [], "usage": None}
    )
    stream = b"".join([chunk([], usage=USAGE), encode_event(body), CHAT_DONE])
    assert observe(stream).usages[0].output == 160


def test_single_tool_call_arguments_split_across_many_deltas() -> None:
    args = '{"command": "grep -rn \\"ü\\" src/", "timeout": 30}'
    pieces = [args[i : i + 2] for i in range(0, len(args), 2)]
    stream = b"".join(
        [
            chunk([choice_delta({"role": "assistant", "content": None})]),
            chunk([tool_delta(0, "", call_id="call_abc", name="bash")]),
            *(chunk([tool_delta(0, p)]) for p in pieces),
            chunk([choice_delta({}, finish="tool_calls")]),
            chunk([], usage=USAGE),
            CHAT_DONE,
        ]
    )
    obs = observe(stream, chunk_size=1)
    (call,) = obs.tool_calls
    assert (call.call_id, call.name) == ("call_abc", "bash")
    assert call.arguments_raw == args
    assert call.arguments == {"command": 'grep -rn "ü" src/', "timeout": 30}
    assert call.complete is True
    assert call.response_id == "chatcmpl-1"
    assert obs.stop_reason == "tool_calls"


def test_parallel_tool_calls_are_keyed_by_index() -> None:
    stream = b"".join(
        [
            chunk([tool_delta(0, "", call_id="call_1", name="read")]),
            chunk([tool_delta(0, '{"pa')]),
            chunk([tool_delta(1, "", call_id="call_2", name="ls")]),
            chunk([tool_delta(0, 'th": "a"}')]),
            chunk([tool_delta(1, '{"dir": ')]),
            chunk([tool_delta(1, '"."}')]),
            chunk([choice_delta({}, finish="tool_calls")]),
            CHAT_DONE,
        ]
    )
    obs = observe(stream)
    assert [(c.call_id, c.name, c.arguments) for c in obs.tool_calls] == [
        ("call_1", "read", {"path": "a"}),
        ("call_2", "ls", {"dir": "."}),
    ]


def test_tool_call_indexes_starting_at_one_and_repeated_names() -> None:
    # Some compatible providers start at index 1 and repeat the name on every delta.
    stream = b"".join(
        [
            chunk([tool_delta(1, '{"q":', call_id="call_9", name="search")]),
            chunk([tool_delta(1, ' "x"}', call_id="call_9", name="search")]),
            chunk([choice_delta({}, finish="tool_calls")]),
            CHAT_DONE,
        ]
    )
    (call,) = observe(stream).tool_calls
    assert (call.call_id, call.name, call.arguments) == ("call_9", "search", {"q": "x"})


def test_legacy_function_call_deltas_become_a_tool_call() -> None:
    stream = b"".join(
        [
            chunk([choice_delta({"function_call": {"name": "get_time", "arguments": ""}})]),
            chunk([choice_delta({"function_call": {"arguments": '{"tz": '}})]),
            chunk([choice_delta({"function_call": {"arguments": '"UTC"}'}})]),
            chunk([choice_delta({}, finish="function_call")]),
            CHAT_DONE,
        ]
    )
    (call,) = observe(stream).tool_calls
    assert (call.call_id, call.name, call.arguments) == ("", "get_time", {"tz": "UTC"})


def test_reasoning_content_of_compatible_providers_is_a_thought() -> None:
    stream = b"".join(
        [
            chunk([choice_delta({"role": "assistant", "reasoning_content": "First, "})]),
            chunk([choice_delta({"reasoning_content": "check."})]),
            chunk([choice_delta({"content": "Done"}, finish="stop")]),
            CHAT_DONE,
        ]
    )
    assert observe(stream).thoughts == [Thought(content="First, check.", source="thinking")]


def test_an_error_chunk_mid_stream_is_the_error_and_cuts_the_open_call() -> None:
    error = {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    stream = b"".join(
        [
            chunk([tool_delta(0, '{"a": ', call_id="call_x", name="f")]),
            encode_event(orjson.dumps(error)),
            CHAT_DONE,
        ]
    )
    obs = observe(stream)
    assert obs.error is not None
    assert obs.error.type == "server_error"
    assert obs.error.message == "The server had an error while processing your request."
    assert obs.usages == []
    (call,) = obs.tool_calls
    # [DONE] came, but the call never got a finish_reason: arguments are cut.
    assert call.arguments is None and call.arguments_raw == '{"a": '
    assert call.complete is False


def test_stream_cut_without_done_marks_incomplete_calls() -> None:
    stream = chunk([tool_delta(0, '{"a": 1', call_id="call_c", name="f")])
    obs = observe(stream)
    assert obs.completed is False
    (call,) = obs.tool_calls
    assert call.complete is False


def test_malformed_chunk_is_counted_and_observer_continues() -> None:
    stream = b"".join(
        [
            chunk([tool_delta(0, '{"k": ', call_id="call_m", name="f")]),
            b'data: {"id": "chatcmpl-1", "choices": [{"delta": \n\n',
            b'data: {"choices": "not a list"}\n\n',
            chunk([tool_delta(0, '"v"}')]),
            chunk([choice_delta({}, finish="tool_calls")]),
            chunk([], usage=USAGE),
            CHAT_DONE,
        ]
    )
    obs = observe(stream)
    assert obs.malformed_events == 2
    assert obs.tool_calls[0].arguments == {"k": "v"}
    assert obs.usages[0].output == 160
    assert obs.completed is True


def test_cache_writes_are_not_uncached_input_which_never_goes_below_zero() -> None:
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 700, "cache_write_tokens": 200},
    }
    (u,) = observe(b"".join([chunk([], usage=usage), CHAT_DONE])).usages
    assert (u.input, u.cache_read, u.cache_write) == (100, 700, 200)
    weird = {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 50}}
    (u,) = observe(chunk([], usage=weird)).usages
    assert u.input == 0


BLOCKING = orjson.dumps(
    {
        "id": "chatcmpl-B",
        "object": "chat.completion",
        "created": 1730000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "read", "arguments": '{"path": "x"}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "bad", "arguments": "{not json"},
                        },
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 4862,
            "completion_tokens": 45,
            "total_tokens": 4907,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 7},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 4},
        },
    }
)


def test_a_blocking_body_gives_usage_and_tool_calls_with_invalid_arguments_kept_raw() -> None:
    obs = observe_body(BLOCKING)
    assert obs.completed is True
    assert (obs.response_id, obs.model, obs.stop_reason) == ("chatcmpl-B", MODEL, "tool_calls")
    assert obs.usages == [
        TokenUsage(
            response_id="chatcmpl-B",
            model=MODEL,
            input=4862,
            output=45,
            extra={"prompt_audio": 7, "completion_audio": 4},
        )
    ]
    assert [(c.call_id, c.name, c.arguments) for c in obs.tool_calls] == [
        ("call_1", "read", {"path": "x"}),
        ("call_2", "bad", None),
    ]
    assert obs.tool_calls[1].arguments_raw == "{not json"


def test_a_blocking_error_body_is_an_error_without_usage() -> None:
    body = openai_error_body(
        "maximum context length exceeded", "messages", "context_length_exceeded"
    )
    obs = observe_body(body)
    assert obs.error is not None
    assert (obs.error.type, obs.error.code) == ("invalid_request_error", "context_length_exceeded")
    assert obs.usages == [] and obs.completed is False


def test_a_blocking_body_that_is_not_json_counts_as_malformed() -> None:
    obs = observe_body(b"<html>bad gateway</html>")
    assert obs.malformed_events == 1
    assert obs.usages == [] and obs.completed is False
