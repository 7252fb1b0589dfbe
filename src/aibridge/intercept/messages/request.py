"""Decoding an Anthropic ``/v1/messages`` request body (the fields the gateway needs)."""

from __future__ import annotations

from typing import Any

import msgspec

from aibridge.intercept.request import (
    RequestInfo,
    decode_last,
    decode_top,
    last_text,
    output_cap,
)


class _Metadata(msgspec.Struct):
    user_id: str | None = None


class _MessagesBody(msgspec.Struct):
    model: str | None = None
    stream: bool | None = None
    metadata: _Metadata | None = None
    messages: list[msgspec.Raw] | None = None
    max_tokens: Any = None


_DECODER = msgspec.json.Decoder(_MessagesBody)


def decode_messages_request(body: bytes) -> RequestInfo:
    """Decode an Anthropic ``/v1/messages`` request body.

    Prompt: the last message, if its role is ``user``: its string content, or its last
    ``text`` block (Claude Code puts ``<system-reminder>`` blocks before the typed prompt).
    A message of only ``tool_result`` blocks is not a prompt; its last ``tool_use_id`` is the
    correlating tool-call id.
    """
    top = decode_top(_DECODER, body)
    prompt = correlating = None
    last = decode_last(top.messages)
    if last is not None:
        content = last.content
        if last.role == "user":
            if isinstance(content, str):
                prompt = content
            elif content:
                prompt = last_text(content, "text")
        if isinstance(content, list):
            for part in reversed(content):
                if part.type == "tool_result" and isinstance(part.tool_use_id, str):
                    correlating = part.tool_use_id
                    break
    return RequestInfo(
        api="messages",
        model=top.model,
        stream=bool(top.stream),
        prompt=prompt,
        user_id=top.metadata.user_id if top.metadata else None,
        correlating_tool_call_id=correlating,
        max_output_tokens=output_cap(top.max_tokens),
    )
