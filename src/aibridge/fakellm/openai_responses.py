"""OpenAI Responses wire format: response objects, SSE events, error events.

Errors before the stream use the Chat Completions error body (``openai_chat.error_body``),
as the real API does.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aibridge.fakellm.scenario import Scenario, Usage, arguments_json, new_id
from aibridge.fakellm.wire import SSEEvent


class Ids:
    """Identifiers of one response and its output items."""

    def __init__(self, scenario: Scenario) -> None:
        self.response_id = "resp_" + new_id("", 48).lower()
        self.reasoning_id = "rs_" + new_id("", 48).lower()
        self.message_id = "msg_" + new_id("", 48).lower()
        self.item_ids = ["fc_" + new_id("", 48).lower() for _ in scenario.tool_calls]
        self.call_ids = [new_id("call_") for _ in scenario.tool_calls]
        self.created = int(time.time())


def usage_body(usage: Usage) -> dict[str, Any]:
    """The ``usage`` object; ``input_tokens`` includes the cached tokens."""
    return {
        "input_tokens": usage.openai_input_tokens(),
        "input_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens(),
    }


def _response(
    request: dict[str, Any], model: str, ids: Ids, *, status: str, output: list[Any]
) -> dict[str, Any]:
    return {
        "id": ids.response_id,
        "object": "response",
        "created_at": ids.created,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": request.get("reasoning") or {"effort": None, "summary": None},
        "service_tier": "default",
        "store": request.get("store", True),
        "temperature": request.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools", []),
        "top_p": request.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": request.get("metadata") or {},
    }


def _reasoning_item(scenario: Scenario, ids: Ids, *, done: bool) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": scenario.thinking}] if done else []
    return {"id": ids.reasoning_id, "type": "reasoning", "summary": summary}


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _message_item(scenario: Scenario, ids: Ids, *, done: bool) -> dict[str, Any]:
    return {
        "id": ids.message_id,
        "type": "message",
        "status": "completed" if done else "in_progress",
        "content": [_output_text(scenario.text)] if done else [],
        "role": "assistant",
    }


def _call_item(scenario: Scenario, ids: Ids, i: int, *, done: bool) -> dict[str, Any]:
    call = scenario.tool_calls[i]
    return {
        "id": ids.item_ids[i],
        "type": "function_call",
        "status": "completed" if done else "in_progress",
        "arguments": arguments_json(call) if done else "",
        "call_id": ids.call_ids[i],
        "name": call.name,
    }


def output_items(scenario: Scenario, ids: Ids) -> list[dict[str, Any]]:
    """The finished output items: reasoning, message, function calls, in that order."""
    items: list[dict[str, Any]] = []
    if scenario.thinking:
        items.append(_reasoning_item(scenario, ids, done=True))
    if scenario.text:
        items.append(_message_item(scenario, ids, done=True))
    items += [_call_item(scenario, ids, i, done=True) for i in range(len(scenario.tool_calls))]
    return items


def completed_response(
    scenario: Scenario, request: dict[str, Any], model: str, ids: Ids
) -> dict[str, Any]:
    """The completed ``response`` object (blocking body and ``response.completed`` payload),
    or the incomplete one when ``scenario.responses_incomplete`` is set."""
    reason = scenario.responses_incomplete
    status = "completed" if reason is None else "incomplete"
    resp = _response(request, model, ids, status=status, output=output_items(scenario, ids))
    if reason is None:
        resp["completed_at"] = ids.created
    else:
        resp["incomplete_details"] = {"reason": reason}
    resp["usage"] = usage_body(scenario.usage)
    return resp


class _Emit(Protocol):
    def __call__(self, event_type: str, is_delta: bool = False, /, **fields: Any) -> None: ...


@dataclass(frozen=True)
class _TextPart:
    """How one kind of streamed text part is framed (reasoning summary or output text)."""

    part_event: str
    text_event: str
    index_key: str
    part: Callable[[str], dict[str, Any]]
    text_fields: dict[str, Any]


_SUMMARY = _TextPart(
    "response.reasoning_summary_part",
    "response.reasoning_summary_text",
    "summary_index",
    lambda text: {"type": "summary_text", "text": text},
    {},
)
_OUTPUT_TEXT = _TextPart(
    "response.content_part", "response.output_text", "content_index", _output_text, {"logprobs": []}
)


def _text_item_events(
    emit: _Emit,
    kind: _TextPart,
    item_id: str,
    index: int,
    items: tuple[dict[str, Any], dict[str, Any]],
    pieces: list[str],
    text: str,
) -> None:
    """The events of an output item holding one streamed text part: item added, part added,
    the text deltas, text done, part done, item done (``items``: the item before and after)."""
    emit("response.output_item.added", output_index=index, item=items[0])
    where = {"item_id": item_id, "output_index": index, kind.index_key: 0}
    emit(f"{kind.part_event}.added", **where, part=kind.part(""))
    for piece in pieces:
        emit(f"{kind.text_event}.delta", True, **where, delta=piece, **kind.text_fields)
    emit(f"{kind.text_event}.done", **where, text=text, **kind.text_fields)
    emit(f"{kind.part_event}.done", **where, part=kind.part(text))
    emit("response.output_item.done", output_index=index, item=items[1])


def stream_events(
    scenario: Scenario, request: dict[str, Any], model: str, ids: Ids
) -> list[SSEEvent]:
    """The full event sequence from ``response.created`` to ``response.completed``."""
    events: list[SSEEvent] = []

    def emit(event_type: str, is_delta: bool = False, /, **fields: Any) -> None:
        data = {"type": event_type, "sequence_number": len(events), **fields}
        events.append(SSEEvent(event_type, data, is_delta=is_delta))

    emit(
        "response.created", response=_response(request, model, ids, status="in_progress", output=[])
    )
    emit(
        "response.in_progress",
        response=_response(request, model, ids, status="in_progress", output=[]),
    )
    index = 0
    if scenario.thinking:
        _text_item_events(
            emit,
            _SUMMARY,
            ids.reasoning_id,
            index,
            (_reasoning_item(scenario, ids, done=False), _reasoning_item(scenario, ids, done=True)),
            scenario.thinking_pieces(),
            scenario.thinking,
        )
        index += 1
    if scenario.text:
        _text_item_events(
            emit,
            _OUTPUT_TEXT,
            ids.message_id,
            index,
            (_message_item(scenario, ids, done=False), _message_item(scenario, ids, done=True)),
            scenario.text_pieces(),
            scenario.text,
        )
        index += 1
    for i, call in enumerate(scenario.tool_calls):
        item_id = ids.item_ids[i]
        emit(
            "response.output_item.added",
            output_index=index,
            item=_call_item(scenario, ids, i, done=False),
        )
        for piece in scenario.argument_pieces(call):
            emit(
                "response.function_call_arguments.delta",
                True,
                item_id=item_id,
                output_index=index,
                delta=piece,
            )
        emit(
            "response.function_call_arguments.done",
            item_id=item_id,
            output_index=index,
            name=call.name,
            arguments=arguments_json(call),
        )
        emit(
            "response.output_item.done",
            output_index=index,
            item=_call_item(scenario, ids, i, done=True),
        )
        index += 1
    terminal = (
        "response.completed" if scenario.responses_incomplete is None else "response.incomplete"
    )
    emit(terminal, response=completed_response(scenario, request, model, ids))
    return events


def stream_error_event(
    scenario: Scenario, request: dict[str, Any], model: str, ids: Ids, sequence_number: int
) -> list[SSEEvent]:
    """The mid-stream failure: an ``error`` event or ``response.failed``."""
    message = scenario.error_message or "The server had an error while processing your request."
    if scenario.responses_error_event == "response.failed":
        resp = _response(request, model, ids, status="failed", output=[])
        resp["error"] = {"code": scenario.error_code or "server_error", "message": message}
        data: dict[str, Any] = {
            "type": "response.failed",
            "sequence_number": sequence_number,
            "response": resp,
        }
        return [SSEEvent("response.failed", data)]
    data = {
        "type": "error",
        "sequence_number": sequence_number,
        "code": scenario.error_code or "server_error",
        "message": message,
        "param": None,
    }
    return [SSEEvent("error", data)]


def stored(resp: dict[str, Any]) -> dict[str, Any]:
    """A deep copy for the ``GET /v1/responses/{id}`` store."""
    return copy.deepcopy(resp)
