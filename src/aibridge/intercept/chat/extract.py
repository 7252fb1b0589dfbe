"""Side-channel extraction for OpenAI Chat Completions responses (streaming and blocking).

Usage semantics (OpenAI): ``prompt_tokens`` *includes* ``prompt_tokens_details.cached_tokens``
(and ``cache_write_tokens`` where reported), so uncached input = prompt - cached - written,
clamped at 0. ``completion_tokens`` is the billed output; ``reasoning_tokens`` is part of it.
In a stream, usage comes in the final chunk (``choices: []``) when ``include_usage`` is set;
some OpenAI-compatible providers send a usage snapshot on every chunk instead. Either way the
last one seen is the total — snapshots are never summed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

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

__all__ = ["ChatStreamObserver", "observe_body", "usage_from_openai_chat"]

_DONE = b"[DONE]"


class _Function(msgspec.Struct):
    name: Any = None
    arguments: Any = None


class _ToolCallDelta(msgspec.Struct):
    index: Any = None
    id: Any = None
    type: Any = None
    function: _Function | None = None


class _Delta(msgspec.Struct):
    tool_calls: list[_ToolCallDelta] | None = None
    function_call: _Function | None = None
    # Reasoning text of OpenAI-compatible reasoning models (DeepSeek, vLLM, OpenRouter…).
    reasoning_content: Any = None
    reasoning: Any = None


class _Choice(msgspec.Struct):
    index: Any = 0
    delta: _Delta | None = None
    message: _Delta | None = None
    finish_reason: Any = None


class _Chunk(msgspec.Struct):
    id: Any = None
    model: Any = None
    choices: list[_Choice] | None = None
    usage: dict[str, Any] | None = None
    error: Any = None


_CHUNK = msgspec.json.Decoder(_Chunk)


def usage_from_openai_chat(
    usage: dict[str, Any], response_id: str | None, model: str | None
) -> TokenUsage:
    """Convert a Chat Completions ``usage`` object to uncached-input accounting."""
    prompt = as_int(usage.get("prompt_tokens")) or 0
    pdet = as_dict(usage.get("prompt_tokens_details"))
    cdet = as_dict(usage.get("completion_tokens_details"))
    cached = as_int(pdet.get("cached_tokens"))
    if cached is None:
        # DeepSeek reports its cache hits at the top level instead.
        cached = as_int(usage.get("prompt_cache_hit_tokens"))
    cached = cached or 0
    written = as_int(pdet.get("cache_write_tokens")) or 0
    extra: dict[str, int] = {}
    for source, key, name in (
        (pdet, "audio_tokens", "prompt_audio"),
        (cdet, "audio_tokens", "completion_audio"),
        (cdet, "accepted_prediction_tokens", "completion_accepted_prediction"),
        (cdet, "rejected_prediction_tokens", "completion_rejected_prediction"),
    ):
        n = as_int(source.get(key))
        if n:
            extra[name] = n
    return uncached_usage(
        response_id,
        model,
        total_input=prompt,
        cached=cached,
        written=written,
        output=as_int(usage.get("completion_tokens")) or 0,
        reasoning=as_int(cdet.get("reasoning_tokens")) or 0,
        extra=extra,
    )


def _error_from(value: Any) -> UpstreamError:
    """An OpenAI ``error`` member (an object, or occasionally a bare string)."""
    if isinstance(value, dict):
        code = value.get("code")
        return UpstreamError(
            type=as_str(value.get("type")) or "error",
            message=as_str(value.get("message")) or "",
            code=str(code) if code is not None else None,
        )
    return UpstreamError(type="error", message=str(value))


@dataclass(slots=True)
class _PendingCall:
    call_id: str = ""
    name: str = ""
    parts: list[str] = field(default_factory=list)
    choice: int = 0


class ChatStreamObserver:
    """Observes an OpenAI Chat Completions SSE stream (``data: {chunk}`` … ``data: [DONE]``).

    Tool-call deltas are accumulated per (choice, tool-call index): the first delta carries
    id and name, later ones only argument fragments. Never raises from :meth:`observe`.
    """

    def __init__(self) -> None:
        self._calls: dict[tuple[int, Any], _PendingCall] = {}
        self._last_key: dict[int, tuple[int, Any]] = {}
        self._reasoning: dict[int, list[str]] = {}
        self._finished: set[int] = set()
        self._usage: dict[str, Any] | None = None
        self._usage_id: str | None = None
        self._response_id: str | None = None
        self._model: str | None = None
        self._stop_reason: str | None = None
        self._error: UpstreamError | None = None
        self._done = False
        self._bad = MalformedCounter("openai chat")

    def observe(self, event: SSEEvent) -> None:
        """Take one SSE event into account. Never raises."""
        if not event.has_data:
            return
        data = event.data
        if data == _DONE or data.strip() == _DONE:
            self._done = True
            return
        decode_and_apply(event, _CHUNK.decode, self._apply, self._bad)

    def _apply(self, chunk: _Chunk) -> None:
        if chunk.error is not None:
            self._error = _error_from(chunk.error)
            return
        chunk_id = as_str(chunk.id)
        if self._response_id is None and chunk_id:
            self._response_id = chunk_id
        if isinstance(chunk.model, str) and chunk.model:
            self._model = chunk.model
        if chunk.usage is not None:
            # A snapshot (final chunk, or every chunk on some providers): the last one wins.
            self._usage = chunk.usage
            self._usage_id = chunk_id or self._response_id
        for choice in chunk.choices or ():
            idx = choice.index if isinstance(choice.index, int) else 0
            if isinstance(choice.finish_reason, str) and choice.finish_reason:
                self._stop_reason = choice.finish_reason
                self._finished.add(idx)
            d = choice.delta
            if d is None:
                continue
            if d.tool_calls:
                for tc in d.tool_calls:
                    self._tool_delta(idx, tc)
            if d.function_call is not None:
                call = self._calls.get((idx, "function_call"))
                if call is None:
                    call = self._calls[(idx, "function_call")] = _PendingCall(choice=idx)
                _merge_function(call, d.function_call)
            text = d.reasoning_content if isinstance(d.reasoning_content, str) else d.reasoning
            if isinstance(text, str) and text:
                self._reasoning.setdefault(idx, []).append(text)

    def _tool_delta(self, choice: int, tc: _ToolCallDelta) -> None:
        call_id = as_str(tc.id)
        key: tuple[int, Any]
        if isinstance(tc.index, int):
            key = (choice, tc.index)
        elif call_id:
            # Some compatible providers omit the index; the id then identifies the call.
            key = (choice, call_id)
        else:
            key = self._last_key.get(choice, (choice, 0))
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = _PendingCall(choice=choice)
        self._last_key[choice] = key
        if call_id and not call.call_id:
            call.call_id = call_id
        if tc.function is not None:
            _merge_function(call, tc.function)

    def result(self) -> Observation:
        """Everything observed so far."""
        obs = Observation(
            response_id=self._response_id,
            model=self._model,
            stop_reason=self._stop_reason,
            error=self._error,
            completed=self._done,
            malformed_events=self._bad.count,
        )
        if self._usage is not None:
            obs.usages.append(
                usage_from_openai_chat(
                    self._usage, self._usage_id or self._response_id, self._model
                )
            )
        for call in self._calls.values():
            if not (call.call_id or call.name or call.parts):
                continue  # a placeholder some providers emit (e.g. indexes starting at 1)
            raw = "".join(call.parts)
            obs.tool_calls.append(
                ToolCall.parsed(
                    call.call_id,
                    call.name,
                    raw,
                    response_id=self._response_id,
                    # Finished only once its choice has a finish_reason: [DONE] after an
                    # error event does not make cut-off arguments whole.
                    complete=call.choice in self._finished,
                )
            )
        for parts in self._reasoning.values():
            obs.thoughts.append(Thought(content="".join(parts), source="thinking"))
        return obs


def _merge_function(call: _PendingCall, fn: _Function) -> None:
    # The name arrives once; a provider repeating it on every delta must not get it doubled.
    name = as_str(fn.name)
    if name and not call.name:
        call.name = name
    args = as_str(fn.arguments)
    if args:
        call.parts.append(args)


def observe_body(body: bytes) -> Observation:
    """Extract records from a blocking Chat Completions body (a completion or an error)."""
    chunk = decode_body(_CHUNK.decode, body)
    if chunk is None:
        return Observation(malformed_events=1)
    obs = Observation()
    if chunk.error is not None:
        obs.error = _error_from(chunk.error)
        return obs
    obs.completed = True
    obs.response_id = as_str(chunk.id)
    obs.model = as_str(chunk.model)
    if chunk.usage is not None:
        obs.usages.append(usage_from_openai_chat(chunk.usage, obs.response_id, obs.model))
    for choice in chunk.choices or ():
        if isinstance(choice.finish_reason, str):
            obs.stop_reason = choice.finish_reason
        m = choice.message
        if m is None:
            continue
        for tc in m.tool_calls or ():
            fn = tc.function or _Function()
            raw = as_str(fn.arguments) or ""
            obs.tool_calls.append(
                ToolCall.parsed(
                    as_str(tc.id) or "", as_str(fn.name) or "", raw, response_id=obs.response_id
                )
            )
        if m.function_call is not None:
            raw = as_str(m.function_call.arguments) or ""
            obs.tool_calls.append(
                ToolCall.parsed(
                    "", as_str(m.function_call.name) or "", raw, response_id=obs.response_id
                )
            )
        text = m.reasoning_content if isinstance(m.reasoning_content, str) else m.reasoning
        if isinstance(text, str) and text:
            obs.thoughts.append(Thought(content=text, source="thinking"))
    return obs
