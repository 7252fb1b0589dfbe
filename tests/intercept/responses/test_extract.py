"""OpenAI Responses extraction: terminal usage, output items, thoughts, errors, bodies."""

from __future__ import annotations

from typing import Any

import orjson

from aibridge.intercept.observations import Observation, Thought, TokenUsage
from aibridge.intercept.responses import ResponsesStreamObserver, observe_body
from aibridge.intercept.sse import encode_event
from aibridge.testing.observe import observe_stream, openai_error_body

MODEL = "gpt-5-codex"


class Stream:
    """Builds a Responses SSE stream with increasing sequence numbers."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.seq = 0

    def add(self, type_: str, **fields: Any) -> Stream:
        body = {"type": type_, "sequence_number": self.seq, **fields}
        self.seq += 1
        self.parts.append(encode_event(orjson.dumps(body), type_))
        return self

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def response(status: str, output: list[Any], usage: Any = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1730000000,
        "status": status,
        "model": MODEL,
        "instructions": "You are Codex. " * 200,
        "tools": [{"type": "function", "name": "shell", "parameters": {"type": "object"}}],
        "output": output,
        "usage": usage,
        "error": None,
        "incomplete_details": None,
        **extra,
    }


USAGE = {
    "input_tokens": 16909,
    "input_tokens_details": {"cached_tokens": 15744},
    "output_tokens": 300,
    "output_tokens_details": {"reasoning_tokens": 128},
    "total_tokens": 17209,
}

REASONING = {
    "type": "reasoning",
    "id": "rs_1",
    "summary": [
        {"type": "summary_text", "text": "**Inspecting repo**\n\nLooking at files."},
        {"type": "summary_text", "text": "**Running tests**"},
    ],
    "encrypted_content": "gAAAA...",
}
FUNCTION_CALL = {
    "type": "function_call",
    "id": "fc_1",
    "call_id": "call_1",
    "name": "shell",
    "arguments": '{"command": ["pytest", "-q"], "workdir": "/répo"}',
    "status": "completed",
}
SECOND_CALL = {
    "type": "function_call",
    "id": "fc_2",
    "call_id": "call_2",
    "name": "read_file",
    "arguments": '{"path": "a.py"}',
    "status": "completed",
}
COMMENTARY = {
    "type": "message",
    "id": "msg_c",
    "role": "assistant",
    "status": "completed",
    "phase": "commentary",
    "content": [{"type": "output_text", "text": "Running the test suite now.", "annotations": []}],
}
ANSWER = {
    "type": "message",
    "id": "msg_1",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "All tests pass.", "annotations": []}],
}


def observe(stream: bytes, chunk_size: int | None = None) -> Observation:
    """Run ``stream`` through the SSE parser (in chunks) and a fresh observer."""
    return observe_stream(ResponsesStreamObserver, stream, chunk_size)


def started(s: Stream) -> Stream:
    return s.add("response.created", response=response("in_progress", [])).add(
        "response.in_progress", response=response("in_progress", [])
    )


def add_item(s: Stream, index: int, item: dict[str, Any]) -> Stream:
    """The added/…/done lifecycle of one output item (deltas for function arguments)."""
    s.add("response.output_item.added", output_index=index, item={**item, "status": "in_progress"})
    if item["type"] == "function_call":
        args = item["arguments"]
        for i in range(0, len(args), 3):
            s.add(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=index,
                delta=args[i : i + 3],
            )
        s.add(
            "response.function_call_arguments.done",
            item_id=item["id"],
            output_index=index,
            arguments=args,
        )
    if item["type"] == "message":
        s.add(
            "response.output_text.delta",
            item_id=item["id"],
            output_index=index,
            content_index=0,
            delta=item["content"][0]["text"],
        )
    return s.add("response.output_item.done", output_index=index, item=item)


def test_a_text_stream_gives_its_usage_ids_and_status_and_nothing_else() -> None:
    s = started(Stream())
    add_item(s, 0, ANSWER)
    s.add("response.completed", response=response("completed", [ANSWER], USAGE))
    obs = observe(s.bytes())
    assert obs.usages == [
        TokenUsage(
            response_id="resp_1",
            model=MODEL,
            input=16909 - 15744,
            output=300,
            cache_read=15744,
            reasoning=128,
        )
    ]
    assert (obs.response_id, obs.model, obs.stop_reason) == ("resp_1", MODEL, "completed")
    assert obs.completed is True
    # Output text is not recorded anywhere.
    assert obs.tool_calls == [] and obs.thoughts == []
    assert obs.error is None and obs.malformed_events == 0


def test_reasoning_commentary_and_parallel_calls_are_thoughts_and_tool_calls_with_one_usage() -> (
    None
):
    output: list[dict[str, Any]] = [REASONING, COMMENTARY, FUNCTION_CALL, SECOND_CALL]
    s = started(Stream())
    for i, item in enumerate(output):
        add_item(s, i, item)
    s.add("response.completed", response=response("completed", output, USAGE))
    obs = observe(s.bytes(), chunk_size=1)
    assert obs.thoughts == [
        Thought(content="**Inspecting repo**\n\nLooking at files.", source="reasoning_summary"),
        Thought(content="**Running tests**", source="reasoning_summary"),
        Thought(content="Running the test suite now.", source="commentary"),
    ]
    assert [(c.call_id, c.name, c.item_id, c.arguments) for c in obs.tool_calls] == [
        ("call_1", "shell", "fc_1", {"command": ["pytest", "-q"], "workdir": "/répo"}),
        ("call_2", "read_file", "fc_2", {"path": "a.py"}),
    ]
    assert obs.tool_calls[0].arguments_raw == FUNCTION_CALL["arguments"]
    assert all(c.response_id == "resp_1" and c.complete for c in obs.tool_calls)
    # Recorded once, from response.completed, although output_item.done also carried them.
    assert len(obs.usages) == 1


def test_custom_tool_call_keeps_free_form_input() -> None:
    patch = "*** Begin Patch\n*** Update File: a.py\n@@\n-x\n+y\n*** End Patch"
    item = {
        "type": "custom_tool_call",
        "id": "ctc_1",
        "call_id": "call_p",
        "name": "apply_patch",
        "input": patch,
        "status": "completed",
    }
    s = started(Stream())
    add_item(s, 0, item)
    s.add("response.completed", response=response("completed", [item], USAGE))
    (call,) = observe(s.bytes()).tool_calls
    assert (call.kind, call.name, call.call_id, call.item_id) == (
        "custom",
        "apply_patch",
        "call_p",
        "ctc_1",
    )
    assert call.arguments_raw == patch
    assert call.arguments is None


def test_stream_cut_before_completed_reports_finished_items() -> None:
    s = started(Stream())
    add_item(s, 0, REASONING)
    add_item(s, 1, FUNCTION_CALL)
    s.add(
        "response.output_item.added",
        output_index=2,
        item={**SECOND_CALL, "arguments": "", "status": "in_progress"},
    )
    obs = observe(s.bytes())
    assert obs.completed is False
    assert obs.usages == []
    assert [c.call_id for c in obs.tool_calls] == ["call_1"]  # the unfinished one is not
    assert len(obs.thoughts) == 2
    assert obs.response_id == "resp_1"


def test_completed_with_empty_output_falls_back_to_done_items() -> None:
    s = started(Stream())
    add_item(s, 0, FUNCTION_CALL)
    s.add("response.completed", response=response("completed", [], USAGE))
    obs = observe(s.bytes())
    assert [c.call_id for c in obs.tool_calls] == ["call_1"]
    assert obs.usages[0].input == 1165


def test_an_error_event_mid_stream_is_the_error_and_not_completed() -> None:
    s = started(Stream())
    s.add("error", code="ERR_SOMETHING", message="Something went wrong", param=None)
    obs = observe(s.bytes())
    assert obs.error is not None
    assert (obs.error.type, obs.error.code, obs.error.message) == (
        "ERR_SOMETHING",
        "ERR_SOMETHING",
        "Something went wrong",
    )
    assert obs.usages == []
    assert obs.completed is False


def test_an_error_event_with_a_nested_error_object_is_read_too() -> None:
    s = Stream().add(
        "error", status=429, error={"type": "rate_limit", "code": "rl", "message": "slow down"}
    )
    obs = observe(s.bytes())
    assert obs.error is not None
    assert (obs.error.type, obs.error.code, obs.error.message) == ("rate_limit", "rl", "slow down")


def test_response_failed_is_a_terminal_event_carrying_the_error() -> None:
    s = started(Stream())
    failed = response(
        "failed", [], None, error={"code": "server_error", "message": "The model crashed"}
    )
    s.add("response.failed", response=failed)
    obs = observe(s.bytes())
    assert obs.error is not None
    assert (obs.error.code, obs.error.message) == ("server_error", "The model crashed")
    assert obs.completed is True  # the terminal event was seen
    assert obs.usages == []
    assert obs.stop_reason == "failed"


def test_response_incomplete_records_usage_and_reason() -> None:
    s = started(Stream())
    incomplete = response(
        "incomplete",
        [],
        {"input_tokens": 100, "output_tokens": 4096, "input_tokens_details": {"cached_tokens": 0}},
        incomplete_details={"reason": "max_output_tokens"},
    )
    s.add("response.incomplete", response=incomplete)
    obs = observe(s.bytes())
    assert obs.stop_reason == "max_output_tokens"
    assert [(u.input, u.output) for u in obs.usages] == [(100, 4096)]
    assert obs.completed is True


def test_malformed_event_is_counted_and_observer_continues() -> None:
    s = started(Stream())
    s.parts.append(b'event: response.output_item.done\ndata: {"type": "response.output_\n\n')
    s.parts.append(
        b'event: response.completed\ndata: {"type": "response.completed", "response": 5}\n\n'
    )
    add_item(s, 0, FUNCTION_CALL)
    s.add("response.completed", response=response("completed", [FUNCTION_CALL], USAGE))
    obs = observe(s.bytes())
    assert obs.malformed_events == 2
    assert obs.usages[0].input == 1165
    assert [c.call_id for c in obs.tool_calls] == ["call_1"]


def test_cache_write_tokens_are_not_uncached_input() -> None:
    usage = {
        "input_tokens": 1000,
        "input_tokens_details": {"cached_tokens": 600, "cache_write_tokens": 300},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
    }
    s = started(Stream()).add("response.completed", response=response("completed", [], usage))
    (u,) = observe(s.bytes()).usages
    assert (u.input, u.cache_read, u.cache_write) == (100, 600, 300)


BLOCKING = orjson.dumps(
    response(
        "completed",
        [
            REASONING,
            {
                "type": "web_search_call",
                "id": "ws_1",
                "status": "completed",
                "action": {"type": "search", "query": "msgspec raw"},
            },
            FUNCTION_CALL,
            ANSWER,
        ],
        {
            "input_tokens": 12033,
            "input_tokens_details": {"cached_tokens": 11904},
            "output_tokens": 50,
            "output_tokens_details": {"reasoning_tokens": 20},
            "total_tokens": 12083,
        },
    )
)


def test_a_blocking_body_gives_usage_hosted_and_function_calls_and_summaries() -> None:
    obs = observe_body(BLOCKING)
    assert obs.completed is True
    assert obs.usages == [
        TokenUsage(
            response_id="resp_1", model=MODEL, input=129, output=50, cache_read=11904, reasoning=20
        )
    ]
    assert [(c.kind, c.name, c.item_id) for c in obs.tool_calls] == [
        ("hosted", "web_search_call", "ws_1"),
        ("function", "shell", "fc_1"),
    ]
    assert obs.tool_calls[0].arguments == {"action": {"type": "search", "query": "msgspec raw"}}
    assert [t.source for t in obs.thoughts] == ["reasoning_summary", "reasoning_summary"]


def test_a_blocking_error_body_is_an_error_without_usage() -> None:
    body = openai_error_body("Incorrect API key provided", None, "invalid_api_key")
    obs = observe_body(body)
    assert obs.error is not None
    assert (obs.error.type, obs.error.code) == ("invalid_request_error", "invalid_api_key")
    assert obs.usages == [] and obs.completed is False


def test_blocking_truncated_body_records_nothing() -> None:
    obs = observe_body(BLOCKING[: len(BLOCKING) // 2])
    assert obs.malformed_events == 1
    assert obs.usages == [] and obs.tool_calls == [] and obs.completed is False
