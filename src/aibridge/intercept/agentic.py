"""The inner agentic loop: a request with injected MCP tools, run to the model's answer.

The pipeline takes this path only when the bridge has tools (one branch in
:meth:`~aibridge.intercept.pipeline.Interceptor.handle`); every other request keeps the
plain relay. Per upstream turn:

1. send the conversation (the client's request with the tools added; then the model's
   turns and the tools' results appended);
2. relay the turn: a stream event by event through the API's relay, which hides the
   injected calls and — when the loop goes on — the turn's end, so the client sees one
   answer (Anthropic Messages and Chat live; Responses buffered, see its adapter); a
   blocking body is held until the last turn;
3. if the model called injected tools (and no tool of the client's, and the iteration cap
   allows another turn): call them over MCP one after the other, record each, add the turn
   and the results to the conversation, go to 1.

The turn's calls are not run when the model also called one of the client's tools (the
turn goes to the client without the injected calls, recorded as not invoked) or when the
cap is reached (the last response goes to the client, the calls recorded as not invoked
and a warning logged). Every turn's usage is recorded; the client sees the sum.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import aiohttp
import orjson
from aiohttp import web

from aibridge import tracing
from aibridge.intercept.api import API
from aibridge.intercept.chat.tools import ChatConversation
from aibridge.intercept.errors import circuit_open_response, error_type_for_status, event_kind
from aibridge.intercept.hooks import InterceptionHooks
from aibridge.intercept.injection import Conversation, Invocation, PendingCall, TurnEnd
from aibridge.intercept.interception import CLIENT_GONE, COMPLETED, Interception, Outcome
from aibridge.intercept.messages.tools import MessagesConversation
from aibridge.intercept.observations import Observation
from aibridge.intercept.relay import relay_error, stream_outcome, upstream_failure
from aibridge.intercept.responses.tools import ResponsesConversation
from aibridge.intercept.sse import SSEParser
from aibridge.intercept.upstream_headers import response_headers_for_client
from aibridge.mcp.tools import ToolResult
from aibridge.mcp.toolset import Toolset
from aibridge.providers.base import APIName
from aibridge.providers.circuitbreaker import CIRCUIT_OPEN_MESSAGE, CircuitOpen
from aibridge.providers.routes import BridgedRoute
from aibridge.providers.upstream import UpstreamBodyTooLarge, read_capped, size_text
from aibridge.recording.records import ErrorType

if TYPE_CHECKING:
    from aibridge.intercept.pipeline import Interceptor

log = logging.getLogger(__name__)

DEFAULT_MAX_ITERATIONS = 10


class _StreamBroke(Exception):
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


def start_conversation(
    api: APIName, body: bytes, toolset: Toolset, *, hide_usage: bool
) -> Conversation:
    """The client's request body with the tools injected, as the API's conversation
    (``hide_usage``: the usage chunk the gateway asked for is not the client's); raises
    :class:`~aibridge.intercept.request.RequestDecodeError` for a body whose
    ``tools``/``messages``/``input`` cannot be edited."""
    if api == "messages":
        return MessagesConversation(body, toolset)
    if api == "chat":
        return ChatConversation(body, toolset, hide_usage=hide_usage)
    return ResponsesConversation(body, toolset)


def merge(into: Observation, turn: Observation, injected: frozenset[str]) -> None:
    """Add one turn's observation to the request's; calls of injected tools are left out
    (they are recorded as injected invocations instead)."""
    into.usages.extend(turn.usages)
    into.tool_calls.extend(c for c in turn.tool_calls if c.name not in injected)
    into.thoughts.extend(turn.thoughts)
    into.response_id = into.response_id or turn.response_id
    into.model = into.model or turn.model
    into.stop_reason = turn.stop_reason
    into.error = turn.error
    into.completed = turn.completed
    into.malformed_events += turn.malformed_events


class ToolLoop:
    """Runs one request with injected tools (see the module docstring)."""

    def __init__(
        self,
        interceptor: Interceptor,
        ix: Interception,
        request: web.Request,
        route: BridgedRoute,
        api: API,
        conversation: Conversation,
        toolset: Toolset,
        max_iterations: int,
    ) -> None:
        self.itc = interceptor
        self.ix = ix
        self.request = request
        self.route = route
        self.api = api
        self.conversation = conversation
        self.toolset = toolset
        self.max_iterations = max(1, max_iterations)
        self.hooks: InterceptionHooks = interceptor.hooks
        self.injected = frozenset(t.id for t in toolset.tools)
        self.observation = Observation()
        self._current: Observation | None = None
        self.out: web.StreamResponse | None = None
        self._span: tracing.Span | None = None
        """The blocking turn's Upstream span until its body was read (tracing on)."""

    async def run(self) -> tuple[web.StreamResponse, Outcome]:
        """The loop, through the circuit breaker (judged on what the client gets)."""
        breaker = self.ix.provider.breakers.get(self.route.label, self.ix.request.model)
        try:
            permit = breaker.allow()
        except CircuitOpen as exc:
            family = self.ix.provider.family
            return circuit_open_response(family, exc.retry_after_seconds), Outcome(
                "overloaded", CIRCUIT_OPEN_MESSAGE
            )
        with permit:
            try:
                response, outcome = await self._loop()
            except asyncio.CancelledError:
                self._end_span()
                self._observe()
                if self.ix.interrupted is None:
                    self.ix.interrupted = CLIENT_GONE
                raise
            self._observe()
            permit.record(response.status)
        return response, outcome

    def _observe(self) -> None:
        if self._current is not None:
            merge(self.observation, self._current, self.injected)
            self._current = None
        self.hooks.observed(self.ix, self.observation)

    async def _loop(self) -> tuple[web.StreamResponse, Outcome]:
        ix = self.ix
        limits = self.itc.upstream
        for iteration in range(1, self.max_iterations + 1):
            can_continue = iteration < self.max_iterations
            # The span is open only for a blocking answer whose body is still to be read.
            sent, self._span = await self.itc._send_traced(
                ix, self.request, self.route, self.conversation.body()
            )
            if not isinstance(sent, aiohttp.ClientResponse):
                response, outcome = sent
                if self.out is None:
                    return response, outcome
                return self.out, await self._fail(outcome)
            try:
                if sent.status >= 400:
                    if self.out is None:
                        return await relay_error(ix, sent, limits.max_error_bytes)
                    return self.out, await self._fail(await self._error_outcome(sent))
                streaming = ix.request.stream and sent.headers.get("Content-Type", "").startswith(
                    "text/event-stream"
                )
                if streaming:
                    if self.out is None:
                        self.out = await self._prepare(sent)
                    try:
                        turn = await self._stream_turn(sent, can_continue)
                    except _StreamBroke as broke:
                        if broke.outcome is CLIENT_GONE:
                            return self.out, CLIENT_GONE
                        return self.out, await self._fail(broke.outcome)
                    last = self._take_current()
                    if not turn.continues:
                        self._not_invoked(turn, can_continue)
                        return self.out, stream_outcome(last)
                else:
                    try:
                        data = await read_capped(sent, limits.max_body_bytes)
                    except UpstreamBodyTooLarge as exc:
                        return self._failed_blocking(
                            f"upstream response was larger than the {size_text(exc.limit)} "
                            "limit (AIBRIDGE_MAX_UPSTREAM_BODY_BYTES); not relayed"
                        )
                    except (TimeoutError, aiohttp.ServerTimeoutError):
                        return self._failed_blocking("upstream timed out sending the response", 504)
                    except aiohttp.ClientError as exc:
                        return self._failed_blocking(
                            f"upstream response broke: {type(exc).__name__}"
                        )
                    self._end_span()
                    self._current = self.api.observe_body(data)
                    turn, final = self.conversation.blocking_turn(data, can_continue)
                    self._take_current()
                    if not turn.continues:
                        self._not_invoked(turn, can_continue)
                        headers = response_headers_for_client(sent.headers, decompressed=True)
                        if self.out is not None:
                            # A stream was asked for but this turn came whole: end the
                            # stream with nothing more (rare; the upstream chose so).
                            return self.out, COMPLETED
                        return web.Response(status=sent.status, body=final, headers=headers), (
                            COMPLETED
                        )
            finally:
                sent.release()
                self._end_span()
            await self._run_calls(turn)
        raise AssertionError("unreachable: the last iteration never continues")

    def _end_span(self, failure: Outcome | None = None) -> None:
        """End the blocking turn's ``Upstream`` span (after its body was read, or when
        reading it failed: ``failure``)."""
        span = self._span
        if span is None:
            return
        self._span = None
        trace = self.ix.trace
        if failure is not None and trace is not None:
            trace.upstream_read(span, failure)
        span.end()

    def _take_current(self) -> Observation:
        current = self._current or Observation()
        merge(self.observation, current, self.injected)
        self._current = None
        return current

    def _failed_blocking(self, message: str, status: int = 502) -> tuple[web.Response, Outcome]:
        kind: ErrorType = "timeout" if status == 504 else "server_error"
        self._end_span(Outcome(kind, message))
        return upstream_failure(self.ix, status, kind, message)

    async def _prepare(self, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        out = web.StreamResponse(
            status=upstream.status,
            headers=response_headers_for_client(upstream.headers, decompressed=True),
        )
        out.headers["Cache-Control"] = "no-cache"
        out.headers["X-Accel-Buffering"] = "no"
        await out.prepare(self.request)
        return out

    async def _stream_turn(self, upstream: aiohttp.ClientResponse, can_continue: bool) -> TurnEnd:
        assert self.out is not None
        out = self.out
        relay = self.conversation.stream_relay(can_continue)
        observer = self.api.stream_observer()
        parser = SSEParser()
        max_event = self.itc.upstream.max_body_bytes
        read = upstream.content.readany
        try:
            try:
                while chunk := await read():
                    pieces = []
                    for event in parser.feed(chunk):
                        observer.observe(event)
                        data = relay.event(event)
                        if data:
                            pieces.append(data)
                    if pieces:
                        await out.write(b"".join(pieces))
                    if parser.pending > max_event:
                        raise _StreamBroke(
                            Outcome(
                                "server_error",
                                "upstream sent a stream event larger than the "
                                f"{size_text(max_event)} limit; stream ended",
                            )
                        )
                for event in parser.flush():
                    observer.observe(event)
                    data = relay.event(event)
                    if data:
                        await out.write(data)
                turn, tail = relay.finish()
                if tail:
                    await out.write(tail)
            except (TimeoutError, aiohttp.ServerTimeoutError):
                raise _StreamBroke(
                    Outcome("timeout", "upstream stream stalled (no data before the timeout)")
                ) from None
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                if (
                    isinstance(exc, aiohttp.ClientConnectionResetError)
                    and self.request.transport is None
                ):
                    raise _StreamBroke(CLIENT_GONE) from None
                raise _StreamBroke(
                    Outcome("server_error", f"upstream stream broke: {type(exc).__name__}")
                ) from None
            except ConnectionResetError:
                raise _StreamBroke(CLIENT_GONE) from None
        finally:
            self._current = observer.result()
        return turn

    async def _error_outcome(self, upstream: aiohttp.ClientResponse) -> Outcome:
        """How an upstream error status after the stream began ends the request."""
        try:
            data = await read_capped(upstream, self.itc.upstream.max_error_bytes)
        except (UpstreamBodyTooLarge, aiohttp.ClientError, TimeoutError):
            data = b""
        message = f"upstream answered HTTP {upstream.status}"
        try:
            body = orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict):
            err = body.get("error")
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                message = f"{message}: {err['message']}"
        return Outcome(error_type_for_status(upstream.status), message)

    async def _fail(self, failure: Outcome) -> Outcome:
        """End the client's stream with the API's error event."""
        assert self.out is not None
        if self._current is not None:
            self._take_current()
        message = failure.error_message or ""
        log.warning(
            "upstream failed during the tool loop",
            extra={"provider": self.ix.provider.name, "interception_id": str(self.ix.id)},
        )
        try:
            await self.out.write(
                self.api.stream_error(message, event_kind(failure.error_type or "unknown"))
            )
        except ConnectionResetError:
            return CLIENT_GONE
        return failure

    def _not_invoked(self, turn: TurnEnd, can_continue: bool) -> None:
        """Record the injected calls of a last turn that were not run, saying why."""
        if not turn.calls:
            return
        if turn.client_calls:
            reason = (
                "not invoked: the model also called a client tool in this turn; the turn "
                "went to the client"
            )
        elif not can_continue:
            reason = f"not invoked: the tool loop reached its cap of {self.max_iterations} turns"
            log.warning(
                "MCP tool loop reached its iteration cap; returning the last response",
                extra={
                    "provider": self.ix.provider.name,
                    "interception_id": str(self.ix.id),
                    "max_iterations": self.max_iterations,
                },
            )
        else:
            reason = "not invoked: the call was incomplete (the response was cut)"
        for call in turn.calls:
            self._invoked(call, turn.response_id, reason, invoked=False)

    def _invoked(
        self, call: PendingCall, response_id: str | None, error: str | None, *, invoked: bool = True
    ) -> None:
        invocation = Invocation(
            call.call_id, call.tool, call.arguments_raw, response_id, error, invoked
        )
        tool_invoked = getattr(self.hooks, "tool_invoked", None)
        if tool_invoked is not None:
            tool_invoked(self.ix, invocation)

    async def _run_calls(self, turn: TurnEnd) -> None:
        """Call the turn's tools one after the other and extend the conversation."""
        results: list[tuple[PendingCall, ToolResult]] = []
        trace = self.ix.trace
        for call in turn.calls:
            span = None if trace is None else trace.tool_call(call.tool, call.arguments_raw)
            try:
                arguments = _arguments(call.arguments_raw)
                if isinstance(arguments, str):
                    result = ToolResult(f"Error: {arguments}", is_error=True, error=arguments)
                else:
                    result = await self.toolset.call(call.tool, arguments)
                if span is not None and trace is not None and result.error is not None:
                    trace.tracer.fail(span, result.error)
            finally:
                if span is not None:
                    span.end()
            self._invoked(call, turn.response_id, result.error)
            results.append((call, result))
        self.conversation.extend(results)


def _arguments(raw: str) -> dict[str, object] | str:
    """The call's arguments as an object, or what is wrong with them."""
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "invalid tool arguments: not valid JSON"
    if not isinstance(value, dict):
        return "invalid tool arguments: not a JSON object"
    return value
