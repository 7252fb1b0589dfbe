"""Shared pieces of MCP tool injection: what one upstream turn produced, the per-API
adapter protocol, and small JSON helpers the adapters share.

The per-API adapters (``intercept/<api>/tools.py``) edit the request (add the tools,
disable parallel tool calls), relay or hide what each upstream turn says, and extend the
conversation with the model's turn and the tools' results; the loop that drives them is
:mod:`aibridge.intercept.agentic`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import orjson

from aibridge.intercept.request import RequestDecodeError
from aibridge.intercept.sse import SSEEvent
from aibridge.mcp.tools import MCPTool, ToolResult

ENCODER = msgspec.json.Encoder()
TRUE = msgspec.Raw(b"true")
FALSE = msgspec.Raw(b"false")


@dataclass(slots=True)
class PendingCall:
    """A call to an injected tool the model made in one turn.

    ``complete`` is False when the turn ended before the call was whole (its arguments
    may be cut): such a call is never executed.
    """

    call_id: str
    tool: MCPTool
    arguments_raw: str
    complete: bool = True


@dataclass(slots=True)
class Invocation:
    """One injected call as the hooks see it (recorded as a tool usage, counted).

    ``error`` is the invocation error (the call failed or was not made), None when the
    MCP server answered (even with an error result the model then sees); ``invoked`` is
    False for a call the gateway decided not to make (cap reached, client tool in the
    same turn, cut arguments).
    """

    call_id: str
    tool: MCPTool
    arguments_raw: str
    response_id: str | None
    error: str | None
    invoked: bool = True

    @property
    def name(self) -> str:
        """The tool's own name on its MCP server."""
        return self.tool.name

    @property
    def server_url(self) -> str:
        """The MCP server's URL."""
        return self.tool.server_url

    @property
    def server_name(self) -> str:
        """The MCP server's configured name."""
        return self.tool.server_name


@dataclass(slots=True)
class TurnEnd:
    """What one upstream turn produced.

    ``calls``: the injected calls; ``client_calls``: how many calls of the client's own
    tools the client was shown; ``continues``: whether the loop runs the calls and asks
    the model again (decided by the relay, which must hide the turn's end if so).
    """

    calls: list[PendingCall] = field(default_factory=list)
    client_calls: int = 0
    continues: bool = False
    response_id: str | None = None


class TurnRelay(Protocol):
    """Relays one upstream stream of the loop, event by event."""

    def event(self, event: SSEEvent) -> bytes | None:
        """The bytes to send the client for ``event`` now (None: nothing)."""

    def finish(self) -> tuple[TurnEnd, bytes | None]:
        """The turn's result, and bytes still to send (a buffered turn) or None."""


class Conversation(Protocol):
    """A request being run with injected tools (one per client request)."""

    def body(self) -> bytes:
        """The body of the next upstream request."""

    def stream_relay(self, can_continue: bool) -> TurnRelay:
        """A relay for the next upstream stream; ``can_continue`` is False on the last
        turn the iteration cap allows."""

    def blocking_turn(self, data: bytes, can_continue: bool) -> tuple[TurnEnd, bytes]:
        """A whole upstream body: the turn's result and the body the client gets if it
        is the last."""

    def extend(self, results: Sequence[tuple[PendingCall, ToolResult]]) -> None:
        """Add the last turn and the tools' results to the conversation."""


def add_usage(total: Mapping[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    """``total`` plus ``more``: numbers added key by key (nested objects too); any other
    value is taken from ``more``."""
    out = dict(total)
    for key, value in more.items():
        if isinstance(value, bool) or value is None:
            out.setdefault(key, value)
        elif isinstance(value, int | float):
            prior = out.get(key)
            out[key] = (
                value + prior
                if isinstance(prior, int | float) and not isinstance(prior, bool)
                else value
            )
        elif isinstance(value, Mapping):
            prior = out.get(key)
            out[key] = add_usage(prior if isinstance(prior, Mapping) else {}, value)
        else:
            out[key] = value
    return out


def encode_event(name: str | None, data: Any) -> bytes:
    """An SSE event (``event:`` line when named) with ``data`` as compact JSON."""
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


def loads_object(data: bytes) -> dict[str, Any] | None:
    """``data`` as a JSON object, or None."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def raw_list(raw: msgspec.Raw | None, what: str) -> list[msgspec.Raw]:
    """A JSON array member as its elements' raw bytes (absent or null: empty)."""
    if raw is None or bytes(raw).strip() == b"null":
        return []
    try:
        return msgspec.json.decode(raw, type=list[msgspec.Raw])
    except msgspec.DecodeError as exc:
        raise RequestDecodeError(f"{what} must be an array") from exc


def as_list(value: Any) -> list[Any]:
    """``value`` when it is a list, else an empty list."""
    return value if isinstance(value, list) else []


def raw(value: Any) -> msgspec.Raw:
    """``value`` encoded as a raw JSON member."""
    return msgspec.Raw(orjson.dumps(value))


def tool_output_text(result: ToolResult) -> str:
    """A result as the text an OpenAI model reads (an MCP error result says so)."""
    if result.is_error and result.error is None:
        return f"Tool error: {result.text}"
    return result.text
