"""The Chat Completions API's error shape in a stream: a chunk carrying OpenAI's error object
(the same object as its HTTP error bodies, :func:`aibridge.intercept.errors.openai_error`),
then ``data: [DONE]``.

Chat streams name no events; SDKs recognise an error by the top-level ``error`` key.
"""

from __future__ import annotations

from aibridge.intercept.errors import openai_error
from aibridge.intercept.sse import CHAT_DONE, encode_event


def stream_error(message: str, kind: str) -> bytes:
    """``data: {"error":{"message","type":"server_error","param":null,"code":kind}}`` and
    the ``[DONE]`` terminator, as OpenAI ends a stream."""
    return encode_event(openai_error(message, "server_error", kind)) + CHAT_DONE
