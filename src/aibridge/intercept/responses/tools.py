"""OpenAI Responses with injected MCP tools (the adapter of
:mod:`aibridge.intercept.agentic`).

Request: the tools are appended to the client's as ``function`` tools (``strict``
false) and ``parallel_tool_calls`` is set to false; a string ``input`` becomes one user
message so turns can be appended; every other member keeps its bytes and position
(``previous_response_id`` included: the appended turns continue the same conversation).

Answer: a turn's events are buffered, since whether the turn is the last is only known at
its ``response.completed``; the last turn is sent as it came (its own ``id``, which the
client may use as ``previous_response_id``), with its ``usage`` replaced by the sum over
every turn (earlier turns are recorded but not shown). When that turn holds calls of
injected tools that were not run (the client's own tool was called too, or the cap was
reached), their items and events are removed from what the client gets. A blocking
answer is the last turn's body.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import orjson

from aibridge.intercept.injection import (
    ENCODER,
    FALSE,
    PendingCall,
    TurnEnd,
    as_list,
    encode_event,
    loads_object,
    raw,
    raw_list,
    tool_output_text,
)
from aibridge.intercept.request import decode_object
from aibridge.intercept.sse import SSEEvent
from aibridge.mcp.tools import ToolResult
from aibridge.mcp.toolset import Toolset

_CLIENT_CALL_TYPES = ("function_call", "custom_tool_call")
_TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def _definitions(toolset: Toolset) -> list[msgspec.Raw]:
    key = ("responses", "definitions")
    cached = toolset.derived.get(key)
    if cached is None:
        cached = toolset.derived[key] = [
            raw(
                {
                    "type": "function",
                    "name": t.id,
                    "description": t.description,
                    "parameters": t.input_schema,
                    "strict": False,
                }
            )
            for t in toolset.tools
        ]
    return list(cached)


class ResponsesConversation:
    """A Responses request run with injected tools."""

    def __init__(self, body: bytes, toolset: Toolset) -> None:
        top = decode_object(body, "body")
        top["tools"] = msgspec.Raw(
            ENCODER.encode(raw_list(top.get("tools"), "tools") + _definitions(toolset))
        )
        top["parallel_tool_calls"] = FALSE
        current = top.get("input")
        if current is not None and bytes(current).lstrip().startswith(b'"'):
            text = msgspec.json.decode(current)
            self._input = [raw({"role": "user", "content": text})]
        else:
            self._input = raw_list(current, "input")
        self._top = top
        self._body: bytes | None = ENCODER.encode(top)
        self.toolset = toolset
        self._output: list[Any] = []
        # The usage objects of the turns that continued (the client sees their sum).
        self._usages: list[dict[str, Any]] = []

    def body(self) -> bytes:
        """The next upstream body."""
        if self._body is None:
            self._top["input"] = msgspec.Raw(ENCODER.encode(self._input))
            self._body = ENCODER.encode(self._top)
        return self._body

    def stream_relay(self, can_continue: bool) -> _StreamRelay:
        """A relay for the next upstream stream."""
        return _StreamRelay(self, can_continue)

    def _turn(self, response: dict[str, Any], can_continue: bool) -> tuple[TurnEnd, set[str]]:
        """The turn a (completed) response is, and the ids of its injected items."""
        output = as_list(response.get("output"))
        calls: list[PendingCall] = []
        client = 0
        injected_items: set[str] = set()
        for item in output:
            if not isinstance(item, dict) or item.get("type") not in _CLIENT_CALL_TYPES:
                continue
            tool = (
                self.toolset.get(str(item.get("name")))
                if item.get("type") == "function_call"
                else None
            )
            if tool is None:
                client += 1
                continue
            calls.append(
                PendingCall(str(item.get("call_id", "")), tool, str(item.get("arguments") or ""))
            )
            if isinstance(item.get("id"), str):
                injected_items.add(item["id"])
        turn = TurnEnd(calls, client, response_id=_str(response.get("id")))
        turn.continues = (
            bool(calls) and not client and can_continue and response.get("status") == "completed"
        )
        if turn.continues:
            self._output = output
            usage = response.get("usage")
            if isinstance(usage, dict):
                self._usages.append(usage)
        return turn, injected_items

    def blocking_turn(self, data: bytes, can_continue: bool) -> tuple[TurnEnd, bytes]:
        """A whole response body: the turn, and the body the client gets if it is last."""
        body = loads_object(data)
        if body is None:
            return TurnEnd(), data
        turn, hidden = self._turn(body, can_continue)
        if turn.continues or not self._clean(body, hidden):
            return turn, data
        return turn, orjson.dumps(body)

    def _clean(self, response: dict[str, Any], hidden: set[str]) -> bool:
        """Remove the hidden items and the injected tool definitions (which a response
        echoes) from ``response``, and sum the earlier turns' usage into its own; True when
        something was changed."""
        changed = False
        usage = response.get("usage")
        if self._usages and isinstance(usage, dict):
            response["usage"] = _summed([*self._usages, usage])
            changed = True
        output = response.get("output")
        if isinstance(output, list) and hidden:
            kept = [i for i in output if not _is_hidden(i, hidden)]
            changed = len(kept) != len(output)
            response["output"] = kept
        tools = response.get("tools")
        if isinstance(tools, list):
            get = self.toolset.get
            kept_tools = [
                t
                for t in tools
                if not (
                    isinstance(t, dict) and t.get("type") == "function" and get(str(t.get("name")))
                )
            ]
            if len(kept_tools) != len(tools):
                response["tools"] = kept_tools
                changed = True
        return changed

    def extend(self, results: Sequence[tuple[PendingCall, ToolResult]]) -> None:
        """Append the model's output items and one ``function_call_output`` per result."""
        self._input.extend(raw(item) for item in self._output)
        for call, result in results:
            self._input.append(
                raw(
                    {
                        "type": "function_call_output",
                        "call_id": call.call_id,
                        "output": tool_output_text(result),
                    }
                )
            )
        self._body = None


def _summed(usages: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The last usage object with every integer (nested details too) summed over all."""
    total = dict(usages[-1])
    for key, value in total.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            total[key] = sum(
                u[key]
                for u in usages
                if isinstance(u.get(key), int) and not isinstance(u.get(key), bool)
            )
        elif isinstance(value, dict):
            total[key] = _summed([u[key] for u in usages if isinstance(u.get(key), dict)])
    return total


def _is_hidden(item: Any, hidden: set[str]) -> bool:
    return isinstance(item, dict) and item.get("id") in hidden


class _StreamRelay:
    """One upstream stream of the loop, buffered until its terminal event."""

    def __init__(self, conv: ResponsesConversation, can_continue: bool) -> None:
        self.conv = conv
        self.can_continue = can_continue
        self.events: list[SSEEvent] = []
        self.response: dict[str, Any] | None = None
        self.response_id: str | None = None

    def event(self, event: SSEEvent) -> bytes | None:
        """Buffer ``event``; remember the response once it is complete."""
        self.events.append(event)
        if event.event in _TERMINAL or b'"response.' in event.data[:40]:
            data = loads_object(event.data) if event.has_data else None
            if data is not None:
                response = data.get("response")
                if isinstance(response, dict):
                    self.response_id = self.response_id or _str(response.get("id"))
                    if data.get("type") in _TERMINAL:
                        self.response = response
        return None

    def finish(self) -> tuple[TurnEnd, bytes | None]:
        """The turn; the buffered events when it is the last (without hidden items)."""
        if self.response is None:
            return TurnEnd(response_id=self.response_id), b"".join(e.raw for e in self.events)
        turn, hidden = self.conv._turn(self.response, self.can_continue)
        if turn.continues:
            return turn, None
        return turn, b"".join(self._client_bytes(e, hidden) for e in self.events)

    def _client_bytes(self, event: SSEEvent, hidden: set[str]) -> bytes:
        """``event`` as the client gets it: dropped when it is about a hidden item; its
        response object without hidden items and injected tool definitions."""
        if not hidden and b'"response":' not in event.data:
            return event.raw
        data = loads_object(event.data) if event.has_data else None
        if data is None:
            return event.raw
        item = data.get("item")
        if data.get("item_id") in hidden or (isinstance(item, dict) and item.get("id") in hidden):
            return b""
        response = data.get("response")
        if isinstance(response, dict) and self.conv._clean(response, hidden):
            return encode_event(event.event, data)
        return event.raw


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
