"""The Messages API's error shape in a stream: an ``error`` event carrying Anthropic's error
object (the same object as its HTTP error bodies,
:func:`aibridge.intercept.errors.anthropic_error`)."""

from __future__ import annotations

from aibridge.intercept.errors import anthropic_error
from aibridge.intercept.sse import encode_event


def stream_error(message: str, kind: str) -> bytes:
    """``event: error`` + ``{"type":"error","error":{"type":kind,"message":…}}``."""
    return encode_event(anthropic_error(kind, message), "error")
