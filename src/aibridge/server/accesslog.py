"""The access log: exactly one ``aibridge.access`` line per HTTP request, written when the
response ended (a stream: after its last byte; a WebSocket: when it closed).

The middleware opens an :class:`AccessEntry` for the request in a context variable; the
pipeline's hooks (:class:`AccessLogAddon`) fill in what only the interception knows —
provider, model, the API, tokens, cost, the error type — without a lookup: the hooks run in
the request's own task, so the context variable is the request's entry. The line's fields:
``request_id`` (also sent back as ``X-AIBridge-Request-Id``), ``user`` and ``user_id``,
``provider``, ``model``, ``route``, ``method``, ``path`` (no query: it may hold a key),
``status``, ``duration_ms``, ``input_tokens``/``output_tokens``/``cache_read_tokens``/
``cache_write_tokens``, ``cost_usd`` (None when unpriced), ``error_type`` and
``trace_id`` (the data plane's root span, when tracing is on and the trace sampled).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass

from aiohttp import web

from aibridge.actor import Actor
from aibridge.admin.deps import ACTOR_KEY
from aibridge.governance.prices import PICO_PER_USD, PriceBook
from aibridge.ids import new_uuid4
from aibridge.intercept.interception import Interception, Outcome
from aibridge.intercept.observations import Observation
from aibridge.providers.routes import PassthroughRoute
from aibridge.telemetry import FLAT_FIELDS

ACCESS_LOGGER = "aibridge.access"
REQUEST_ID_HEADER = "X-AIBridge-Request-Id"
CLIENT_CLOSED_STATUS = 499
"""The status logged when the client went away before the response ended (nginx's)."""

log = logging.getLogger(ACCESS_LOGGER)

GATEWAY_MADE = frozenset({"request_id", "user_id", "route", "error_type", "trace_id"})
"""Access-line fields whose text the gateway made (a random id, a user's UUID, a route
pattern or API name, an error type of a fixed list, the hex id of its own trace): not
scanned for secrets. The others (path, method, model, user and provider names) may hold
text a client or an admin typed."""


@dataclass(slots=True)
class AccessEntry:
    """What the access line of one request will say (filled in as the request runs)."""

    request_id: str
    route: str | None = None
    provider: str | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_pusd: int | None = None
    error_type: str | None = None
    actor: Actor | None = None
    """Who (the interception's actor, else the request's): named in the line only when it
    is written, so a gateway with the access log off never formats a user id."""
    trace_id: str | None = None


_CURRENT: ContextVar[AccessEntry | None] = ContextVar("aibridge_access_entry", default=None)


def current_entry() -> AccessEntry | None:
    """The access entry of the request this task serves (None outside a request)."""
    return _CURRENT.get()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Time the request and write its one access line, however it ended."""
    entry = AccessEntry(request_id=new_uuid4().hex)
    token = _CURRENT.set(entry)
    began = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        if not response.prepared:
            # A plain response is prepared after the middleware returns (outside the
            # context the prepare signal reads): named here instead.
            response.headers[REQUEST_ID_HEADER] = entry.request_id
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED_STATUS
        raise
    finally:
        _CURRENT.reset(token)
        _write(request, entry, status, time.perf_counter() - began)


def add_request_id(response: web.StreamResponse) -> None:
    """The request id on a response prepared inside the handler (streams, WebSockets), so
    a client can quote it: called from the app's one ``on_response_prepare`` handler
    (:func:`aibridge.server.app.prepare_headers`)."""
    entry = _CURRENT.get()
    if entry is not None:
        response.headers[REQUEST_ID_HEADER] = entry.request_id


def _write(request: web.Request, entry: AccessEntry, status: int, seconds: float) -> None:
    if not log.isEnabledFor(logging.INFO):
        # Off (e.g. --log-level warning): nothing is built.
        return
    actor = entry.actor
    if actor is None:
        actor = request.get(ACTOR_KEY)
    user, user_id = (None, None) if actor is None else (actor.username, str(actor.user_id))
    route = entry.route
    if route is None:
        info = request.match_info.route.resource
        route = info.canonical if info is not None else None
    cost = entry.cost_pusd
    method, path = request.method, request.path
    # The field names are fixed here and none is credential-named, so the formatters mask
    # each string value on its own and skip the regex pass over the whole line
    # (telemetry.FLAT_FIELDS says why that is safe). Client-sent text (path, method,
    # model, user names) is still masked like every log line.
    fields = {
        "access": True,
        "request_id": entry.request_id,
        "user": user,
        "user_id": user_id,
        "provider": entry.provider,
        "model": entry.model,
        "route": route,
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "input_tokens": entry.input_tokens,
        "output_tokens": entry.output_tokens,
        "cache_read_tokens": entry.cache_read_tokens,
        "cache_write_tokens": entry.cache_write_tokens,
        # Python's int / int is correctly rounded: the same float as
        # float(usd_from_pico(cost)), without the Decimal.
        "cost_usd": None if cost is None else cost / PICO_PER_USD,
        "error_type": entry.error_type,
        "trace_id": entry.trace_id,
    }
    # Logger.info would also walk the stack for the caller's file and line (findCaller),
    # which no format of ours prints: the record is made and handled directly.
    record = log.makeRecord(
        ACCESS_LOGGER, logging.INFO, __file__, 0, f"{method} {path} {status}", (), None
    )
    record.__dict__.update(fields)
    record.__dict__[FLAT_FIELDS] = (fields, GATEWAY_MADE)
    log.handle(record)


class AccessLogAddon:
    """Feeds the request's :class:`AccessEntry` from the pipeline's hooks. Tokens and cost
    add up over every upstream call (the injected-tool loop's, a WebSocket's responses);
    each call is priced like its usage record (``prices``)."""

    __slots__ = ("prices",)

    def __init__(self, prices: PriceBook | None = None) -> None:
        self.prices = prices if prices is not None else PriceBook()

    def started(self, ix: Interception) -> None:
        """Who, where and which model."""
        entry = _CURRENT.get()
        if entry is None:
            return
        entry.actor = ix.actor
        entry.provider, entry.model, entry.route = ix.provider.name, ix.model or None, ix.api

    def observed(self, ix: Interception, observation: Observation) -> None:
        """Add the usage (and its cost, when priced) of the calls observed."""
        entry = _CURRENT.get()
        if entry is None or not observation.usages or not log.isEnabledFor(logging.INFO):
            # No line will be written (the level is set at start-up): nothing to price.
            return
        table = self.prices.table
        for usage in observation.usages:
            entry.input_tokens += usage.input
            entry.output_tokens += usage.output
            entry.cache_read_tokens += usage.cache_read
            entry.cache_write_tokens += usage.cache_write
            cost = table.cost_pusd(
                ix.provider.type,
                (usage.model, ix.model),
                input=usage.input,
                output=usage.output,
                cache_read=usage.cache_read,
                cache_write=usage.cache_write,
            )
            if cost is not None:
                entry.cost_pusd = (entry.cost_pusd or 0) + cost

    def ended(self, ix: Interception, outcome: Outcome) -> None:
        """The recorded error type (None: completed)."""
        entry = _CURRENT.get()
        if entry is not None:
            entry.error_type = outcome.error_type

    def passed_through(self, route: PassthroughRoute, method: str) -> None:
        """A passthrough request: its provider."""
        entry = _CURRENT.get()
        if entry is not None:
            entry.provider, entry.route = route.provider.name, "passthrough"
