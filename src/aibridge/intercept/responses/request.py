"""Decoding an OpenAI ``/v1/responses`` request body (the fields the gateway needs)."""

from __future__ import annotations

from typing import Any

import msgspec

from aibridge.intercept.request import RequestInfo, decode_last, decode_top, output_cap


class _ResponsesBody(msgspec.Struct):
    model: str | None = None
    stream: bool | None = None
    background: bool | None = None
    input: str | list[msgspec.Raw] | None = None
    max_output_tokens: Any = None


_DECODER = msgspec.json.Decoder(_ResponsesBody)
_TOOL_OUTPUT_TYPES = ("function_call_output", "custom_tool_call_output")


def decode_responses_request(body: bytes) -> RequestInfo:
    """Decode an OpenAI ``/v1/responses`` request body.

    Prompt: ``input`` when it is a string; otherwise the last input item, if its role is
    ``user``: its string content, or all its ``input_text`` parts joined with newlines.
    A last item of type ``function_call_output`` gives the correlating tool-call id.
    """
    top = decode_top(_DECODER, body)
    prompt = correlating = None
    if isinstance(top.input, str):
        prompt = top.input
    else:
        last = decode_last(top.input)
        if last is not None:
            if last.role == "user" and last.type in (None, "message"):
                if isinstance(last.content, str):
                    prompt = last.content
                elif last.content:
                    texts = [
                        p.text
                        for p in last.content
                        if p.type == "input_text" and isinstance(p.text, str)
                    ]
                    prompt = "\n".join(texts) if texts else None
            elif last.type in _TOOL_OUTPUT_TYPES and isinstance(last.call_id, str):
                correlating = last.call_id
    return RequestInfo(
        api="responses",
        model=top.model,
        stream=bool(top.stream),
        prompt=prompt,
        correlating_tool_call_id=correlating,
        background=bool(top.background),
        max_output_tokens=output_cap(top.max_output_tokens),
    )
