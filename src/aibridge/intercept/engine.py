"""The bridged-request engine shared by all three APIs.

One :class:`Interception` handles one client request to a bridged route:

1. read the body (bounded), decode only the fields the gateway needs;
2. pick the upstream credential (key pool, or the client's own key for BYOK);
3. record the interception start (the only database wait on the request path);
4. call upstream, failing over to the next pooled key on 401/429 while nothing has
   been sent to the client yet;
5. relay the response: blocking bodies unchanged, streams event by event with each
   event's original bytes, parsing a copy on the side;
6. enqueue usage, prompt, tool-call and thought records and the end record.

Per-API differences (request decoding, response observation, stream error events,
the Chat ``include_usage`` edit) come from the API's :class:`~aibridge.intercept.api.API`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from aibridge.actor import Actor
from aibridge.ids import new_uuid4
from aibridge.intercept.api import API, api_for
from aibridge.intercept.byok import byok_credential
from aibridge.intercept.clientinfo import detect_client, session_id
from aibridge.intercept.errors import (
    UPSTREAM_TIMED_OUT,
    UPSTREAM_UNREACHABLE,
    Rejection,
    circuit_open_response,
    error_response,
    error_type_for_event,
    error_type_for_status,
    event_kind,
)
from aibridge.intercept.failover import client_timeout, send_with_failover
from aibridge.intercept.observations import Observation, TokenUsage
from aibridge.intercept.request import RequestInfo, read_body
from aibridge.intercept.sse import SSEParser
from aibridge.intercept.upstream_headers import (
    client_headers_for_upstream,
    response_headers_for_client,
)
from aibridge.providers.base import Provider
from aibridge.providers.circuitbreaker import CircuitOpen
from aibridge.providers.http import (
    UpstreamBodyTooLarge,
    UpstreamSessions,
    read_capped,
    size_text,
)
from aibridge.providers.keypool import KeyPoolExhausted
from aibridge.providers.routes import BridgedRoute
from aibridge.recording.records import (
    CLIENT_DISCONNECTED,
    ErrorType,
    InterceptionEnded,
    InterceptionStarted,
    PromptRecord,
    ThoughtRecord,
    TokenUsageRecord,
    ToolUsageRecord,
)
from aibridge.recording.writer import Recorder
from aibridge.store.types import utcnow
from aibridge.telemetry import GatewayMetrics

log = logging.getLogger(__name__)


# Labelled children per metric: ``labels()`` validates and looks up on every call (about
# 2 µs each, four per request); the children of these metrics are never removed.
_CHILDREN: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], Any]] = weakref.WeakKeyDictionary()


def _child(metric: Any, labels: tuple[str, ...]) -> Any:
    """``metric.labels(*labels)``, cached."""
    cache = _CHILDREN.get(metric)
    if cache is None:
        cache = _CHILDREN[metric] = {}
    child = cache.get(labels)
    if child is None:
        child = cache[labels] = metric.labels(*labels)
    return child


class _EventTooLarge(Exception):
    """An upstream stream event outgrew the buffer the relay allows for one event."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an interception ended, for the end record."""

    error_type: ErrorType | None = None
    error_message: str | None = None
    status: int = 200


# A client that went away: aiohttp cancelled the handler, or a write found the socket closed.
CLIENT_GONE = Outcome(CLIENT_DISCONNECTED, "client disconnected", 499)
# A stream relayed through its terminal event: complete for the client even if it leaves
# before the upstream closes its side.
DELIVERED = Outcome()


class Interception:
    """Handles one request to a bridged route (see module docstring)."""

    def __init__(
        self,
        *,
        provider: Provider,
        route: BridgedRoute,
        actor: Actor,
        recorder: Recorder,
        sessions: UpstreamSessions,
        byok: bool,
        max_body_bytes: int,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.provider = provider
        self.route = route
        self.api: API = api_for(route.api)
        self.actor = actor
        self.recorder = recorder
        self.sessions = sessions
        self.byok = byok
        self.max_body_bytes = max_body_bytes
        self.id = new_uuid4()
        self.outcome = Outcome()
        self.credential_hint: str | None = None
        self.metrics = metrics
        self.model = ""

    # -- entry point -------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve the request; never raises for upstream or client-side failures."""
        family = self.provider.family
        try:
            body = await read_body(request, self.max_body_bytes)
            info = self.api.decode(body)
            self.api.reject(info)
        except Rejection as exc:
            return exc.response(family)

        # The masked hint of the client's own key (BYOK), or None for the key pool.
        byok_hint = self._byok_hint(request)
        if isinstance(byok_hint, web.Response):
            return byok_hint
        if byok_hint is None and not self.provider.keys.has_keys:
            return error_response(
                family,
                502,
                f"provider {self.provider.name!r} has no API keys configured; an admin must add "
                f"one (PATCH /api/v1/providers/{self.provider.name} with api_keys)",
            )

        client = detect_client(request.headers)
        upstream_body, hide_usage = self.api.prepare_body(body, info)
        started = InterceptionStarted(
            id=self.id,
            initiator_id=self.actor.user_id,
            api_key_id=self.actor.key_id,
            provider=self.provider.type,
            provider_name=self.provider.name,
            model=info.model or "",
            started_at=utcnow(),
            client=client,
            user_agent=request.headers.get("User-Agent"),
            client_session_id=session_id(client, request.headers, info.user_id),
            correlating_tool_call_id=info.correlating_tool_call_id,
            credential_kind="centralized" if byok_hint is None else "byok",
            credential_hint=byok_hint,
            metadata={},
        )
        self.model = started.model
        metrics = self.metrics
        labels = (self.provider.name, self.api.name)
        began = time.perf_counter()
        if metrics is not None:
            _child(metrics.inflight, labels).inc()
        try:
            # Inside the try: a client that leaves while the start is being written still
            # gets its end record, never an interception left open forever.
            await self.recorder.record_interception_start(started)
            return await self._process(
                request, info, upstream_body, hide_usage, byok_hint is not None
            )
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client disconnects; the upstream
            # request is torn down by the enclosing context managers.
            if self.outcome.error_type is None and self.outcome is not DELIVERED:
                self.outcome = CLIENT_GONE
            raise
        finally:
            if metrics is not None:
                _child(metrics.inflight, labels).dec()
                _child(metrics.duration, labels).observe(time.perf_counter() - began)
                outcome = (*labels, self.outcome.error_type or "completed")
                _child(metrics.interceptions, outcome).inc()
            self.recorder.record_ended(
                InterceptionEnded(
                    id=self.id,
                    ended_at=utcnow(),
                    error_type=self.outcome.error_type,
                    error_message=self.outcome.error_message,
                    credential_hint=self.credential_hint,
                )
            )

    # -- credentials -------------------------------------------------------------

    def _byok_hint(self, request: web.Request) -> str | web.Response | None:
        if not self.byok:
            return None
        return byok_credential(self.provider, request.headers)

    # -- upstream call -----------------------------------------------------------

    async def _process(
        self,
        request: web.Request,
        info: RequestInfo,
        body: bytes,
        hide_usage: bool,
        byok: bool,
    ) -> web.StreamResponse:
        family = self.provider.family
        breaker = self.provider.breakers.get(self.route.label, info.model)
        try:
            permit = breaker.allow()
        except CircuitOpen as exc:
            self.outcome = Outcome("overloaded", "circuit breaker is open", 503)
            return circuit_open_response(family, exc.retry_after_seconds)
        # The breaker judges the status the client gets; leaving the block by an
        # exception (e.g. cancellation) frees a half-open probe slot.
        with permit:
            response = await self._call_upstream(request, info, body, hide_usage, byok)
            permit.record(response.status)
        return response

    async def _call_upstream(
        self,
        request: web.Request,
        info: RequestInfo,
        body: bytes,
        hide_usage: bool,
        byok: bool,
    ) -> web.StreamResponse:
        family = self.provider.family
        url = self.provider.upstream_url(
            self.route.upstream_suffix, request.rel_url.raw_query_string
        )
        headers = client_headers_for_upstream(request.headers, keep_credentials=byok)
        headers.update(self.provider.options.extra_headers)
        session = self.sessions.get(url)
        timeout = client_timeout(self.provider.options.upstream_timeout_seconds, info.stream)
        walker = None if byok else self.provider.keys.walker()
        try:
            upstream, key = await send_with_failover(
                session,
                self.provider,
                walker,
                request.method,
                url,
                body=body,
                headers=headers,
                client_timeout=timeout,
                auto_decompress=True,
            )
        except KeyPoolExhausted as exc:
            if walker is not None and walker.current is not None:
                self.credential_hint = walker.current.hint
            # Why the keys are out ("rate_limited" / "unauthorized"), not the 502 the client
            # gets for auth exhaustion (reference: ErrorType unauthorized).
            self.outcome = Outcome(exc.cause, str(exc), exc.status)
            extra = {"Retry-After": str(exc.retry_after_seconds)} if exc.status == 429 else None
            return error_response(family, exc.status, str(exc), extra)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            return self._unreachable(
                504, "timeout", UPSTREAM_TIMED_OUT, f"upstream timed out: {exc or 'no response'}"
            )
        except aiohttp.ClientError as exc:
            return self._unreachable(
                502,
                "server_error",
                UPSTREAM_UNREACHABLE,
                f"upstream unreachable: {type(exc).__name__}: {exc}",
            )
        if key is not None:
            self.credential_hint = key.hint
        try:
            if upstream.status >= 400:
                return await self._relay_error(request, upstream)
            content_type = upstream.headers.get("Content-Type", "")
            if info.stream and content_type.startswith("text/event-stream"):
                return await self._relay_stream(request, upstream, info, hide_usage)
            return await self._relay_blocking(request, upstream, info)
        finally:
            upstream.release()

    def _unreachable(
        self, status: int, error_type: ErrorType, message: str, detail: str | None = None
    ) -> web.Response:
        """Answer ``message``; ``detail`` (hosts, ports, OS errors) goes only to the log
        and the end record."""
        self.outcome = Outcome(error_type, detail or message, status)
        log.warning(
            "upstream request failed",
            extra={
                "provider": self.provider.name,
                "interception_id": str(self.id),
                "error": detail or message,
            },
        )
        return error_response(self.provider.family, status, message)

    # -- relaying ----------------------------------------------------------------

    async def _relay_error(
        self, request: web.Request, upstream: aiohttp.ClientResponse
    ) -> web.Response:
        try:
            data = await read_capped(upstream, self.sessions.max_error_bytes)
        except UpstreamBodyTooLarge as exc:
            # Relaying it would mean buffering it: the client gets a 502 that says why.
            return self._unreachable(
                502,
                "server_error",
                f"upstream error response (HTTP {upstream.status}) was larger than the "
                f"{size_text(exc.limit)} limit (AIBRIDGE_MAX_UPSTREAM_ERROR_BYTES); not relayed",
            )
        self.outcome = Outcome(
            error_type_for_status(upstream.status), _error_message(data), upstream.status
        )
        return _relayed(upstream, data)

    async def _relay_blocking(
        self, request: web.Request, upstream: aiohttp.ClientResponse, info: RequestInfo
    ) -> web.Response:
        try:
            data = await read_capped(upstream, self.sessions.max_body_bytes)
        except UpstreamBodyTooLarge as exc:
            return self._unreachable(
                502,
                "server_error",
                f"upstream response was larger than the {size_text(exc.limit)} limit "
                "(AIBRIDGE_MAX_UPSTREAM_BODY_BYTES); not relayed",
            )
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return self._unreachable(504, "timeout", "upstream timed out sending the response")
        except aiohttp.ClientError as exc:
            # The body broke off after the headers: never relay half a body (or a bare 500).
            return self._unreachable(
                502, "server_error", f"upstream response broke: {type(exc).__name__}"
            )
        self._record_observation(self.api.observe_body(data), info)
        return _relayed(upstream, data)

    async def _relay_stream(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        info: RequestInfo,
        hide_usage: bool,
    ) -> web.StreamResponse:
        out = web.StreamResponse(
            status=upstream.status,
            headers=response_headers_for_client(upstream.headers, decompressed=True),
        )
        out.headers["Cache-Control"] = "no-cache"
        out.headers["X-Accel-Buffering"] = "no"
        await out.prepare(request)
        parser = SSEParser()
        observer = self.api.stream_observer()
        # ``readany`` in a plain loop, not ``iter_chunked``: one await per chunk instead
        # of an async-iterator frame plus a ``read(n)`` frame; the chunk is whatever arrived.
        read = upstream.content.readany
        # An event is held until its blank line arrives: bound what one event may hold.
        max_event = self.sessions.max_body_bytes
        writing = False
        try:
            while chunk := await read():
                events = parser.feed(chunk)
                if events:
                    pieces = []
                    for event in events:
                        observer.observe(event)
                        if hide_usage and self.api.is_usage_only(event):
                            continue
                        pieces.append(event.raw)
                    if pieces:
                        writing = True
                        await out.write(b"".join(pieces))
                        writing = False
                if parser.pending > max_event:
                    raise _EventTooLarge
            for event in parser.flush():
                observer.observe(event)
                writing = True
                await out.write(event.raw)
                writing = False
        except _EventTooLarge:
            await self._fail_stream(
                out,
                "server_error",
                f"upstream sent a stream event larger than the {size_text(max_event)} "
                "limit (AIBRIDGE_MAX_UPSTREAM_BODY_BYTES); stream ended",
            )
        except asyncio.CancelledError:
            # The client left (aiohttp cancelled the handler). What was observed so far is
            # billed all the same: record it. If the terminal event had been written to
            # it, the response was complete (Codex closes as soon as it has
            # ``response.completed``, often before the upstream closes its side).
            result = observer.result()
            if not result.completed or writing:
                self.outcome = CLIENT_GONE
            self._conclude_stream(result, info)
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError):
            await self._fail_stream(
                out, "timeout", "upstream stream stalled (no data before the timeout)"
            )
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            if isinstance(exc, aiohttp.ClientConnectionResetError) and request.transport is None:
                self.outcome = CLIENT_GONE
            else:
                await self._fail_stream(
                    out, "server_error", f"upstream stream broke: {type(exc).__name__}"
                )
        except ConnectionResetError:
            self.outcome = CLIENT_GONE
        self._conclude_stream(observer.result(), info)
        # No write_eof() here: aiohttp writes the end of the response once the handler
        # returns, i.e. after the end record is journaled (handle's ``finally``), so a
        # client that saw the stream end can rely on its records surviving a crash. A
        # client that leaves after the last event but before that is not a disconnect.
        return out

    def _conclude_stream(self, result: Observation, info: RequestInfo) -> None:
        """Record what the stream observer saw and settle the outcome from it."""
        self._record_observation(result, info)
        if self.outcome.error_type is None:
            if result.error is not None:
                self.outcome = Outcome(
                    error_type_for_event(result.error.type), result.error.message, 200
                )
            elif not result.completed:
                self.outcome = Outcome(
                    "server_error", "upstream stream ended without a terminal event", 200
                )
            else:
                self.outcome = DELIVERED

    async def _fail_stream(
        self, out: web.StreamResponse, error_type: ErrorType, message: str
    ) -> None:
        self.outcome = Outcome(error_type, message, 200)
        log.warning(
            "upstream stream failed",
            extra={
                "provider": self.provider.name,
                "interception_id": str(self.id),
                "error": message,
            },
        )
        try:
            await out.write(self.api.stream_error(message, event_kind(error_type)))
        except ConnectionResetError:
            self.outcome = CLIENT_GONE

    # -- recording ---------------------------------------------------------------

    def _record_observation(self, obs: Observation, info: RequestInfo) -> None:
        rec = self.recorder
        now = utcnow()
        for usage in obs.usages:
            if self.metrics is not None:
                self._count_tokens(usage.model or self.model, usage)
            rec.record_token_usage(
                TokenUsageRecord(
                    id=new_uuid4(),
                    interception_id=self.id,
                    provider_response_id=usage.response_id or "",
                    provider_model=usage.model,
                    input=usage.input,
                    output=usage.output,
                    cache_read=usage.cache_read,
                    cache_write=usage.cache_write,
                    reasoning=usage.reasoning,
                    extra=dict(usage.extra),
                    metadata={},
                    created_at=now,
                )
            )
        if info.prompt:
            rec.record_prompt(
                PromptRecord(
                    id=new_uuid4(),
                    interception_id=self.id,
                    provider_response_id=obs.response_id or "",
                    prompt=info.prompt,
                    metadata={},
                    created_at=now,
                )
            )
        for call in obs.tool_calls:
            rec.record_tool_usage(
                ToolUsageRecord(
                    id=new_uuid4(),
                    interception_id=self.id,
                    provider_response_id=call.response_id or obs.response_id or "",
                    tool=call.name,
                    tool_call_id=call.call_id,
                    item_id=call.item_id,
                    server_url=None,
                    input=call.arguments_raw,
                    injected=False,
                    invocation_error=None,
                    metadata={},
                    created_at=now,
                )
            )
        for thought in obs.thoughts:
            rec.record_thought(
                ThoughtRecord(
                    id=new_uuid4(),
                    interception_id=self.id,
                    content=thought.content,
                    metadata={"source": thought.source},
                    created_at=now,
                )
            )

    def _count_tokens(self, model: str, usage: TokenUsage) -> None:
        assert self.metrics is not None
        counter = self.metrics.tokens
        name = self.provider.name
        model = self.metrics.model_label(model)  # bounded: the model comes from the client
        for kind, value in (
            ("input", usage.input),
            ("output", usage.output),
            ("cache_read", usage.cache_read),
            ("cache_write", usage.cache_write),
            ("reasoning", usage.reasoning),
        ):
            if value:
                _child(counter, (name, model, kind)).inc(value)


def _relayed(upstream: aiohttp.ClientResponse, data: bytes) -> web.Response:
    """The upstream's status, headers and (decompressed) body, unchanged."""
    return web.Response(
        status=upstream.status,
        body=data,
        headers=response_headers_for_client(upstream.headers, decompressed=True),
    )


def _error_message(data: bytes, limit: int = 500) -> str:
    """Best-effort message from a provider error body (for the end record)."""
    import orjson

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
