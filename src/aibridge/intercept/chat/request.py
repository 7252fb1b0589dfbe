"""Decoding an OpenAI ``/v1/chat/completions`` request body, and its one body edit."""

from __future__ import annotations

from typing import Any

import msgspec

from aibridge.intercept.request import (
    RequestInfo,
    decode_last,
    decode_object,
    decode_top,
    last_text,
    output_cap,
)


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class _ChatBody(msgspec.Struct):
    model: str | None = None
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    messages: list[msgspec.Raw] | None = None
    max_completion_tokens: Any = None
    max_tokens: Any = None


_DECODER = msgspec.json.Decoder(_ChatBody)
_ENCODER = msgspec.json.Encoder()
_TRUE = msgspec.Raw(b"true")


def decode_chat_request(body: bytes) -> RequestInfo:
    """Decode an OpenAI ``/v1/chat/completions`` request body.

    Prompt: the last message, if its role is ``user``: its string content or its last
    ``text`` part. A last message with role ``tool`` gives the correlating tool-call id.
    """
    top = decode_top(_DECODER, body)
    prompt = correlating = None
    last = decode_last(top.messages)
    if last is not None:
        if last.role == "user":
            if isinstance(last.content, str):
                prompt = last.content
            elif last.content:
                prompt = last_text(last.content, "text")
        elif last.role == "tool" and isinstance(last.tool_call_id, str):
            correlating = last.tool_call_id
    return RequestInfo(
        api="chat",
        model=top.model,
        stream=bool(top.stream),
        prompt=prompt,
        include_usage=top.stream_options.include_usage if top.stream_options else None,
        correlating_tool_call_id=correlating,
        max_output_tokens=output_cap(top.max_completion_tokens, top.max_tokens),
    )


def ensure_include_usage(body: bytes) -> bytes:
    """Streaming: set ``stream_options.include_usage = true`` so usage can be recorded.

    Only the top-level object and ``stream_options`` are re-encoded: every other member's
    bytes are copied unchanged (key order kept, a new ``stream_options`` appended). The
    caller checks :attr:`RequestInfo.include_usage` first (no edit when already true) and,
    when the client did not ask for usage, hides the extra usage chunk from it.
    """
    top = decode_object(body, "body")
    current = top.get("stream_options")
    options: dict[str, msgspec.Raw] = {}
    if current is not None and bytes(current).strip() != b"null":
        options = decode_object(current, "stream_options")
    options["include_usage"] = _TRUE
    top["stream_options"] = msgspec.Raw(_ENCODER.encode(options))
    return _ENCODER.encode(top)
