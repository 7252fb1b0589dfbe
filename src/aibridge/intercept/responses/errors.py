"""The Responses API's error shape in a stream: an ``error`` event whose data is
``{"type":"error","code","message","param"}`` (its HTTP error bodies are OpenAI's error
object, :func:`aibridge.intercept.errors.openai_error`)."""

from __future__ import annotations

import orjson

from aibridge.intercept.sse import encode_event


def stream_error(message: str, kind: str) -> bytes:
    """``event: error`` + ``{"type":"error","code":kind,"message":…,"param":null}``."""
    body = {"type": "error", "code": kind, "message": message, "param": None}
    return encode_event(orjson.dumps(body), "error")
