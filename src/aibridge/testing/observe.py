"""Helpers shared by the extraction tests (Anthropic Messages, OpenAI Chat and Responses)."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from aibridge.intercept.observations import Observation, StreamObserver
from aibridge.intercept.sse import SSEParser


def observe_stream(
    make_observer: Callable[[], StreamObserver], stream: bytes, chunk_size: int | None = None
) -> Observation:
    """Run ``stream`` through the SSE parser (in chunks of ``chunk_size`` bytes, or all at
    once) and a fresh observer; return what it observed."""
    parser = SSEParser()
    observer = make_observer()
    size = chunk_size or len(stream)
    for i in range(0, len(stream), size):
        for event in parser.feed(stream[i : i + size]):
            observer.observe(event)
    for event in parser.flush():
        observer.observe(event)
    return observer.result()


def openai_error_body(message: str, param: str | None, code: str) -> bytes:
    """An OpenAI ``{"error": {…}}`` envelope of type ``invalid_request_error``."""
    return orjson.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": code,
            }
        }
    )
