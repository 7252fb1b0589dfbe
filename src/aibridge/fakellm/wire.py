"""Wire-format helpers shared by the three APIs: SSE events, JSON encoding, prompt lookup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class SSEEvent:
    """One server-sent event. ``name`` None means a ``data:``-only event (Chat Completions)."""

    name: str | None
    data: dict[str, Any] | str
    is_delta: bool = False
    """Whether this event carries generated content (used to place errors/drops/stalls)."""

    def encode(self) -> bytes:
        """The event's bytes: ``event: <name>\\ndata: <json>\\n\\n`` (or ``data:`` only)."""
        payload = self.data.encode() if isinstance(self.data, str) else dumps(self.data)
        head = b"event: " + self.name.encode() + b"\n" if self.name else b""
        return head + b"data: " + payload + b"\n\n"


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes."""
    return orjson.dumps(obj)


def cut_index(events: list[SSEEvent], deltas_before: int) -> int:
    """How many events to send before an interruption: through the ``deltas_before``-th
    content delta (or the last delta when there are fewer; at least one event)."""
    seen, last = 0, 0
    for i, ev in enumerate(events):
        if ev.is_delta:
            seen += 1
            last = i + 1
            if seen >= deltas_before:
                return i + 1
    return max(last, 1)


def _text_of(content: Any, part_types: tuple[str, ...]) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            p.get("text", "")
            for p in content
            if isinstance(p, dict)
            and p.get("type") in part_types
            and isinstance(p.get("text"), str)
        ]
        return "\n".join(texts)
    return ""


def last_user_text(body: dict[str, Any]) -> str:
    """Text of the last user message in a Messages, Chat or Responses request body."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for msg in reversed(messages):
            if isinstance(msg, dict) and msg.get("role") == "user":
                return _text_of(msg.get("content"), ("text",))
        return ""
    inp = body.get("input")
    if isinstance(inp, str):
        return inp
    if isinstance(inp, list):
        for item in reversed(inp):
            if isinstance(item, dict) and item.get("role") == "user":
                return _text_of(item.get("content"), ("input_text", "text"))
    return ""
