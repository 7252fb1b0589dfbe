"""The interception pipeline: one bridged request, step by step.

:meth:`Interceptor.handle` reads top to bottom:

1. **body**: read it (bounded, 413), decode the fields the gateway needs (400), let the
   API refuse what it does not support (e.g. Responses ``background``, 501);
2. **credentials**: the key ring, or the client's own key for BYOK (403/401/502);
3. **admission**: the limiter admits the request for the request's actor (model access,
   concurrency, request and token rates, budgets) or refuses it: a refusal is recorded
   as an interception of its own error type and answered in the provider's shape with
   ``Retry-After`` and ``x-ratelimit-*``, and nothing goes upstream;
4. **start**: the ``started`` hook (the recording addon journals the start record and
   queues it; nothing on the request path waits for the database);
5. **upstream call**: through the circuit breaker, failing over to the next pooled key on
   401/429 while nothing has been sent to the client yet;
6. **relay**: error, blocking or stream (:mod:`aibridge.intercept.relay`), each returning
   the response and the outcome;
7. **end**: the ``ended`` hook with the outcome, before the client sees the response end;
   then the admission's ticket is settled with the usage of every upstream call (the
   settlement addon fed it from the ``observed`` hook), whatever the outcome.

A bridge with injected MCP tools runs steps 5 and 6 as a loop instead
(:mod:`aibridge.intercept.agentic`): one branch, taken only when the bridge has tools.

Every rejection in steps 1 and 2 is one exception type
(:class:`~aibridge.intercept.errors.Rejection`) answered in the provider's error shape;
everything an API does differently comes from its :class:`~aibridge.intercept.api.API`;
metrics and recording are addons behind
:class:`~aibridge.intercept.hooks.InterceptionHooks`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from functools import partial

import aiohttp
from aiohttp import web

from aibridge import tracing
from aibridge.actor import Actor
from aibridge.governance.limiter import NO_LIMIT_TICKET, Demand, Limiter, Refusal, Ticket
from aibridge.ids import new_uuid7
from aibridge.intercept import bedrock
from aibridge.intercept.actor_headers import actor_metadata, add_actor_headers
from aibridge.intercept.admission import RATELIMIT_HEADERS, refusal_outcome, refused
from aibridge.intercept.agentic import DEFAULT_MAX_ITERATIONS, ToolLoop, start_conversation
from aibridge.intercept.api import API, api_for
from aibridge.intercept.byok import credential_hint
from aibridge.intercept.clientinfo import detect_client, session_id
from aibridge.intercept.errors import (
    UPSTREAM_TIMED_OUT,
    UPSTREAM_UNREACHABLE,
    Rejection,
    circuit_open_response,
    error_response,
)
from aibridge.intercept.failover import client_timeout, send_with_failover
from aibridge.intercept.hooks import InterceptionHooks
from aibridge.intercept.interception import CLIENT_GONE, Interception, Outcome
from aibridge.intercept.relay import relay_blocking, relay_error, relay_stream, upstream_failure
from aibridge.intercept.request import read_body
from aibridge.intercept.spans import InterceptionTrace
from aibridge.intercept.upstream_headers import client_headers_for_upstream
from aibridge.mcp.toolset import Toolset
from aibridge.providers.circuitbreaker import CIRCUIT_OPEN_MESSAGE, CircuitOpen
from aibridge.providers.keyring import KeysExhausted
from aibridge.providers.routes import BridgedRoute
from aibridge.providers.upstream import UpstreamClients
from aibridge.store.types import utcnow

CIRCUIT_OPENED = Outcome("overloaded", CIRCUIT_OPEN_MESSAGE)
"""The outcome of a request the circuit breaker turned away."""


class Interceptor:
    """Runs the pipeline for one actor's bridged requests (one per request bridge)."""

    __slots__ = (
        "actor",
        "hooks",
        "limiter",
        "max_body_bytes",
        "max_iterations",
        "toolset",
        "upstream",
    )

    def __init__(
        self,
        actor: Actor,
        upstream: UpstreamClients,
        hooks: InterceptionHooks,
        *,
        limiter: Limiter,
        max_body_bytes: int,
        toolset: Toolset | None = None,
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
    ) -> None:
        self.actor = actor
        self.upstream = upstream
        self.hooks = hooks
        self.limiter = limiter
        """Admits every request before it goes upstream (and settles what it used)."""
        self.max_body_bytes = max_body_bytes
        self.toolset = toolset
        """The bridge's injected MCP tools (None: the plain relay only)."""
        self.max_iterations = max_iterations

    async def handle(
        self,
        request: web.Request,
        route: BridgedRoute,
        *,
        byok: bool,
        actor: Actor | None = None,
    ) -> web.StreamResponse:
        """Serve ``request`` on ``route``; never raises for upstream or client-side failures.

        ``byok``: the client sent its gateway key in ``X-AIBridge-Token`` and its own
        provider key where the provider expects one. ``actor`` is the request's own
        (just authenticated, so its limits are current; the bridge's cached actor is the
        default): it is admitted, limited and recorded.
        """
        if actor is None:
            actor = self.actor
        provider = route.provider
        api = api_for(route.api)
        try:
            body = await read_body(request, self.max_body_bytes)
            info = api.decode(body)
            api.reject(info)
            if provider.bedrock is not None and info.model:
                # Recorded and sent: the Bedrock model the client's name maps to.
                info = dataclasses.replace(info, model=provider.bedrock.map_model(info.model))
            byok_hint = credential_hint(provider, request.headers, byok=byok)
            upstream_body, hide_usage = api.prepare_body(body, info)
            toolset = self.toolset
            conversation = (
                None
                # The tool loop reads SSE answers; Bedrock's event stream is relayed by its
                # own path, so injected tools are not offered on bedrock providers (yet).
                if toolset is None or not toolset.tools or provider.bedrock is not None
                else start_conversation(route.api, upstream_body, toolset, hide_usage=hide_usage)
            )
        except Rejection as exc:
            tracer = tracing.TRACER
            if tracer is not None:
                root = tracer.current()
                if root is not None:
                    tracer.fail(root, exc.message)
            return exc.response(provider.family)

        headers = request.headers
        client = detect_client(headers)
        ix = Interception(
            id=new_uuid7(),
            provider=provider,
            api=route.api,
            actor=actor,
            request=info,
            client=client,
            user_agent=headers.get("User-Agent"),
            session_id=session_id(client, headers, info.user_id),
            byok_hint=byok_hint,
            started_at=utcnow(),
            began=time.perf_counter(),
        )
        tracer = tracing.TRACER
        if tracer is not None:
            ix.trace = InterceptionTrace(tracer, ix, request)
        hooks = self.hooks
        limiter = self.limiter
        admitted: Ticket | Refusal
        if limiter.unlimited(actor):
            # The usual case: no Demand built, no coroutine awaited, nothing to settle
            # (still decided per request: limits set meanwhile apply from the next one).
            admitted = NO_LIMIT_TICKET
        else:
            admitted = await limiter.admit(
                Demand(
                    actor=actor,
                    provider_name=provider.name,
                    provider_type=provider.type,
                    model=info.model or "",
                    body_bytes=len(body),
                    max_output_tokens=info.max_output_tokens,
                )
            )
        if isinstance(admitted, Refusal):
            # Recorded like any interception (who hit which limit), answered at once.
            hooks.started(ix)
            refusal = refusal_outcome(admitted)
            hooks.ended(ix, refusal)
            if ix.trace is not None:
                ix.trace.fail_root(refusal.error_message or "refused")
            return refused(provider.family, admitted)
        ix.ticket = admitted
        if admitted.headers:
            # Added as the response is prepared (see admission.add_ratelimit_headers):
            # the relays build the response, a stream's before its first byte.
            request[RATELIMIT_HEADERS] = admitted.headers
        outcome = CLIENT_GONE
        cancelled = False
        try:
            # Inside the try: whatever happens after the start was recorded, the finally
            # below records its end (and settles the ticket), so no interception is left
            # open and no reservation or slot held forever.
            if ix.trace is not None:
                ix.trace.begin()
            hooks.started(ix)
            if conversation is None:
                response, outcome = await self._exchange(
                    ix, request, route, api, upstream_body, hide_usage
                )
            else:
                assert toolset is not None
                loop = ToolLoop(
                    self, ix, request, route, api, conversation, toolset, self.max_iterations
                )
                response, outcome = await loop.run()
            return response
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client disconnects; the upstream request
            # is torn down by the context managers on the way out.
            outcome = ix.interrupted or CLIENT_GONE
            cancelled = True
            raise
        except Exception as exc:
            # A bug, not an upstream failure (those are answered above): aiohttp answers
            # 500, and the record says the gateway failed rather than "completed".
            outcome = Outcome("unknown", f"gateway error: {type(exc).__name__}: {exc}")
            raise
        finally:
            hooks.ended(ix, outcome)
            if ix.trace is not None:
                ix.trace.end(outcome)
            if admitted is NO_LIMIT_TICKET:
                pass  # nothing held, nothing to count
            elif cancelled:
                # No await on a cancelled task's way out: the settlement runs in the
                # background with the usage observed so far.
                admitted.release_nowait()
            else:
                await admitted.settle()

    async def _exchange(
        self,
        ix: Interception,
        request: web.Request,
        route: BridgedRoute,
        api: API,
        body: bytes,
        hide_usage: bool,
    ) -> tuple[web.StreamResponse, Outcome]:
        """The upstream call through the circuit breaker, then the relay."""
        breaker = ix.provider.breakers.get(route.label, ix.request.model)
        try:
            permit = breaker.allow()
        except CircuitOpen as exc:
            return circuit_open_response(ix.provider.family, exc.retry_after_seconds), (
                CIRCUIT_OPENED
            )
        # The breaker judges the status the client gets; leaving the block by an exception
        # (e.g. cancellation) frees a half-open probe slot.
        with permit:
            trace = ix.trace
            sent, span = await self._send_traced(ix, request, route, body)
            try:
                if isinstance(sent, aiohttp.ClientResponse):
                    try:
                        response, outcome = await self._relay(ix, request, sent, api, hide_usage)
                    finally:
                        sent.release()
                    if trace is not None and span is not None and sent.status < 400:
                        # (An error status already marked it, with the status.)
                        trace.upstream_read(span, outcome)
                else:
                    response, outcome = sent
                permit.record(response.status)
            finally:
                if span is not None:
                    span.end()
        return response, outcome

    async def _send_traced(
        self, ix: Interception, request: web.Request, route: BridgedRoute, body: bytes
    ) -> tuple[aiohttp.ClientResponse | tuple[web.Response, Outcome], tracing.Span | None]:
        """:meth:`_send`, in a new ``Upstream`` span when the interception is traced (each
        call of the tool loop too). The span comes back still open only for a blocking
        call that answered: it also covers reading the body, and the caller ends it; a
        stream's covers only opening it. Untraced: no span, nothing else done."""
        trace = ix.trace
        if trace is None:
            return await self._send(ix, request, route, body), None
        span = trace.upstream()
        try:
            sent = await self._send(ix, request, route, body, span)
        except BaseException:
            span.end()
            raise
        trace.upstream_answered(span, sent)
        if ix.request.stream or not isinstance(sent, aiohttp.ClientResponse):
            span.end()
            return sent, None
        return sent, span

    async def _send(
        self,
        ix: Interception,
        request: web.Request,
        route: BridgedRoute,
        body: bytes,
        span: tracing.Span | None = None,
    ) -> aiohttp.ClientResponse | tuple[web.Response, Outcome]:
        """Send the request upstream with failover across the key ring: the upstream
        response, or the answer and outcome when no response came. ``span`` (the call's
        ``Upstream`` span, when traced) goes upstream as ``traceparent`` when the
        provider's ``propagate_trace_context`` asks for it."""
        provider = ix.provider
        if provider.bedrock is not None:
            return await bedrock.send(
                self.upstream, provider.bedrock, ix, request, route.upstream_suffix, body
            )
        byok = ix.byok_hint is not None
        url = provider.upstream_url(route.upstream_suffix, request.rel_url.raw_query_string)
        headers = client_headers_for_upstream(request.headers, keep_credentials=byok)
        headers.update(provider.options.extra_headers)
        if provider.options.send_actor_headers:
            add_actor_headers(headers, ix.actor, actor_metadata(ix.client, ix.session_id))
        if span is not None and ix.trace is not None and provider.options.propagate_trace_context:
            ix.trace.tracer.inject(span, headers)
        walker = None if byok else provider.keys.walker()
        dumper = self.upstream.dumps.for_dir(provider.options.api_dump_dir)
        dump = (
            None
            if dumper is None
            else partial(
                dumper.bridged, provider.name, ix.request.model, ix.id, provider.auth_header
            )
        )
        try:
            upstream, key = await send_with_failover(
                self.upstream.for_url(url),
                provider,
                walker,
                request.method,
                url,
                body=body,
                headers=headers,
                client_timeout=client_timeout(
                    provider.options.upstream_timeout_seconds, ix.request.stream
                ),
                auto_decompress=True,
                dump=dump,
            )
        except KeysExhausted as exc:
            if walker is not None and walker.current is not None:
                ix.credential_hint = walker.current.hint
            # Why the keys are out ("rate_limited" / "unauthorized"), not the 502 the client
            # gets for auth exhaustion (reference: ErrorType unauthorized).
            extra = {"Retry-After": str(exc.retry_after_seconds)} if exc.status == 429 else None
            response = error_response(provider.family, exc.status, str(exc), extra)
            return response, Outcome(exc.cause, str(exc))
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            return upstream_failure(
                ix,
                504,
                "timeout",
                UPSTREAM_TIMED_OUT,
                f"upstream timed out: {exc or 'no response'}",
            )
        except aiohttp.ClientError as exc:
            return upstream_failure(
                ix,
                502,
                "server_error",
                UPSTREAM_UNREACHABLE,
                f"upstream unreachable: {type(exc).__name__}: {exc}",
            )
        if key is not None:
            ix.credential_hint = key.hint
        return upstream

    async def _relay(
        self,
        ix: Interception,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        api: API,
        hide_usage: bool,
    ) -> tuple[web.StreamResponse, Outcome]:
        """The relay for what came back: an error, a stream, or a blocking body."""
        limits = self.upstream
        runtime = ix.provider.bedrock
        if runtime is not None and ix.api == "messages":
            if upstream.status >= 400:
                return await bedrock.relay_error(ix, upstream, limits.max_error_bytes)
            if ix.request.stream and upstream.headers.get("Content-Type", "").startswith(
                bedrock.EVENT_STREAM
            ):
                return await bedrock.relay_event_stream(
                    ix, request, upstream, api, self.hooks, runtime.settings.max_frame_bytes
                )
        if upstream.status >= 400:
            return await relay_error(ix, upstream, limits.max_error_bytes)
        if ix.request.stream and upstream.headers.get("Content-Type", "").startswith(
            "text/event-stream"
        ):
            return await relay_stream(
                ix,
                request,
                upstream,
                api,
                self.hooks,
                hide_usage=hide_usage,
                max_event=limits.max_body_bytes,
            )
        return await relay_blocking(ix, upstream, api, self.hooks, limits.max_body_bytes)
