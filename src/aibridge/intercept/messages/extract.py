"""Side-channel extraction for Anthropic Messages responses (streaming and blocking).

Usage semantics (Anthropic): ``input_tokens`` already excludes the cache, which is reported
as ``cache_read_input_tokens`` and ``cache_creation_input_tokens``. In a stream,
``message_start.message.usage`` and every ``message_delta.usage`` are *cumulative snapshots*:
the billed value of each field is the latest one seen. A field missing from a later snapshot
keeps its earlier value. (Coder's gateway adds the snapshots together and over-counts.)
"""

from __future__ import annotations

import re
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
    as_int,
    as_str,
    decode_and_apply,
    decode_body,
)
from aibridge.intercept.sse import SSEEvent

__all__ = ["MessagesStreamObserver", "observe_body", "usage_from_snapshot"]

# Content-block types that are tool calls. ``server_tool_use`` (web search, code execution…)
# and ``mcp_tool_use`` (the MCP connector) run on Anthropic's side, but are still calls the
# model made, so they are recorded with kind "server".
_TOOL_KINDS = {"tool_use": "function", "server_tool_use": "server", "mcp_tool_use": "server"}


# Partial shapes: only the fields we read are declared; msgspec skips everything else
# without building Python objects for it. Leaf fields that providers have been seen to vary
# are loose (``Any`` / dict) so a surprise in one field does not cost the whole event.
_NO_RAW = msgspec.Raw(b"")


class _Block(msgspec.Struct):
    type: str = ""
    id: Any = None
    name: Any = None
    # Raw, so a tool's input keeps the exact text the model produced. (msgspec cannot put
    # Raw in a union, hence an empty Raw rather than None for "absent".)
    input: msgspec.Raw = _NO_RAW
    thinking: Any = None


class _Delta(msgspec.Struct):
    type: Any = None
    partial_json: Any = None
    thinking: Any = None
    stop_reason: Any = None


class _Error(msgspec.Struct):
    type: Any = None
    message: Any = None


class _Message(msgspec.Struct):
    id: Any = None
    model: Any = None
    stop_reason: Any = None
    usage: dict[str, Any] | None = None
    content: list[_Block] | None = None


class _Event(msgspec.Struct):
    type: str = ""
    index: Any = None
    message: _Message | None = None
    content_block: _Block | None = None
    delta: _Delta | None = None
    usage: dict[str, Any] | None = None
    error: _Error | None = None


class _Body(msgspec.Struct):
    type: Any = None
    id: Any = None
    model: Any = None
    stop_reason: Any = None
    usage: dict[str, Any] | None = None
    content: list[_Block] | None = None
    error: _Error | None = None


_EVENT = msgspec.json.Decoder(_Event)
# A text delta, as Anthropic serialises it: the observer records nothing from text (the
# response text is not stored), so these events — almost every event of a plain reply —
# skip JSON decoding. Anchored at the start, the match cannot come from inside a string;
# ``}}`` at the end keeps a truncated event counted as malformed.
_TEXT_DELTA = re.compile(
    rb'\{"type":"content_block_delta","index":\d+,"delta":\{"type":"text_delta",'
)
_BODY = msgspec.json.Decoder(_Body)


def _update_snapshot(snapshot: dict[str, int], usage: dict[str, Any]) -> None:
    """Overwrite ``snapshot`` with every counter present in ``usage`` (latest value wins).

    Nested counters are flattened to ``parent.child`` keys so each keeps its own latest value.
    """
    for key, value in usage.items():
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                n = as_int(sub_value)
                if n is not None:
                    snapshot[f"{key}.{sub}"] = n
        else:
            n = as_int(value)
            if n is not None:
                snapshot[key] = n


def usage_from_snapshot(
    snapshot: dict[str, int], response_id: str | None, model: str | None
) -> TokenUsage:
    """Build a :class:`TokenUsage` from flattened Anthropic usage counters."""
    extra: dict[str, int] = {}
    for key, value in snapshot.items():
        if not value:
            continue
        if key.startswith("server_tool_use."):
            extra[key.removeprefix("server_tool_use.")] = value  # e.g. web_search_requests
        elif key == "cache_creation.ephemeral_5m_input_tokens":
            extra["cache_ephemeral_5m_input"] = value
        elif key == "cache_creation.ephemeral_1h_input_tokens":
            extra["cache_ephemeral_1h_input"] = value
    return TokenUsage(
        response_id=response_id,
        model=model,
        input=snapshot.get("input_tokens", 0),
        output=snapshot.get("output_tokens", 0),
        cache_read=snapshot.get("cache_read_input_tokens", 0),
        cache_write=snapshot.get("cache_creation_input_tokens", 0),
        reasoning=snapshot.get("output_tokens_details.thinking_tokens", 0),
        extra=extra,
    )


@dataclass(slots=True)
class _OpenBlock:
    """A content block being streamed, keyed by its index."""

    kind: str  # "tool" or "thinking"
    call_id: str = ""
    name: str = ""
    tool_kind: str = "function"
    start_input: str = ""
    parts: list[str] = field(default_factory=list)
    stopped: bool = False


@dataclass(slots=True)
class _MessageState:
    """One streamed message (a stream normally carries exactly one)."""

    response_id: str | None = None
    model: str | None = None
    snapshot: dict[str, int] = field(default_factory=dict)
    has_usage: bool = False
    blocks: dict[int, _OpenBlock] = field(default_factory=dict)


class MessagesStreamObserver:
    """Observes an Anthropic Messages SSE stream; see the module docstring for usage rules.

    Feed every event with :meth:`observe` (it never raises), read :meth:`result` at the end
    or at any point. A second ``message_start`` (an observer reused across calls) starts a
    new usage entry.
    """

    def __init__(self) -> None:
        self._done: list[_MessageState] = []
        self._msg: _MessageState | None = None
        self._stop_reason: str | None = None
        self._error: UpstreamError | None = None
        self._completed = False
        self._bad = MalformedCounter("anthropic messages")

    def observe(self, event: SSEEvent) -> None:
        """Take one SSE event into account. Never raises."""
        if not event.has_data:
            return
        data = event.data
        if _TEXT_DELTA.match(data) is not None and data.endswith(b"}}"):
            return
        decode_and_apply(event, _EVENT.decode, self._apply, self._bad)

    def _current(self) -> _MessageState:
        if self._msg is None:
            self._msg = _MessageState()
        return self._msg

    def _apply(self, ev: _Event) -> None:
        kind = ev.type
        if kind == "content_block_delta":
            # The hot path: one per token. Only tool input and thinking are accumulated.
            block = self._current().blocks.get(ev.index) if isinstance(ev.index, int) else None
            d = ev.delta
            if block is None or d is None:
                return
            if d.type == "input_json_delta" and isinstance(d.partial_json, str):
                block.parts.append(d.partial_json)
            elif d.type == "thinking_delta" and isinstance(d.thinking, str):
                block.parts.append(d.thinking)
        elif kind == "content_block_start":
            cb = ev.content_block
            if cb is None or not isinstance(ev.index, int):
                self._bad.hit("content_block_start without index/content_block")
                return
            msg = self._current()
            if cb.type in _TOOL_KINDS:
                msg.blocks[ev.index] = _OpenBlock(
                    kind="tool",
                    call_id=as_str(cb.id) or "",
                    name=as_str(cb.name) or "",
                    tool_kind=_TOOL_KINDS[cb.type],
                    start_input=_raw_text(cb.input),
                )
            elif cb.type == "thinking":
                block = _OpenBlock(kind="thinking")
                if isinstance(cb.thinking, str) and cb.thinking:
                    block.parts.append(cb.thinking)
                msg.blocks[ev.index] = block
            # text, redacted_thinking and others carry nothing we record.
        elif kind == "content_block_stop":
            if isinstance(ev.index, int):
                block = self._current().blocks.get(ev.index)
                if block is not None:
                    block.stopped = True
        elif kind == "message_start":
            if self._msg is not None:
                self._done.append(self._msg)
            msg = self._msg = _MessageState()
            m = ev.message
            if m is not None:
                msg.response_id = as_str(m.id)
                msg.model = as_str(m.model)
                if m.usage is not None:
                    _update_snapshot(msg.snapshot, m.usage)
                    msg.has_usage = True
        elif kind == "message_delta":
            msg = self._current()
            if ev.usage is not None:
                _update_snapshot(msg.snapshot, ev.usage)
                msg.has_usage = True
            if ev.delta is not None and isinstance(ev.delta.stop_reason, str):
                self._stop_reason = ev.delta.stop_reason
        elif kind == "message_stop":
            self._completed = True
        elif kind == "error":
            self._error = _error_from(ev.error)
        # ping and unknown future event types are ignored on purpose.

    def result(self) -> Observation:
        """Everything observed so far."""
        obs = Observation(
            stop_reason=self._stop_reason,
            error=self._error,
            completed=self._completed,
            malformed_events=self._bad.count,
        )
        states = [*self._done, *([self._msg] if self._msg is not None else [])]
        for msg in states:
            if obs.response_id is None:
                obs.response_id = msg.response_id
            obs.model = msg.model or obs.model
            if msg.has_usage:
                obs.usages.append(usage_from_snapshot(msg.snapshot, msg.response_id, msg.model))
            for block in msg.blocks.values():
                if block.kind == "thinking":
                    text = "".join(block.parts)
                    if text:
                        obs.thoughts.append(Thought(content=text, source="thinking"))
                    continue
                raw = "".join(block.parts)
                if not raw.strip():
                    # No deltas (a tool without parameters): the start block's input stands.
                    raw = block.start_input
                obs.tool_calls.append(
                    ToolCall.parsed(
                        block.call_id,
                        block.name,
                        raw,
                        response_id=msg.response_id,
                        complete=block.stopped,
                        kind=block.tool_kind,
                    )
                )
        return obs


def _error_from(err: _Error | None) -> UpstreamError:
    """An Anthropic ``error`` member (absent on a bare ``{"type": "error"}``)."""
    return UpstreamError(
        type=(as_str(err.type) if err else None) or "error",
        message=(as_str(err.message) if err else None) or "",
    )


def _raw_text(raw: msgspec.Raw) -> str:
    """The exact JSON text of a raw value, as the model produced it ("" when absent/null)."""
    text = bytes(raw).decode("utf-8", "replace")
    return "" if text == "null" else text


def observe_body(body: bytes) -> Observation:
    """Extract records from a blocking Messages response body (a message or an error)."""
    b = decode_body(_BODY.decode, body)
    if b is None:
        return Observation(malformed_events=1)
    obs = Observation()
    if b.type == "error" or b.error is not None:
        obs.error = _error_from(b.error)
        return obs
    obs.completed = True
    obs.response_id = as_str(b.id)
    obs.model = as_str(b.model)
    obs.stop_reason = as_str(b.stop_reason)
    if b.usage is not None:
        snapshot: dict[str, int] = {}
        _update_snapshot(snapshot, b.usage)
        obs.usages.append(usage_from_snapshot(snapshot, obs.response_id, obs.model))
    for block in b.content or ():
        if block.type in _TOOL_KINDS:
            raw = _raw_text(block.input)
            obs.tool_calls.append(
                ToolCall.parsed(
                    as_str(block.id) or "",
                    as_str(block.name) or "",
                    raw,
                    response_id=obs.response_id,
                    kind=_TOOL_KINDS[block.type],
                )
            )
        elif block.type == "thinking" and isinstance(block.thinking, str) and block.thinking:
            obs.thoughts.append(Thought(content=block.thinking, source="thinking"))
    return obs
