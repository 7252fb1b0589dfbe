"""Running the response observers over bytes, as the relay does (extraction tests)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import orjson

from aibridge.intercept.observations import Observation, StreamObserver
from aibridge.intercept.sse import SSEParser


def observe_chunks(
    make_observer: Callable[[], StreamObserver], chunks: Iterable[bytes]
) -> Observation:
    """Feed ``chunks`` through the SSE parser to a fresh observer, as they would arrive from
    the network; return what it observed."""
    parser = SSEParser()
    observer = make_observer()
    for chunk in chunks:
        for event in parser.feed(chunk):
            observer.observe(event)
    for event in parser.flush():
        observer.observe(event)
    return observer.result()


def observe_stream(
    make_observer: Callable[[], StreamObserver], stream: bytes, chunk_size: int | None = None
) -> Observation:
    """Run ``stream`` through the SSE parser (in chunks of ``chunk_size`` bytes, or all at
    once) and a fresh observer; return what it observed."""
    size = chunk_size or len(stream)
    return observe_chunks(
        make_observer, (stream[i : i + size] for i in range(0, len(stream), size))
    )


def random_chunks(data: bytes, seed: int, max_size: int = 16) -> list[bytes]:
    """``data`` cut into pieces of 1 to ``max_size`` bytes at places chosen by ``seed`` (the
    same seed always cuts the same way, so a failure can be replayed)."""
    rng = random.Random(seed)
    chunks: list[bytes] = []
    pos = 0
    while pos < len(data):
        size = rng.randint(1, max_size)
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


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
