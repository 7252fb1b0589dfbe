"""OpenAI Chat Completions wire format (and the OpenAI error/model shapes shared with Responses)."""

from __future__ import annotations

import time
from typing import Any

from aibridge.fakellm.scenario import Scenario, Usage, arguments_json, new_id
from aibridge.fakellm.wire import SSEEvent

SYSTEM_FINGERPRINT = "fp_fakellm01"

ERRORS: dict[int, tuple[str, str | None, str]] = {
    # status: (type, code, message)
    400: (
        "invalid_request_error",
        "context_length_exceeded",
        "This model's maximum context length is 128000 tokens. However, your messages resulted "
        "in 210000 tokens. Please reduce the length of the messages.",
    ),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests per min (RPM): Limit 500, Used 500, Requested 1. "
        "Please try again in 7s.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
    529: ("server_error", None, "The server is overloaded, please try again later."),
}


def error_body(
    status: int,
    *,
    error_type: str | None = None,
    code: str | None = None,
    message: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """``{"error":{"message","type","param","code"}}`` for ``status``."""
    d_type, d_code, d_message = ERRORS.get(
        status,
        ("server_error" if status >= 500 else "invalid_request_error", None, f"error {status}"),
    )
    return {
        "error": {
            "message": message or d_message,
            "type": error_type or d_type,
            "param": param,
            "code": code or d_code,
        }
    }


def scenario_error_body(scenario: Scenario, status: int) -> dict[str, Any]:
    """The error body for an HTTP-error (or blocking stream-error) scenario."""
    return error_body(
        status,
        error_type=scenario.error_type,
        code=scenario.error_code,
        message=scenario.error_message,
    )


class Ids:
    """Identifiers of one chat completion."""

    def __init__(self, scenario: Scenario) -> None:
        self.completion_id = new_id("chatcmpl-", 29)
        self.tool_ids = [new_id("call_") for _ in scenario.tool_calls]
        self.created = int(time.time())


def usage_body(usage: Usage) -> dict[str, Any]:
    """The ``usage`` object; ``prompt_tokens`` includes the cached tokens."""
    return {
        "prompt_tokens": usage.openai_input_tokens(),
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens(),
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _finish_reason(scenario: Scenario) -> str:
    return "tool_calls" if scenario.stop_is_tool_use else "stop"


def blocking_body(scenario: Scenario, model: str, ids: Ids) -> dict[str, Any]:
    """A complete ``chat.completion`` object."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": scenario.text or None,
        "refusal": None,
        "annotations": [],
    }
    if scenario.tool_calls:
        message["tool_calls"] = [
            {
                "id": tool_id,
                "type": "function",
                "function": {"name": call.name, "arguments": arguments_json(call)},
            }
            for call, tool_id in zip(scenario.tool_calls, ids.tool_ids, strict=True)
        ]
    return {
        "id": ids.completion_id,
        "object": "chat.completion",
        "created": ids.created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(scenario),
            }
        ],
        "usage": usage_body(scenario.usage),
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def stream_events(
    scenario: Scenario, model: str, ids: Ids, *, include_usage: bool
) -> list[SSEEvent]:
    """``chat.completion.chunk`` events, the usage chunk (``choices: []``) when
    ``include_usage``, and ``data: [DONE]``."""

    def envelope(choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": ids.completion_id,
            "object": "chat.completion.chunk",
            "created": ids.created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        }

    def chunk(
        delta: dict[str, Any], finish: str | None = None, *, is_delta: bool = False
    ) -> SSEEvent:
        data = envelope([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])
        if include_usage:
            data["usage"] = None
        return SSEEvent(None, data, is_delta=is_delta)

    first: dict[str, Any] = {"role": "assistant", "content": "" if scenario.text else None}
    first["refusal"] = None
    events = [chunk(first)]
    for piece in scenario.text_pieces():
        events.append(chunk({"content": piece}, is_delta=True))
    for i, (call, tool_id) in enumerate(zip(scenario.tool_calls, ids.tool_ids, strict=True)):
        events.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": tool_id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": ""},
                        }
                    ]
                },
                is_delta=True,
            )
        )
        for piece in scenario.argument_pieces(call):
            events.append(
                chunk(
                    {"tool_calls": [{"index": i, "function": {"arguments": piece}}]},
                    is_delta=True,
                )
            )
    events.append(chunk({}, _finish_reason(scenario)))
    if include_usage:
        events.append(SSEEvent(None, {**envelope([]), "usage": usage_body(scenario.usage)}))
    events.append(SSEEvent(None, "[DONE]"))
    return events


def stream_error_event(scenario: Scenario) -> list[SSEEvent]:
    """The mid-stream ``data: {"error": …}`` event (server_error unless overridden)."""
    body = error_body(
        500,
        error_type=scenario.error_type,
        code=scenario.error_code,
        message=scenario.error_message,
    )
    return [SSEEvent(None, body)]


MODELS = [
    ("gpt-4.1", 1744316542),
    ("gpt-4.1-mini", 1744318173),
    ("gpt-5", 1754425777),
    ("gpt-5-codex", 1757527818),
    ("o4-mini", 1744225351),
]


def models_body() -> dict[str, Any]:
    """The ``GET /v1/models`` list in OpenAI's shape."""
    return {
        "object": "list",
        "data": [
            {"id": mid, "object": "model", "created": created, "owned_by": "system"}
            for mid, created in MODELS
        ],
    }


def model_body(model_id: str) -> dict[str, Any] | None:
    """One model in OpenAI's shape, or None when unknown."""
    for mid, created in MODELS:
        if mid == model_id:
            return {"id": mid, "object": "model", "created": created, "owned_by": "system"}
    return None
