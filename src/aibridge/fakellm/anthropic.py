"""Anthropic Messages wire format: blocking bodies, SSE events and error bodies."""

from __future__ import annotations

import json
from typing import Any

from aibridge.fakellm.scenario import Scenario, Usage, new_id
from aibridge.fakellm.wire import SSEEvent

ERROR_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
    401: ("authentication_error", "invalid x-api-key"),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: (
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50 requests per "
        "minute. Please retry later.",
    ),
    500: ("api_error", "Internal server error"),
    502: ("api_error", "Bad gateway"),
    503: ("api_error", "Service unavailable"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}


class Ids:
    """Identifiers of one Anthropic message."""

    def __init__(self, scenario: Scenario) -> None:
        self.message_id = new_id("msg_01")
        self.tool_ids = [new_id("toolu_01") for _ in scenario.tool_calls]


def error_body(
    status: int, *, error_type: str | None = None, message: str | None = None
) -> dict[str, Any]:
    """``{"type":"error","error":{"type","message"},"request_id"}`` for ``status``."""
    default_type, default_message = ERROR_TYPES.get(
        status, ("api_error" if status >= 500 else "invalid_request_error", f"error {status}")
    )
    return {
        "type": "error",
        "error": {"type": error_type or default_type, "message": message or default_message},
        "request_id": new_id("req_011"),
    }


def scenario_error_body(scenario: Scenario, status: int) -> dict[str, Any]:
    """The error body for an HTTP-error (or blocking stream-error) scenario."""
    return error_body(status, error_type=scenario.error_type, message=scenario.error_message)


def usage_body(usage: Usage, *, output_tokens: int | None = None) -> dict[str, Any]:
    """The ``usage`` object; ``output_tokens`` overrides the final count (message_start)."""
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_tokens,
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": usage.output_tokens if output_tokens is None else output_tokens,
        "service_tier": "standard",
    }


def _stop_reason(scenario: Scenario) -> str:
    return "tool_use" if scenario.stop_is_tool_use else "end_turn"


def content_blocks(scenario: Scenario, ids: Ids) -> list[dict[str, Any]]:
    """The finished content blocks: thinking, text, tool_use, in that order."""
    blocks: list[dict[str, Any]] = []
    if scenario.thinking:
        blocks.append(
            {"type": "thinking", "thinking": scenario.thinking, "signature": scenario.signature}
        )
    if scenario.text:
        blocks.append({"type": "text", "text": scenario.text})
    for call, tool_id in zip(scenario.tool_calls, ids.tool_ids, strict=True):
        blocks.append(
            {"type": "tool_use", "id": tool_id, "name": call.name, "input": call.arguments}
        )
    return blocks


def blocking_body(scenario: Scenario, model: str, ids: Ids) -> dict[str, Any]:
    """A complete ``message`` object as a non-streaming response."""
    return {
        "id": ids.message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content_blocks(scenario, ids),
        "stop_reason": _stop_reason(scenario),
        "stop_sequence": None,
        "usage": usage_body(scenario.usage),
    }


def stream_events(scenario: Scenario, model: str, ids: Ids) -> list[SSEEvent]:
    """The full SSE event sequence for a successful streamed message.

    ``message_start`` carries the input and cache counts with ``output_tokens: 1``;
    ``message_delta`` carries the final cumulative usage snapshot (Anthropic semantics).
    """
    start_message: dict[str, Any] = {
        "id": ids.message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage_body(scenario.usage, output_tokens=1),
    }
    events = [SSEEvent("message_start", {"type": "message_start", "message": start_message})]
    index = 0

    def block(start: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
        nonlocal index
        events.append(
            SSEEvent(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            )
        )
        if index == 0:
            # The real API sends a ping right after the first block starts.
            events.append(SSEEvent("ping", {"type": "ping"}))
        for delta in deltas:
            events.append(
                SSEEvent(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                    is_delta=True,
                )
            )
        events.append(
            SSEEvent("content_block_stop", {"type": "content_block_stop", "index": index})
        )
        index += 1

    if scenario.thinking:
        deltas = [{"type": "thinking_delta", "thinking": t} for t in scenario.thinking_pieces()]
        deltas.append({"type": "signature_delta", "signature": scenario.signature})
        block({"type": "thinking", "thinking": "", "signature": ""}, deltas)
    if scenario.text:
        block(
            {"type": "text", "text": ""},
            [{"type": "text_delta", "text": t} for t in scenario.text_pieces()],
        )
    for call, tool_id in zip(scenario.tool_calls, ids.tool_ids, strict=True):
        pieces = ["", *scenario.argument_pieces(call)]
        block(
            {"type": "tool_use", "id": tool_id, "name": call.name, "input": {}},
            [{"type": "input_json_delta", "partial_json": p} for p in pieces],
        )
    final_usage = usage_body(scenario.usage)
    final_usage.pop("cache_creation")
    final_usage.pop("service_tier")
    events.append(
        SSEEvent(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": _stop_reason(scenario), "stop_sequence": None},
                "usage": final_usage,
            },
        )
    )
    events.append(SSEEvent("message_stop", {"type": "message_stop"}))
    return events


def stream_error_event(scenario: Scenario) -> list[SSEEvent]:
    """The mid-stream ``event: error`` (overloaded_error unless overridden)."""
    body = error_body(529, error_type=scenario.error_type, message=scenario.error_message)
    return [SSEEvent("error", body)]


def count_tokens_body(body: dict[str, Any]) -> dict[str, Any]:
    """A deterministic ``count_tokens`` answer: about one token per 4 bytes of messages."""
    size = len(json.dumps(body.get("messages", []))) + len(json.dumps(body.get("system", "")))
    return {"input_tokens": max(1, size // 4)}


MODELS = [
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
    ("claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
]


def models_body() -> dict[str, Any]:
    """The ``GET /v1/models`` list in Anthropic's shape."""
    data = [
        {"type": "model", "id": mid, "display_name": name, "created_at": created}
        for mid, name, created in MODELS
    ]
    return {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}


def model_body(model_id: str) -> dict[str, Any] | None:
    """One model in Anthropic's shape, or None when unknown."""
    for mid, name, created in MODELS:
        if mid == model_id:
            return {"type": "model", "id": mid, "display_name": name, "created_at": created}
    return None
