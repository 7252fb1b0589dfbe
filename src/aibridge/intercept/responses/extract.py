"""Side-channel extraction for OpenAI Responses (streaming and blocking).

Usage semantics: ``input_tokens`` *includes* ``input_tokens_details.cached_tokens`` (and
``cache_write_tokens`` where reported), so uncached input = input - cached - written, clamped
at 0; ``output_tokens`` is the billed output and ``output_tokens_details.reasoning_tokens`` a
part of it. In a stream the usage arrives once, in the terminal ``response.completed`` (or
``response.incomplete`` / ``response.failed``) event's ``response.usage``.

Tool calls and thoughts are read from the terminal event's ``response.output``; when a stream
is cut (or a compatible provider sends an empty ``output``), the items seen in
``response.output_item.done`` events are used instead.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from aibridge.intercept.observations import (
    MalformedCounter,
    Observation,
    Thought,
    TokenUsage,
    ToolCall,
    UpstreamError,
    as_dict,
    as_int,
    as_str,
    decode_and_apply,
    decode_body,
    uncached_usage,
)
from aibridge.intercept.sse import SSEEvent

__all__ = ["ResponsesStreamObserver", "observe_body", "usage_from_openai_responses"]

_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_STARTED = frozenset({"response.created", "response.in_progress", "response.queued"})
# Built-in tools OpenAI runs itself; recorded with kind "hosted" (name falls back to type).
_HOSTED = frozenset(
    {
        "web_search_call",
        "file_search_call",
        "computer_call",
        "code_interpreter_call",
        "image_generation_call",
        "local_shell_call",
        "shell_call",
        "apply_patch_call",
        "mcp_call",
    }
)
# Fields that describe what a hosted call was asked to do (its "arguments").
_HOSTED_ARG_FIELDS = ("action", "queries", "code", "operation", "server_label", "input")


class _Response(msgspec.Struct):
    id: Any = None
    model: Any = None
    status: Any = None
    usage: dict[str, Any] | None = None
    output: list[Any] | None = None
    error: Any = None
    incomplete_details: Any = None


class _Event(msgspec.Struct):
    type: Any = None
    response: _Response | None = None
    item: dict[str, Any] | None = None
    output_index: Any = None
    code: Any = None
    message: Any = None
    error: Any = None


# The blocking body is a Response object, or an {"error": {...}} envelope on failure.
_BODY = msgspec.json.Decoder(_Response)
_EVENT = msgspec.json.Decoder(_Event)


def usage_from_openai_responses(
    usage: dict[str, Any], response_id: str | None, model: str | None
) -> TokenUsage:
    """Convert a Responses ``usage`` object to uncached-input accounting."""
    idet = as_dict(usage.get("input_tokens_details"))
    odet = as_dict(usage.get("output_tokens_details"))
    return uncached_usage(
        response_id,
        model,
        total_input=as_int(usage.get("input_tokens")) or 0,
        cached=as_int(idet.get("cached_tokens")) or 0,
        written=as_int(idet.get("cache_write_tokens")) or 0,
        output=as_int(usage.get("output_tokens")) or 0,
        reasoning=as_int(odet.get("reasoning_tokens")) or 0,
    )


def _error(value: Any, fallback_message: Any = None, fallback_code: Any = None) -> UpstreamError:
    """An error from a Responses ``error`` object (or top-level code/message fields)."""
    err = as_dict(value)
    code = err.get("code", fallback_code)
    code_s = str(code) if code is not None else None
    return UpstreamError(
        type=as_str(err.get("type")) or code_s or "error",
        message=as_str(err.get("message")) or as_str(fallback_message) or "",
        code=code_s,
    )


def _items_to(obs: Observation, items: list[Any], response_id: str | None) -> None:
    """Append the tool calls and thoughts found in output items to ``obs``."""
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        item_id = as_str(item.get("id"))
        if kind == "function_call":
            raw = as_str(item.get("arguments")) or ""
            obs.tool_calls.append(
                ToolCall.parsed(
                    as_str(item.get("call_id")) or "",
                    as_str(item.get("name")) or "",
                    raw,
                    item_id=item_id,
                    response_id=response_id,
                    complete=item.get("status") in (None, "completed"),
                )
            )
        elif kind == "custom_tool_call":
            # Free-form input (a patch, a query…): recorded as text, never parsed as JSON.
            obs.tool_calls.append(
                ToolCall(
                    call_id=as_str(item.get("call_id")) or "",
                    name=as_str(item.get("name")) or "",
                    arguments_raw=as_str(item.get("input")) or "",
                    arguments=None,
                    item_id=item_id,
                    response_id=response_id,
                    kind="custom",
                )
            )
        elif kind == "reasoning":
            for part in item.get("summary") or ():
                text = as_dict(part).get("text")
                if isinstance(text, str) and text:
                    obs.thoughts.append(Thought(content=text, source="reasoning_summary"))
        elif kind == "message":
            if item.get("phase") != "commentary":
                continue  # output text is not recorded; only commentary counts as a thought
            for part in item.get("content") or ():
                p = as_dict(part)
                text = p.get("text")
                if p.get("type") == "output_text" and isinstance(text, str) and text:
                    obs.thoughts.append(Thought(content=text, source="commentary"))
        elif kind in _HOSTED:
            raw_args = as_str(item.get("arguments"))
            if raw_args is None:
                args = {k: item[k] for k in _HOSTED_ARG_FIELDS if item.get(k) is not None}
                try:
                    raw_args = orjson.dumps(args).decode()
                except orjson.JSONEncodeError:  # nested deeper than orjson re-encodes
                    raw_args = ""
            obs.tool_calls.append(
                ToolCall.parsed(
                    as_str(item.get("call_id")) or "",
                    as_str(item.get("name")) or kind,
                    raw_args,
                    item_id=item_id,
                    response_id=response_id,
                    kind="hosted",
                )
            )


def _stop_reason(resp: _Response) -> str | None:
    reason = as_dict(resp.incomplete_details).get("reason")
    return as_str(reason) or as_str(resp.status)


class ResponsesStreamObserver:
    """Observes an OpenAI Responses SSE stream. Never raises from :meth:`observe`.

    One usage entry per terminal event, so an observer fed several responses in a row (or a
    WebSocket carrying several ``response.create`` turns) yields one entry per response.
    """

    def __init__(self) -> None:
        self._obs = Observation()
        self._current_id: str | None = None
        self._items: dict[int, dict[str, Any]] = {}
        self._bad = MalformedCounter("openai responses")

    def observe(self, event: SSEEvent) -> None:
        """Take one SSE event into account. Never raises."""
        if not event.has_data:
            return
        decode_and_apply(event, _EVENT.decode, self._apply, self._bad)

    def _apply(self, ev: _Event) -> None:
        kind = ev.type
        obs = self._obs
        if kind == "response.output_item.done":
            if ev.item is not None:
                index = ev.output_index if isinstance(ev.output_index, int) else len(self._items)
                self._items[index] = ev.item
        elif kind in _STARTED:
            resp = ev.response
            if resp is not None:
                rid = as_str(resp.id)
                if rid and rid != self._current_id:
                    self._current_id = rid
                    self._items = {}
                if obs.response_id is None and rid:
                    obs.response_id = rid
                obs.model = as_str(resp.model) or obs.model
        elif kind in _TERMINAL:
            self._terminal(kind, ev.response)
        elif kind == "error":
            # {"type":"error","code","message"} — or a nested {"error":{…}} on some transports.
            obs.error = _error(ev.error, ev.message, ev.code)
        # Text deltas and everything else are not recorded.

    def _terminal(self, kind: str, resp: _Response | None) -> None:
        obs = self._obs
        obs.completed = True
        if resp is None:
            return
        rid = as_str(resp.id) or self._current_id
        if obs.response_id is None:
            obs.response_id = rid
        model = as_str(resp.model) or obs.model
        obs.model = model
        obs.stop_reason = _stop_reason(resp)
        if resp.usage is not None:
            obs.usages.append(usage_from_openai_responses(resp.usage, rid, model))
        if kind == "response.failed" or resp.error is not None:
            obs.error = _error(resp.error, "response failed")
        items = resp.output if resp.output else [self._items[i] for i in sorted(self._items)]
        _items_to(obs, items, rid)
        # Items are now recorded; forget them so result() does not add them twice.
        self._items = {}
        self._current_id = None

    @property
    def ended(self) -> bool:
        """Whether a terminal event or an ``error`` event has been seen: over WebSocket,
        either one ends the ``response.create`` it answers."""
        return self._obs.completed or self._obs.error is not None

    def result(self) -> Observation:
        """Everything observed so far (items of an unfinished response included)."""
        obs = self._obs
        out = Observation(
            usages=list(obs.usages),
            tool_calls=list(obs.tool_calls),
            thoughts=list(obs.thoughts),
            response_id=obs.response_id,
            model=obs.model,
            stop_reason=obs.stop_reason,
            error=obs.error,
            completed=obs.completed,
            malformed_events=self._bad.count,
        )
        if self._items:
            # The stream was cut before its terminal event: report what finished so far.
            _items_to(out, [self._items[i] for i in sorted(self._items)], self._current_id)
        return out


def observe_body(body: bytes) -> Observation:
    """Extract records from a blocking Responses body (a Response object or an error)."""
    resp = decode_body(_BODY.decode, body)
    if resp is None:
        return Observation(malformed_events=1)
    obs = Observation()
    rid = as_str(resp.id)
    if rid is None and resp.error is not None:
        # {"error": {...}} envelope, not a Response.
        obs.error = _error(resp.error)
        return obs
    obs.completed = True
    obs.response_id = rid
    obs.model = as_str(resp.model)
    obs.stop_reason = _stop_reason(resp)
    if resp.error is not None:
        obs.error = _error(resp.error)
    if resp.usage is not None:
        obs.usages.append(usage_from_openai_responses(resp.usage, rid, obs.model))
    _items_to(obs, resp.output or [], rid)
    return obs
