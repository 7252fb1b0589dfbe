"""Anthropic Messages with injected MCP tools (the adapter of
:mod:`aibridge.intercept.agentic`).

Request: the tools are put *before* the client's (so the client's prompt-cache
breakpoints stay valid; the injected list is sorted, so it is the same prefix on every
request) and parallel tool use is disabled through ``tool_choice``: absent or null →
``{"type": "auto", "disable_parallel_tool_use": true}``; ``auto``/``any``/``tool`` →
the same choice with ``disable_parallel_tool_use: true``; ``none`` (and an unknown type)
unchanged. Every other member keeps its bytes and position.

Stream: the first turn's ``message_start`` is relayed, later ones are not; injected
``tool_use`` blocks are hidden; every relayed block gets the next client-side index, so
the client sees indexes 0, 1, 2… across turns; a turn that continues the loop hides its
``message_delta`` and ``message_stop``; the last ``message_delta`` carries the usage
summed over all turns (each turn's ``message_start`` usage updated by its
``message_delta``). When injected calls were hidden and the client is left with no call
of its own, a ``tool_use`` stop reason becomes ``end_turn``. A blocking answer is the
last turn's body with the same edits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

from aibridge.intercept.injection import (
    ENCODER,
    TRUE,
    PendingCall,
    TurnEnd,
    add_usage,
    encode_event,
    loads_object,
    raw,
    raw_list,
)
from aibridge.intercept.observations import as_dict
from aibridge.intercept.request import decode_object
from aibridge.intercept.sse import SSEEvent
from aibridge.mcp.tools import MCPTool, ToolResult
from aibridge.mcp.toolset import Toolset

_DISABLE_PARALLEL = msgspec.Raw(b'{"type":"auto","disable_parallel_tool_use":true}')
_PARALLEL_TYPES = ("auto", "any", "tool")


def _definitions(toolset: Toolset) -> list[msgspec.Raw]:
    key = ("messages", "definitions")
    cached = toolset.derived.get(key)
    if cached is None:
        cached = toolset.derived[key] = [
            raw({"name": t.id, "description": t.description, "input_schema": t.input_schema})
            for t in toolset.tools
        ]
    return list(cached)


def _tool_choice(current: msgspec.Raw | None) -> msgspec.Raw | None:
    """The ``tool_choice`` that disables parallel tool use (None: leave it as it is)."""
    if current is None or bytes(current).strip() == b"null":
        return _DISABLE_PARALLEL
    choice = decode_object(current, "tool_choice")
    kind = msgspec.json.decode(choice["type"]) if "type" in choice else None
    if not kind:
        return _DISABLE_PARALLEL
    if kind in _PARALLEL_TYPES:
        choice["disable_parallel_tool_use"] = TRUE
        return msgspec.Raw(ENCODER.encode(choice))
    return None


@dataclass(slots=True)
class _Block:
    data: dict[str, Any]
    json_parts: list[str] = field(default_factory=list)
    done: bool = False

    def finish(self) -> None:
        if self.data.get("type") in ("tool_use", "server_tool_use") and self.json_parts:
            text = "".join(self.json_parts)
            try:
                self.data["input"] = orjson.loads(text)
            except orjson.JSONDecodeError:
                self.data["input"] = {}
                self.data["_raw_input"] = text
        self.done = True


def _apply_delta(block: _Block, delta: dict[str, Any]) -> None:
    kind = delta.get("type")
    data = block.data
    if kind == "text_delta":
        data["text"] = data.get("text", "") + str(delta.get("text", ""))
    elif kind == "input_json_delta":
        block.json_parts.append(str(delta.get("partial_json", "")))
    elif kind == "thinking_delta":
        data["thinking"] = data.get("thinking", "") + str(delta.get("thinking", ""))
    elif kind == "signature_delta":
        data["signature"] = delta.get("signature", "")
    elif kind == "citations_delta":
        data.setdefault("citations", []).append(delta.get("citation"))


class MessagesConversation:
    """A Messages request run with injected tools."""

    def __init__(self, body: bytes, toolset: Toolset) -> None:
        top = decode_object(body, "body")
        top["tools"] = msgspec.Raw(
            ENCODER.encode(_definitions(toolset) + raw_list(top.get("tools"), "tools"))
        )
        choice = _tool_choice(top.get("tool_choice"))
        if choice is not None:
            top["tool_choice"] = choice
        self._top = top
        self._messages = raw_list(top.get("messages"), "messages")
        self._body: bytes | None = ENCODER.encode(top)
        self.toolset = toolset
        self._first = True
        self._next_index = 0
        self._prior_usage: dict[str, Any] = {}
        self._assistant: list[dict[str, Any]] = []

    def body(self) -> bytes:
        """The next upstream body (the first one as built, later ones re-encoded)."""
        if self._body is None:
            self._top["messages"] = msgspec.Raw(ENCODER.encode(self._messages))
            self._body = ENCODER.encode(self._top)
        return self._body

    def stream_relay(self, can_continue: bool) -> _StreamRelay:
        """A relay for the next upstream stream."""
        return _StreamRelay(self, can_continue)

    def _calls(self, blocks: Sequence[dict[str, Any]]) -> tuple[list[PendingCall], int]:
        calls: list[PendingCall] = []
        client = 0
        for block in blocks:
            if block.get("type") != "tool_use":
                continue
            tool = self.toolset.get(str(block.get("name")))
            if tool is None:
                client += 1
                continue
            calls.append(_pending(block, tool))
        return calls, client

    def blocking_turn(self, data: bytes, can_continue: bool) -> tuple[TurnEnd, bytes]:
        """A whole response body: the turn, and the body the client gets if it is last."""
        body = loads_object(data)
        content = body.get("content") if body is not None else None
        if body is None or not isinstance(content, list):
            return TurnEnd(), data
        calls, client = self._calls(content)
        turn = TurnEnd(calls, client, response_id=_str(body.get("id")))
        usage = as_dict(body.get("usage"))
        turn.continues = bool(calls) and not client and can_continue
        if turn.continues:
            self._assistant = content
            self._prior_usage = add_usage(self._prior_usage, usage)
            return turn, data
        if not calls and not self._prior_usage:
            return turn, data
        if calls:
            body["content"] = [
                b for b in content if not (b.get("type") == "tool_use" and self._is_injected(b))
            ]
            if not client and body.get("stop_reason") == "tool_use":
                body["stop_reason"] = "end_turn"
        if self._prior_usage:
            body["usage"] = add_usage(self._prior_usage, usage)
        return turn, orjson.dumps(body)

    def _is_injected(self, block: dict[str, Any]) -> bool:
        return self.toolset.get(str(block.get("name"))) is not None

    def extend(self, results: Sequence[tuple[PendingCall, ToolResult]]) -> None:
        """Append the model's turn and one user message with every tool result."""
        assistant = [{k: v for k, v in b.items() if k != "_raw_input"} for b in self._assistant]
        self._messages.append(raw({"role": "assistant", "content": assistant}))
        self._messages.append(
            raw(
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": call.call_id,
                            "content": [{"type": "text", "text": result.text}],
                            "is_error": result.is_error,
                        }
                        for call, result in results
                    ],
                }
            )
        )
        self._body = None
        self._first = False


class _StreamRelay:
    """One upstream stream of the loop (see the module docstring)."""

    def __init__(self, conv: MessagesConversation, can_continue: bool) -> None:
        self.conv = conv
        self.can_continue = can_continue
        self.blocks: dict[int, _Block] = {}
        self.hidden: set[int] = set()
        self.index_map: dict[int, int] = {}
        self.client_calls = 0
        self.usage: dict[str, Any] = {}
        self.response_id: str | None = None
        self.continues = False
        self.decided = False

    def event(self, event: SSEEvent) -> bytes | None:
        """What the client gets for ``event``."""
        data = loads_object(event.data) if event.has_data else None
        if data is None:
            return event.raw
        kind = data.get("type")
        if kind == "message_start":
            message = as_dict(data.get("message"))
            self.response_id = _str(message.get("id"))
            usage = message.get("usage")
            self.usage = dict(usage) if isinstance(usage, dict) else {}
            return event.raw if self.conv._first else None
        if kind in ("content_block_start", "content_block_delta", "content_block_stop"):
            return self._block_event(event, kind, data)
        if kind == "message_delta":
            return self._message_delta(event, data)
        if kind == "message_stop":
            return None if self.continues else event.raw
        return event.raw

    def _block_event(self, event: SSEEvent, kind: str, data: dict[str, Any]) -> bytes | None:
        index = data.get("index")
        if not isinstance(index, int):
            return event.raw
        if kind == "content_block_start":
            start = data.get("content_block")
            block = _Block(dict(start) if isinstance(start, dict) else {})
            self.blocks[index] = block
            if block.data.get("type") == "tool_use":
                if self.conv._is_injected(block.data):
                    self.hidden.add(index)
                    return None
                self.client_calls += 1
            self.index_map[index] = self.conv._next_index
            self.conv._next_index += 1
        else:
            block = self.blocks.get(index) or _Block({})
            self.blocks.setdefault(index, block)
            if kind == "content_block_delta":
                delta = data.get("delta")
                if isinstance(delta, dict):
                    _apply_delta(block, delta)
            else:
                block.finish()
        if index in self.hidden:
            return None
        client_index = self.index_map.get(index, index)
        if client_index == index:
            return event.raw
        data["index"] = client_index
        return encode_event(event.event, data)

    def _pending(self) -> list[PendingCall]:
        calls = []
        for index in sorted(self.hidden):
            block = self.blocks[index]
            tool = self.conv.toolset.get(str(block.data.get("name")))
            if tool is not None:
                call = _pending(block.data, tool)
                call.complete = block.done
                calls.append(call)
        return calls

    def _message_delta(self, event: SSEEvent, data: dict[str, Any]) -> bytes | None:
        usage = data.get("usage")
        if isinstance(usage, dict):
            self.usage.update(usage)
        calls = self._pending()
        self.decided = True
        self.continues = (
            bool(calls)
            and all(c.complete for c in calls)
            and not self.client_calls
            and self.can_continue
        )
        if self.continues:
            return None
        changed = False
        if self.conv._prior_usage:
            data["usage"] = add_usage(self.conv._prior_usage, self.usage)
            changed = True
        delta = data.get("delta")
        if (
            calls
            and not self.client_calls
            and isinstance(delta, dict)
            and delta.get("stop_reason") == "tool_use"
        ):
            delta["stop_reason"] = "end_turn"
            changed = True
        return encode_event(event.event, data) if changed else event.raw

    def finish(self) -> tuple[TurnEnd, bytes | None]:
        """The turn's result (nothing is buffered)."""
        calls = self._pending()
        turn = TurnEnd(calls, self.client_calls, self.continues, self.response_id)
        if self.continues:
            self.conv._assistant = [self.blocks[i].data for i in sorted(self.blocks)]
            self.conv._prior_usage = add_usage(self.conv._prior_usage, self.usage)
        return turn, None


def _pending(block: dict[str, Any], tool: MCPTool) -> PendingCall:
    raw_input = block.get("_raw_input")
    arguments = raw_input if isinstance(raw_input, str) else orjson.dumps(block.get("input", {}))
    if isinstance(arguments, bytes):
        arguments = arguments.decode()
    return PendingCall(str(block.get("id", "")), tool, arguments)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
