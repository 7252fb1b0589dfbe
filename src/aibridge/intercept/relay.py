"""Relaying an upstream response to the client; each relay returns its outcome as a value.

* :func:`relay_error`: an upstream error status, body relayed unchanged (bounded);
* :func:`relay_blocking`: a whole body, relayed unchanged and observed on the side;
* :func:`relay_stream`: an SSE stream, event by event with each event's original bytes,
  parsed on the side; an upstream failure mid-stream ends it with the API's error event.

What a response said goes to the ``observed`` hook. A stream whose client leaves
(aiohttp cancels the handler) is observed all the same — usage is billed — and settles
its outcome on the interception before the cancellation propagates (see
:attr:`Interception.interrupted`).
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import orjson
from aiohttp import web

from aibridge.intercept.api import API
from aibridge.intercept.errors import (
    error_response,
    error_type_for_event,
    error_type_for_status,
    event_kind,
)
from aibridge.intercept.hooks import InterceptionHooks
from aibridge.intercept.interception import CLIENT_GONE, COMPLETED, Interception, Outcome
from aibridge.intercept.observations import Observation
from aibridge.intercept.sse import SSEParser
from aibridge.intercept.upstream_headers import response_headers_for_client
from aibridge.providers.upstream import UpstreamBodyTooLarge, read_capped, size_text
from aibridge.recording.records import ErrorType

log = logging.getLogger(__name__)


class _EventTooLarge(Exception):
    """An upstream stream event outgrew the buffer the relay allows for one event."""


STREAM_TRANSPORT_ERRORS = (
    TimeoutError,
    aiohttp.ServerTimeoutError,
    aiohttp.ClientPayloadError,
    aiohttp.ClientConnectionError,
    ConnectionResetError,
)
"""What a stream relay's reads and writes raise when a connection stalls or breaks."""


def stream_transport_failure(exc: BaseException, request: web.Request) -> Outcome:
    """The outcome of a stream that ``exc`` (one of :data:`STREAM_TRANSPORT_ERRORS`) ended:
    the upstream stalled, the upstream broke, or the client went away (its transport is
    gone, or writing to it was reset)."""
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return Outcome("timeout", "upstream stream stalled (no data before the timeout)")
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientConnectionError):
        if isinstance(exc, aiohttp.ClientConnectionResetError) and request.transport is None:
            return CLIENT_GONE
        return Outcome("server_error", f"upstream stream broke: {type(exc).__name__}")
    return CLIENT_GONE


def upstream_failure(
    ix: Interception, status: int, error_type: ErrorType, message: str, detail: str | None = None
) -> tuple[web.Response, Outcome]:
    """Answer ``message`` with ``status``; ``detail`` (hosts, ports, OS errors) goes only to
    the log and the end record."""
    log.warning(
        "upstream request failed",
        extra={
            "provider": ix.provider.name,
            "interception_id": str(ix.id),
            "error": detail or message,
        },
    )
    return error_response(ix.provider.family, status, message), Outcome(
        error_type, detail or message
    )


def _too_large(
    ix: Interception, what: str, limit: int, setting: str
) -> tuple[web.Response, Outcome]:
    """Relaying an answer over its cap would mean buffering it: a 502 that says why."""
    return upstream_failure(
        ix,
        502,
        "server_error",
        f"{what} was larger than the {size_text(limit)} limit ({setting}); not relayed",
    )


def _relayed(upstream: aiohttp.ClientResponse, data: bytes) -> web.Response:
    """The upstream's status, headers and (decompressed) body, unchanged."""
    return web.Response(
        status=upstream.status,
        body=data,
        headers=response_headers_for_client(upstream.headers, decompressed=True),
    )


def _error_message(data: bytes, limit: int = 500) -> str:
    """Best-effort message from a provider error body (for the end record)."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data[:limit].decode(errors="replace")
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:limit]
        if isinstance(obj.get("message"), str):
            return str(obj["message"])[:limit]
    return data[:limit].decode(errors="replace")


async def relay_error(
    ix: Interception, upstream: aiohttp.ClientResponse, limit: int
) -> tuple[web.Response, Outcome]:
    """An upstream error answer, relayed unchanged when it fits in ``limit`` bytes."""
    try:
        data = await read_capped(upstream, limit)
    except UpstreamBodyTooLarge as exc:
        what = f"upstream error response (HTTP {upstream.status})"
        return _too_large(ix, what, exc.limit, "AIBRIDGE_MAX_UPSTREAM_ERROR_BYTES")
    outcome = Outcome(error_type_for_status(upstream.status), _error_message(data))
    return _relayed(upstream, data), outcome


async def relay_blocking(
    ix: Interception,
    upstream: aiohttp.ClientResponse,
    api: API,
    hooks: InterceptionHooks,
    limit: int,
) -> tuple[web.Response, Outcome]:
    """A whole response body, relayed unchanged when it fits in ``limit`` bytes."""
    try:
        data = await read_capped(upstream, limit)
    except UpstreamBodyTooLarge as exc:
        return _too_large(ix, "upstream response", exc.limit, "AIBRIDGE_MAX_UPSTREAM_BODY_BYTES")
    except (TimeoutError, aiohttp.ServerTimeoutError):
        return upstream_failure(ix, 504, "timeout", "upstream timed out sending the response")
    except aiohttp.ClientError as exc:
        # The body broke off after the headers: never relay half a body (or a bare 500).
        return upstream_failure(
            ix, 502, "server_error", f"upstream response broke: {type(exc).__name__}"
        )
    hooks.observed(ix, api.observe_body(data))
    return _relayed(upstream, data), COMPLETED


def stream_outcome(result: Observation) -> Outcome:
    """How a stream that reached its end (or the client's departure) ended, judged from what
    was observed: an upstream error event, no terminal event, or complete."""
    if result.error is not None:
        return Outcome(error_type_for_event(result.error.type), result.error.message)
    if not result.completed:
        return Outcome("server_error", "upstream stream ended without a terminal event")
    return COMPLETED


async def relay_stream(
    ix: Interception,
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    api: API,
    hooks: InterceptionHooks,
    *,
    hide_usage: bool,
    max_event: int,
) -> tuple[web.StreamResponse, Outcome]:
    """Relay an SSE stream event by event; ``hide_usage`` drops the usage-only events the
    gateway asked for; one event may hold at most ``max_event`` bytes."""
    out = web.StreamResponse(
        status=upstream.status,
        headers=response_headers_for_client(upstream.headers, decompressed=True),
    )
    out.headers["Cache-Control"] = "no-cache"
    out.headers["X-Accel-Buffering"] = "no"
    await out.prepare(request)
    parser = SSEParser()
    observer = api.stream_observer()
    # ``readany`` in a plain loop, not ``iter_chunked``: one await per chunk instead of an
    # async-iterator frame plus a ``read(n)`` frame; the chunk is whatever arrived.
    read = upstream.content.readany
    writing = False
    failure: Outcome | None = None
    try:
        try:
            while chunk := await read():
                events = parser.feed(chunk)
                if events:
                    pieces = []
                    for event in events:
                        observer.observe(event)
                        if hide_usage and api.is_usage_only(event):
                            continue
                        pieces.append(event.raw)
                    if pieces:
                        writing = True
                        await out.write(b"".join(pieces))
                        writing = False
                # An event is held until its blank line arrives: bound what it may hold.
                if parser.pending > max_event:
                    raise _EventTooLarge
            for event in parser.flush():
                observer.observe(event)
                writing = True
                await out.write(event.raw)
                writing = False
        except _EventTooLarge:
            failure = Outcome(
                "server_error",
                f"upstream sent a stream event larger than the {size_text(max_event)} "
                "limit (AIBRIDGE_MAX_UPSTREAM_BODY_BYTES); stream ended",
            )
        except STREAM_TRANSPORT_ERRORS as exc:
            failure = stream_transport_failure(exc, request)
        if failure is not None and failure is not CLIENT_GONE:
            failure = await _fail_stream(ix, out, api, failure)
    except asyncio.CancelledError:
        # The client left (aiohttp cancelled the handler). What was observed so far is
        # billed all the same. If the terminal event had been written to it, the response
        # was complete (Codex closes as soon as it has ``response.completed``, often
        # before the upstream closes its side).
        result = observer.result()
        hooks.observed(ix, result)
        if failure is None:
            failure = CLIENT_GONE if writing or not result.completed else stream_outcome(result)
        ix.interrupted = failure
        raise
    result = observer.result()
    hooks.observed(ix, result)
    # No write_eof() here: aiohttp writes the end of the response once the handler
    # returns, i.e. after the end record is journaled (the pipeline's ``ended`` hook), so
    # a client that saw the stream end can rely on its records surviving a crash. A
    # client that leaves after the last event but before that is not a disconnect.
    return out, failure if failure is not None else stream_outcome(result)


async def _fail_stream(
    ix: Interception, out: web.StreamResponse, api: API, failure: Outcome
) -> Outcome:
    """End the stream with the API's error event for ``failure``; the outcome is the
    failure, or the client's departure when the event cannot be written."""
    message = failure.error_message or ""
    log.warning(
        "upstream stream failed",
        extra={"provider": ix.provider.name, "interception_id": str(ix.id), "error": message},
    )
    try:
        await out.write(api.stream_error(message, event_kind(failure.error_type or "unknown")))
    except ConnectionResetError:
        return CLIENT_GONE
    return failure
