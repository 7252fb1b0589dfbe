"""OpenAI Chat Completions with injected MCP tools (the adapter of
:mod:`aibridge.intercept.agentic`).

Request: the tools are appended to the client's as ``function`` tools and
``parallel_tool_calls`` is set to false; every other member keeps its bytes and position.

Stream: chunks are relayed as they come, except: tool-call deltas of injected tools are
dropped (a chunk left with nothing to say is not sent); the client's own tool calls keep
client-side indexes 0, 1…; a turn that continues the loop hides its finish chunk, its
usage chunk and ``[DONE]``; chunks of later turns carry the first turn's ``id``; the
usage the client sees (when it asked for it) is the sum over all turns (each turn's last
usage, since some providers send running totals). When injected calls were hidden and
the client is left with none of its own, ``finish_reason`` ``tool_calls`` becomes
``stop``. A blocking answer is the last turn's body with the same edits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from aibridge.intercept.injection import (
    ENCODER,
    FALSE,
    PendingCall,
    TurnEnd,
    add_usage,
    as_list,
    encode_event,
    loads_object,
    raw,
    raw_list,
    tool_output_text,
)
from aibridge.intercept.observations import as_dict
from aibridge.intercept.request import decode_object
from aibridge.intercept.sse import SSEEvent
from aibridge.mcp.tools import ToolResult
from aibridge.mcp.toolset import Toolset


def _definitions(toolset: Toolset) -> list[msgspec.Raw]:
    key = ("chat", "definitions")
    cached = toolset.derived.get(key)
    if cached is None:
        cached = toolset.derived[key] = [
            raw(
                {
                    "type": "function",
                    "function": {
                        "name": t.id,
                        "description": t.description,
                        "parameters": t.input_schema,
                    },
                }
            )
            for t in toolset.tools
        ]
    return list(cached)


@dataclass(slots=True)
class _Call:
    id: str = ""
    name: str = ""
    arguments: str = ""
    injected: bool | None = None
    client_index: int | None = None


class ChatConversation:
    """A Chat Completions request run with injected tools."""

    def __init__(self, body: bytes, toolset: Toolset, *, hide_usage: bool = False) -> None:
        top = decode_object(body, "body")
        top["tools"] = msgspec.Raw(
            ENCODER.encode(raw_list(top.get("tools"), "tools") + _definitions(toolset))
        )
        top["parallel_tool_calls"] = FALSE
        self._top = top
        self._messages = raw_list(top.get("messages"), "messages")
        self._body: bytes | None = ENCODER.encode(top)
        self.toolset = toolset
        self.hide_usage = hide_usage
        self._first_id: str | None = None
        self._prior_usage: dict[str, Any] = {}
        self._assistant: dict[str, Any] = {}

    def body(self) -> bytes:
        """The next upstream body."""
        if self._body is None:
            self._top["messages"] = msgspec.Raw(ENCODER.encode(self._messages))
            self._body = ENCODER.encode(self._top)
        return self._body

    def stream_relay(self, can_continue: bool) -> _StreamRelay:
        """A relay for the next upstream stream."""
        return _StreamRelay(self, can_continue)

    def blocking_turn(self, data: bytes, can_continue: bool) -> tuple[TurnEnd, bytes]:
        """A whole response body: the turn, and the body the client gets if it is last."""
        body = loads_object(data)
        choices = body.get("choices") if body is not None else None
        if body is None or not isinstance(choices, list) or not choices:
            return TurnEnd(), data
        choice = as_dict(choices[0])
        message = as_dict(choice.get("message"))
        tool_calls = as_list(message.get("tool_calls"))
        calls: list[PendingCall] = []
        client = []
        for tc in tool_calls:
            fn = tc.get("function") if isinstance(tc, dict) else None
            tool = self.toolset.get(str(fn.get("name"))) if isinstance(fn, dict) else None
            if tool is None or not isinstance(fn, dict):
                client.append(tc)
                continue
            calls.append(PendingCall(str(tc.get("id", "")), tool, str(fn.get("arguments") or "")))
        usage = as_dict(body.get("usage"))
        turn = TurnEnd(calls, len(client), response_id=_str(body.get("id")))
        turn.continues = bool(calls) and not client and can_continue
        if turn.continues:
            self._assistant = message
            self._prior_usage = add_usage(self._prior_usage, usage)
            return turn, data
        if not calls and not self._prior_usage:
            return turn, data
        if calls:
            if client:
                message["tool_calls"] = client
            else:
                message.pop("tool_calls", None)
                if choice.get("finish_reason") == "tool_calls":
                    choice["finish_reason"] = "stop"
        if self._prior_usage and usage:
            body["usage"] = add_usage(self._prior_usage, usage)
        return turn, orjson.dumps(body)

    def extend(self, results: Sequence[tuple[PendingCall, ToolResult]]) -> None:
        """Append the model's turn and one ``tool`` message per result."""
        self._messages.append(raw(self._assistant))
        for call, result in results:
            self._messages.append(
                raw(
                    {
                        "role": "tool",
                        "tool_call_id": call.call_id,
                        "content": tool_output_text(result),
                    }
                )
            )
        self._body = None


class _StreamRelay:
    """One upstream stream of the loop (see the module docstring)."""

    def __init__(self, conv: ChatConversation, can_continue: bool) -> None:
        self.conv = conv
        self.can_continue = can_continue
        self.calls: dict[int, _Call] = {}
        self.client_calls = 0
        self.text: list[str] = []
        self.role = "assistant"
        self.usage: dict[str, Any] | None = None
        self.response_id: str | None = None
        self.continues = False
        self.finished = False

    def _pending(self) -> list[PendingCall]:
        calls = []
        for index in sorted(self.calls):
            call = self.calls[index]
            if call.injected:
                tool = self.conv.toolset.get(call.name)
                if tool is not None:
                    calls.append(PendingCall(call.id, tool, call.arguments))
        return calls

    def event(self, event: SSEEvent) -> bytes | None:
        """What the client gets for ``event``."""
        if event.data.strip() == b"[DONE]":
            return None if self.continues else event.raw
        data = loads_object(event.data) if event.has_data else None
        if data is None:
            return event.raw
        changed = False
        chunk_id = _str(data.get("id"))
        if self.response_id is None:
            self.response_id = chunk_id
        if self.conv._first_id is None:
            self.conv._first_id = chunk_id
        elif chunk_id is not None and chunk_id != self.conv._first_id:
            data["id"] = self.conv._first_id
            changed = True
        usage = data.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = data.get("choices")
        if isinstance(choices, list) and choices:
            result = self._choices(data, choices)
            if result is None:
                return None
            changed = changed or result
        if isinstance(usage, dict):
            if self.continues:
                return None
            if self.conv.hide_usage and not choices:
                return None
            if self.conv._prior_usage:
                data["usage"] = add_usage(self.conv._prior_usage, usage)
                changed = True
        return encode_event(event.event, data) if changed else event.raw

    def _choices(self, data: dict[str, Any], choices: list[Any]) -> bool | None:
        """Edit the chunk's first choice; None when the chunk must not be sent."""
        choice = choices[0]
        if not isinstance(choice, dict):
            return False
        changed = False
        delta = choice.get("delta")
        if isinstance(delta, dict):
            if isinstance(delta.get("role"), str):
                self.role = delta["role"]
            if isinstance(delta.get("content"), str):
                self.text.append(delta["content"])
            tool_calls = delta.get("tool_calls")
            if isinstance(tool_calls, list) and tool_calls:
                kept = [tc for tc in tool_calls if self._track(tc)]
                moved = [tc for tc in kept if self._client_index(tc) != tc.get("index")]
                if len(kept) != len(tool_calls) or moved:
                    for tc in moved:
                        tc["index"] = self._client_index(tc)
                    if kept:
                        delta["tool_calls"] = kept
                    else:
                        del delta["tool_calls"]
                    changed = True
                    if (
                        not kept
                        and not delta.get("content")
                        and choice.get("finish_reason") is None
                        and not data.get("usage")
                    ):
                        return None
        finish = choice.get("finish_reason")
        if finish is not None and not self.finished:
            self.finished = True
            pending = self._pending()
            self.continues = bool(pending) and not self.client_calls and self.can_continue
            if self.continues:
                return None
            if pending and not self.client_calls and finish == "tool_calls":
                choice["finish_reason"] = "stop"
                changed = True
        elif finish is not None and self.continues:
            return None
        return changed

    def _client_index(self, tc: dict[str, Any]) -> Any:
        """The index the client sees for a kept tool-call delta."""
        index = tc.get("index")
        call = self.calls.get(index) if isinstance(index, int) else None
        if call is None or call.client_index is None:
            return index
        return call.client_index

    def _track(self, tc: Any) -> bool:
        """Accumulate one tool-call delta; True when the client may see it."""
        if not isinstance(tc, dict):
            return True
        index = tc.get("index")
        if not isinstance(index, int):
            return True
        call = self.calls.get(index)
        if call is None:
            call = self.calls[index] = _Call()
        if isinstance(tc.get("id"), str) and tc["id"]:
            call.id = tc["id"]
        fn = tc.get("function")
        if isinstance(fn, dict):
            if isinstance(fn.get("name"), str):
                call.name += fn["name"]
            if isinstance(fn.get("arguments"), str):
                call.arguments += fn["arguments"]
        if call.injected is None and call.name:
            call.injected = self.conv.toolset.get(call.name) is not None
            if not call.injected:
                call.client_index = self.client_calls
                self.client_calls += 1
        return not call.injected

    def finish(self) -> tuple[TurnEnd, bytes | None]:
        """The turn's result (nothing is buffered)."""
        turn = TurnEnd(self._pending(), self.client_calls, self.continues, self.response_id)
        if self.continues:
            self.conv._assistant = {
                "role": "assistant",
                "content": "".join(self.text) or None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                    for _, call in sorted(self.calls.items())
                    if call.id
                ],
            }
            self.conv._prior_usage = add_usage(self.conv._prior_usage, self.usage or {})
        return turn, None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
