"""The data plane: ``/{provider}/…`` requests, authenticated, then handed to a bridge."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import unquote

from aiohttp import web

from aibridge import tracing
from aibridge.actor import Actor
from aibridge.admin.deps import ACTOR_KEY
from aibridge.auth import AuthError, AuthUnavailable, extract_token
from aibridge.httputil import route_not_supported
from aibridge.intercept.errors import error_response, family_for_request, routing_error_response
from aibridge.pool import BridgeBuildError, PoolShuttingDown, RetryLimitExceeded
from aibridge.providers.routes import PassthroughRoute, RoutingError, WebSocketRoute
from aibridge.server.accesslog import current_entry
from aibridge.server.services import RESPONSES_SOCKETS, SERVICES, Services
from aibridge.store.models import RESERVED_PROVIDER_NAMES

log = logging.getLogger(__name__)


async def data_plane(request: web.Request) -> web.StreamResponse:
    """``/{provider}/…``: check the path, authenticate the gateway key, acquire the actor's
    bridge, route the request against that bridge's provider snapshot, and hand over.

    The key is checked before the name is looked up, and an authentication failure is
    shaped after the request, not the provider row: without a valid key, a provider
    name that does not exist gets the very same answer as one that does. Routing uses
    the snapshot the bridge serves with, so one request sees one provider generation.
    """
    services = request.app[SERVICES]
    name, tail = split_path(request)
    if name in RESERVED_PROVIDER_NAMES:
        return route_not_supported(request)
    # BYOK: the gateway key travels in X-AIBridge-Token and the client's own provider
    # credential stays in Authorization / X-Api-Key. A blank X-AIBridge-Token is no
    # BYOK request: the key in Authorization is then the gateway key (stripped).
    byok_token = request.headers.get("X-AIBridge-Token", "").strip()
    token = byok_token or extract_token(request.headers)
    try:
        actor = await services.authenticator.authenticate(token)
        # Who the access line names (the admin API stores its caller the same way).
        request[ACTOR_KEY] = actor
    except AuthError as err:
        return error_response(family_for_request(tail, request.headers), 401, f"aibridge: {err}")
    except AuthUnavailable as err:
        return error_response(family_for_request(tail, request.headers), 503, f"aibridge: {err}")
    tracer = tracing.TRACER
    if tracer is None:
        return await _serve(request, services, actor, name, tail, bool(byok_token), None)
    return await _traced(request, services, actor, name, tail, bool(byok_token), tracer)


async def _traced(
    request: web.Request,
    services: Services,
    actor: Actor,
    name: str,
    tail: str,
    byok: bool,
    tracer: tracing.Tracer,
) -> web.StreamResponse:
    """:func:`_serve` inside the request's root span (``Intercept``, renamed
    ``Passthrough`` for a passthrough route), a child of the client's span when it sent a
    ``traceparent``; the span is current while the request runs, so the pool's and the
    pipeline's spans nest under it. Its trace id goes to the access line."""
    span = tracer.start_server(
        tracing.INTERCEPT,
        request.headers,
        {"request_path": request.path, "user_id": str(actor.user_id)},
    )
    entry = current_entry()
    if entry is not None:
        entry.trace_id = tracer.trace_id(span)
    with tracing.current_span(tracer, span, _describe):
        response = await _serve(request, services, actor, name, tail, byok, span)
        if response.status >= 500:
            # Answers the pipeline did not mark itself (pool errors, shutting down).
            tracer.fail(span, f"HTTP {response.status}")
        return response


def _describe(exc: BaseException) -> str:
    # A cancelled request task is a client that went away.
    if isinstance(exc, asyncio.CancelledError):
        return "client disconnected"
    return tracing.describe_error(exc)


async def _serve(
    request: web.Request,
    services: Services,
    actor: Actor,
    name: str,
    tail: str,
    byok: bool,
    span: tracing.Span | None,
) -> web.StreamResponse:
    """Acquire the actor's bridge, route against its snapshot, serve."""
    try:
        async with services.pool.acquire(actor) as bridge:
            route = bridge.snapshot.resolve(
                name,
                tail,
                request.method,
                websocket=request.headers.get("Upgrade", "").lower() == "websocket",
            )
            if isinstance(route, RoutingError):
                return routing_error_response(request, route)
            if span is not None and isinstance(route, PassthroughRoute):
                span.update_name(tracing.PASSTHROUGH)
            if not isinstance(route, WebSocketRoute):
                # The request's actor, not the bridge's: its limits are the current ones.
                return await bridge.handle(request, route, byok=byok, actor=actor)
            opened = await bridge.open_websocket(
                request, route, request.app[RESPONSES_SOCKETS], byok=byok, actor=actor
            )
    except PoolShuttingDown:
        # No bridge, so no snapshot: the error shape is judged from the request alone.
        return error_response(
            family_for_request(tail, request.headers),
            503,
            "aibridge is shutting down; retry shortly",
        )
    except (BridgeBuildError, RetryLimitExceeded) as exc:
        log.error("could not build a request bridge", extra={"error": str(exc)})
        return error_response(
            family_for_request(tail, request.headers),
            503,
            "aibridge could not prepare this request; retry",
        )
    # A Responses WebSocket runs after its bridge was released (see open_websocket).
    if isinstance(opened, web.StreamResponse):
        return opened
    return await opened.run()


def split_path(request: web.Request) -> tuple[str, str]:
    """The provider name (decoded) and the path after it exactly as sent.

    Taken from the raw path: aiohttp's ``match_info`` is already percent-decoded, so an
    encoded ``/`` would have become a separator and hidden what was encoded.
    """
    raw = request.rel_url.raw_path
    cut = raw.find("/", 1)
    if cut < 0:
        cut = len(raw)
    name = raw[1:cut]
    return (unquote(name) if "%" in name else name), (raw[cut:] or "/")
