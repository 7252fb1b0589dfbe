"""OpenAI Responses over WebSocket: ``GET /{name}/v1/responses`` upgraded, relayed to the
provider's own Responses WebSocket.

Codex CLI opens one socket per session and sends each turn as a text message
``{"type":"response.create", …a Responses body…}``; the server answers with the events a
Responses SSE stream carries, one JSON text message each, one response at a time.

The handshake (:func:`open_socket`) is judged like an HTTP request to the Responses
route, so a client gets the same answer on both transports: a cross-origin ``Origin`` is
a 403, the user's socket limit a 429, the limiter's concurrency (the socket holds one of
the user's and key's ``max_concurrent`` slots and one of the replica's
``max_concurrency`` for its lifetime) a 429 with ``Retry-After``, the credentials come
from the key ring (failing over to the next key when the upstream handshake is refused
with 401/429) or the client's own key (BYOK); an exhausted pool, an unreachable upstream
or a refused upgrade is answered with the HTTP status the Responses route would give,
and nothing is recorded. Only then is the client's upgrade accepted.

The relay (:meth:`ResponsesSocket.run`) forwards every frame unchanged in both
directions. Each client ``response.create`` is admitted by the limiter without a slot of
its own (model access, request and token rates, budgets): a refusal is answered with an
error event (``{"type":"error","status":429,…}``, the limit's error type as ``code``)
and recorded, and nothing goes upstream. An admitted one starts one interception,
observed with the Responses stream observer, and settled when it ends; the upstream's
terminal event (``response.completed`` / ``incomplete`` / ``failed``) or ``error`` event
ends it, recorded before the client sees that event. A socket that closes with responses
in flight ends them: ``client_disconnected`` when the client left (the upstream socket
is closed at once: the gateway pays for every token it keeps reading), an upstream
failure when the upstream did.

Limits: 32 MiB per client message and 16 MiB per upstream message (close 1009), binary
client frames close with 1003. A shutdown (:meth:`ResponsesSockets.shutdown`) refuses new
handshakes and closes every socket with 1001 once its responses in flight are done, or
when the drain deadline passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Final, Literal

import aiohttp
import msgspec
import orjson
from aiohttp import WSCloseCode, WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from aibridge.actor import Actor
from aibridge.governance.limiter import Demand, Limiter, Refusal, Ticket
from aibridge.ids import new_uuid7
from aibridge.intercept.actor_headers import actor_metadata, add_actor_headers
from aibridge.intercept.admission import refusal_outcome, refused
from aibridge.intercept.byok import credential_hint
from aibridge.intercept.clientinfo import detect_client, session_id
from aibridge.intercept.errors import (
    UPSTREAM_TIMED_OUT,
    UPSTREAM_UNREACHABLE,
    Rejection,
    error_response,
    error_type_for_status,
)
from aibridge.intercept.failover import FAILOVER_STATUSES
from aibridge.intercept.hooks import InterceptionHooks
from aibridge.intercept.interception import CLIENT_GONE, Interception, Outcome
from aibridge.intercept.relay import stream_outcome
from aibridge.intercept.request import RequestInfo
from aibridge.intercept.responses.api import reject_background
from aibridge.intercept.responses.extract import ResponsesStreamObserver
from aibridge.intercept.responses.request import decode_responses_request
from aibridge.intercept.sse import SSEEvent
from aibridge.intercept.upstream_headers import (
    client_headers_for_upstream,
    response_headers_for_client,
)
from aibridge.providers.base import Provider
from aibridge.providers.keyring import KeysExhausted, PoolKey
from aibridge.providers.routes import WebSocketRoute
from aibridge.providers.upstream import UpstreamClients, size_text
from aibridge.store.types import utcnow

__all__ = [
    "MAX_CLIENT_MESSAGE",
    "MAX_UPSTREAM_MESSAGE",
    "ResponsesSocket",
    "ResponsesSockets",
    "open_socket",
]

log = logging.getLogger(__name__)

MAX_CLIENT_MESSAGE: Final = 32 * 1024 * 1024
"""The largest message a client may send (a larger one closes the socket with 1009)."""
MAX_UPSTREAM_MESSAGE: Final = 16 * 1024 * 1024
"""The largest message the upstream may send (a larger one closes both sockets with 1009)."""
HANDSHAKE_TIMEOUT: Final = 30.0
"""Seconds the upstream may take to accept the upgrade."""
HEARTBEAT: Final = 30.0
"""Seconds between pings on both sockets, so a peer that vanished without closing its
connection is noticed (and its socket, with the user's lease, freed)."""
CLOSE_TIMEOUT: Final = 5.0
"""Seconds a peer may take to answer our close frame before the connection is dropped."""

SHUTTING_DOWN = "aibridge is shutting down; retry shortly"

# Handshake headers aiohttp's client writes itself (key, version, extensions), and the
# browser's Origin, which describes the client's page and not the gateway.
_HANDSHAKE_HEADERS = ("Origin", "Sec-WebSocket-Protocol")
_CREATE = b"response.create"

_Upstream = aiohttp.ClientWebSocketResponse[Literal[False]]
"""The upstream socket (text messages as bytes: relayed without decoding)."""
_Close = tuple[int, str]
"""How to close the client's socket: code and reason."""

SHUT_DOWN = Outcome("server_error", "gateway shut down before the response completed")
"""The outcome of a response still in flight when the shutdown's drain deadline passed."""


class _Kind(msgspec.Struct):
    type: Any = None
    status: Any = None


_KIND = msgspec.json.Decoder(_Kind)


def _error_status(data: bytes) -> int | None:
    """The HTTP status a wrapped ``error`` event carries (``{"type":"error","status":429,
    …}``, how a Responses WebSocket reports a refused ``response.create``), if any."""
    try:
        event = _KIND.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None
    status = event.status
    if event.type != "error" or not isinstance(status, int) or isinstance(status, bool):
        return None
    return status if 400 <= status < 600 else None


def _message_type(data: bytes) -> str | None:
    """The ``type`` of a client message; None when it is not a JSON object with one."""
    try:
        kind = _KIND.decode(data).type
    except (msgspec.DecodeError, RecursionError):
        return None
    return kind if isinstance(kind, str) else None


def error_event(
    status: int, message: str, kind: str = "invalid_request_error", code: str | None = None
) -> bytes:
    """The error event a Responses WebSocket sends for a refused ``response.create``
    (``{"type":"error","status",…}``; Codex reads ``status`` like an HTTP status)."""
    return orjson.dumps(
        {
            "type": "error",
            "status": status,
            "error": {"type": kind, "code": code, "message": message, "param": None},
        }
    )


def refusal_event(refusal: Refusal) -> bytes:
    """The error event of a ``response.create`` the limiter refused: the HTTP refusal's
    status, type and code (the limit's error type), so a client reads it the same way."""
    if refusal.status == 429:
        kind = (
            "insufficient_quota"
            if refusal.error_type == "budget_exceeded"
            else "rate_limit_exceeded"
        )
    else:
        kind = "invalid_request_error"
    return error_event(refusal.status, refusal.message, kind, refusal.error_type)


# --- the process's sockets --------------------------------------------------------------


class ResponsesSockets:
    """Every open Responses socket of this process: the per-user limit and the shutdown.

    ``per_user`` is how many sockets one user may hold at once (across their keys and
    providers); ``drain_timeout`` how long :meth:`shutdown` lets responses in flight
    finish; ``max_client_message`` / ``max_upstream_message`` the largest message each
    side may send (bytes).
    """

    def __init__(
        self,
        *,
        per_user: int,
        drain_timeout: float,
        max_client_message: int = MAX_CLIENT_MESSAGE,
        max_upstream_message: int = MAX_UPSTREAM_MESSAGE,
    ) -> None:
        self.per_user = per_user
        self.drain_timeout = drain_timeout
        self.max_client_message = max_client_message
        self.max_upstream_message = max_upstream_message
        self.closing = False
        self._counts: dict[uuid.UUID, int] = {}
        self._open: set[ResponsesSocket] = set()

    def __len__(self) -> int:
        """Sockets open now."""
        return len(self._open)

    def lease(self, user_id: uuid.UUID) -> bool:
        """Take one of ``user_id``'s sockets; False when they hold ``per_user`` already."""
        count = self._counts.get(user_id, 0)
        if count >= self.per_user:
            return False
        self._counts[user_id] = count + 1
        return True

    def release(self, user_id: uuid.UUID) -> None:
        """Give back a socket taken with :meth:`lease`."""
        count = self._counts.get(user_id, 0) - 1
        if count > 0:
            self._counts[user_id] = count
        else:
            self._counts.pop(user_id, None)

    def count(self, user_id: uuid.UUID) -> int:
        """Sockets ``user_id`` holds now."""
        return self._counts.get(user_id, 0)

    def _add(self, socket: ResponsesSocket) -> None:
        self._open.add(socket)

    def _discard(self, socket: ResponsesSocket) -> None:
        self._open.discard(socket)

    async def shutdown(self) -> None:
        """Refuse new handshakes; close every socket with 1001 ("going away") once its
        responses in flight are done, or when the drain deadline passes."""
        self.closing = True
        sockets = list(self._open)
        if not sockets:
            return
        log.info("closing Responses WebSockets", extra={"count": len(sockets)})
        await asyncio.gather(
            *(s.go_away(self.drain_timeout) for s in sockets), return_exceptions=True
        )


# --- the handshake ------------------------------------------------------------------------


def cross_origin(request: web.Request) -> str | None:
    """The client's ``Origin`` when it names another origin than the gateway's own (a
    page on another site must not drive a user's socket), else None."""
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    try:
        parsed = URL(origin)
        own = URL.build(scheme=parsed.scheme, authority=request.host)
    except (TypeError, ValueError):
        return origin
    if not parsed.absolute or parsed.host is None:
        return origin
    same = (parsed.host.lower(), parsed.port) == ((own.host or "").lower(), own.port)
    return None if same else origin


async def open_socket(
    request: web.Request,
    route: WebSocketRoute,
    actor: Actor,
    upstream: UpstreamClients,
    hooks: InterceptionHooks,
    sockets: ResponsesSockets,
    limiter: Limiter,
    *,
    byok: bool,
) -> ResponsesSocket | web.StreamResponse:
    """The handshake: the upstream socket dialled and ready to relay, or the HTTP answer
    that refuses the upgrade (see the module docstring for the order of the checks)."""
    provider = route.provider
    family = provider.family
    if (origin := cross_origin(request)) is not None:
        return error_response(
            family,
            403,
            f"cross-origin WebSocket refused: Origin {origin!r} is not this gateway's "
            f"origin ({request.host})",
        )
    if sockets.closing:
        return error_response(family, 503, SHUTTING_DOWN)
    client = web.WebSocketResponse(
        max_msg_size=sockets.max_client_message,
        compress=True,
        heartbeat=HEARTBEAT,
        decode_text=False,
        timeout=CLOSE_TIMEOUT,
    )
    if not client.can_prepare(request).ok:
        return error_response(
            family,
            400,
            "not a valid WebSocket upgrade: send Connection: Upgrade, Upgrade: websocket, "
            "Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key",
        )
    try:
        byok_hint = credential_hint(provider, request.headers, byok=byok)
    except Rejection as exc:
        return exc.response(family)
    if not sockets.lease(actor.user_id):
        return error_response(
            family,
            429,
            f"too many open Responses WebSockets for this user (at most "
            f"{sockets.per_user}); close one, or use HTTP",
        )
    try:
        slot = await limiter.open_slot(actor)
    except BaseException:
        sockets.release(actor.user_id)
        raise
    if isinstance(slot, Refusal):
        sockets.release(actor.user_id)
        return refused(family, slot)
    try:
        dialled = await _dial(
            request,
            route,
            upstream,
            byok=byok,
            max_message=sockets.max_upstream_message,
            actor=actor,
        )
    except BaseException:
        sockets.release(actor.user_id)
        slot.release_nowait()
        raise
    if isinstance(dialled, web.StreamResponse):
        sockets.release(actor.user_id)
        await slot.settle()
        return dialled
    upstream_ws, key = dialled
    return ResponsesSocket(
        request,
        client,
        upstream_ws,
        provider=provider,
        actor=actor,
        hooks=hooks,
        sockets=sockets,
        limiter=limiter,
        slot=slot,
        byok_hint=byok_hint,
        credential_hint=key.hint if key is not None else None,
    )


def _upstream_headers(request: web.Request, provider: Provider, *, byok: bool) -> CIMultiDict[str]:
    """The client's handshake headers as they go upstream: sanitised like an HTTP request's
    (no gateway key, cookies or hop-by-hop headers), without the handshake's own."""
    headers = client_headers_for_upstream(
        request.headers, keep_credentials=byok, accept_encoding=None
    )
    for name in list(headers):
        if name.lower().startswith("sec-websocket-"):
            del headers[name]
    for name in _HANDSHAKE_HEADERS:
        headers.popall(name, None)
    headers.update(provider.options.extra_headers)
    return headers


async def _dial(
    request: web.Request,
    route: WebSocketRoute,
    upstream: UpstreamClients,
    *,
    byok: bool,
    max_message: int,
    actor: Actor,
) -> tuple[_Upstream, PoolKey | None] | web.Response:
    """Open the upstream socket, failing over to the next pooled key on a refused (401/429)
    handshake; or the answer the client gets instead."""
    provider = route.provider
    family = provider.family
    url = provider.upstream_url(route.upstream_suffix, request.rel_url.raw_query_string)
    headers = _upstream_headers(request, provider, byok=byok)
    if provider.options.send_actor_headers:
        # The handshake is the one upstream request of the socket: its session id is the
        # one the headers name (a body's user id arrives later, per response).
        client_name = detect_client(request.headers)
        metadata = actor_metadata(client_name, session_id(client_name, request.headers, None))
        add_actor_headers(headers, actor, metadata)
    protocols = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    walker = None if byok else provider.keys.walker()
    session = upstream.for_url(url)
    try:
        while True:
            key = None
            if walker is not None:
                key = walker.next_key()
                headers[provider.auth_header] = provider.auth_value(key.secret)
            try:
                ws = await session.ws_connect(
                    url,
                    headers=headers,
                    protocols=protocols,
                    max_msg_size=max_message,
                    compress=15,
                    decode_text=False,
                    heartbeat=HEARTBEAT,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT),
                    autoclose=True,
                )
            except aiohttp.WSServerHandshakeError as exc:
                if walker is not None and key is not None and exc.status in FAILOVER_STATUSES:
                    walker.mark_failed(key, exc.status, exc.headers or {})
                    continue
                status = exc.status if exc.status >= 400 else 502
                log.warning(
                    "upstream refused the WebSocket upgrade",
                    extra={"provider": provider.name, "status": exc.status},
                )
                return error_response(
                    family,
                    status,
                    f"upstream refused the WebSocket upgrade (HTTP {exc.status}); use HTTP",
                )
            if walker is not None and key is not None:
                walker.mark_ok(key)
            return ws, key
    except KeysExhausted as exc:
        extra = {"Retry-After": str(exc.retry_after_seconds)} if exc.status == 429 else None
        return error_response(family, exc.status, str(exc), extra)
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        log.warning(
            "upstream WebSocket timed out",
            extra={"provider": provider.name, "error": str(exc) or "no response"},
        )
        return error_response(family, 504, UPSTREAM_TIMED_OUT)
    except aiohttp.ClientError as exc:
        log.warning(
            "upstream WebSocket unreachable",
            extra={"provider": provider.name, "error": f"{type(exc).__name__}: {exc}"},
        )
        return error_response(family, 502, UPSTREAM_UNREACHABLE)
    finally:
        if walker is not None:
            walker.finish()


# --- the relay ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Turn:
    """One ``response.create`` in flight: its interception and the observer of its events."""

    ix: Interception
    observer: ResponsesStreamObserver


class ResponsesSocket:
    """One accepted socket: the client's and the upstream's, relayed frame by frame.

    Built by :func:`open_socket`; :meth:`run` accepts the client's upgrade and relays until
    either side closes.
    """

    def __init__(
        self,
        request: web.Request,
        client: web.WebSocketResponse,
        upstream: _Upstream,
        *,
        provider: Provider,
        actor: Actor,
        hooks: InterceptionHooks,
        sockets: ResponsesSockets,
        limiter: Limiter,
        slot: Ticket,
        byok_hint: str | None,
        credential_hint: str | None,
    ) -> None:
        self.request = request
        self.client = client
        self.upstream = upstream
        self.provider = provider
        self.actor = actor
        self.hooks = hooks
        self.sockets = sockets
        self.limiter = limiter
        self.slot = slot
        """The socket's concurrency slot, settled (freed) when the socket closes."""
        self.byok_hint = byok_hint
        self.credential_hint = credential_hint
        headers = request.headers
        self.client_name = detect_client(headers)
        self.user_agent = headers.get("User-Agent")
        self._turns: deque[_Turn] = deque()
        self._idle = asyncio.Event()
        self._idle.set()
        self._going_away = False
        self._leave = asyncio.Event()
        self._done = asyncio.Event()
        self._released = False

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> web.WebSocketResponse:
        """Accept the client's upgrade (with the upstream's handshake headers) and relay
        until one side closes; every interception started on the socket is ended."""
        client = self.client
        client.headers.extend(_handshake_headers_for_client(self.upstream))
        self.sockets._add(self)
        if self.sockets.closing:
            # The shutdown began after this handshake was judged: it did not see this
            # socket, so it goes away at once (the client reconnects elsewhere).
            self._leave.set()
        closing: _Close | None = None
        try:
            await client.prepare(self.request)
            tasks = (
                asyncio.create_task(self._upstream_to_client()),
                asyncio.create_task(self._client_to_upstream()),
                asyncio.create_task(self._leave_when_told()),
            )
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                results = await asyncio.gather(*tasks, return_exceptions=True)
            for task, result in zip(tasks, results, strict=True):
                if isinstance(result, Exception):
                    log.error(
                        "Responses WebSocket relay failed",
                        exc_info=result,
                        extra={"provider": self.provider.name},
                    )
                elif task in done and closing is None and isinstance(result, tuple):
                    closing = result
        finally:
            # Whichever side ended first (or aiohttp cancelled the handler because the
            # client's connection dropped), what is still in flight was never answered.
            self._end_turns(SHUT_DOWN if self._leave.is_set() else CLIENT_GONE)
            try:
                await self._close_both(closing)
            finally:
                # Also when the close is cancelled (aiohttp cancels the handler of a
                # connection that dropped, and at shutdown): the lease and the slot are
                # given back and a shutdown waiting on this socket goes on at once.
                self.sockets._discard(self)
                self._release()
                self._done.set()
        return client

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self.sockets.release(self.actor.user_id)
            # In the handler's finally, possibly cancelled: freed in the background.
            self.slot.release_nowait()

    async def _close_both(self, closing: _Close | None) -> None:
        """Close both sockets: the client with ``closing`` (code, reason) unless it is
        closed already, the upstream with 1000 (1001 on shutdown). Bounded: a peer that
        does not answer our close frame is dropped."""
        leaving = self._leave.is_set()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.upstream.close(
                    code=WSCloseCode.GOING_AWAY if leaving else WSCloseCode.OK
                )
        if self.client.closed:
            return
        code, reason = closing or (WSCloseCode.OK, "")
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.client.close(code=code, message=reason.encode()[:120])

    async def _leave_when_told(self) -> _Close:
        await self._leave.wait()
        return WSCloseCode.GOING_AWAY, "aibridge is shutting down; reconnect"

    async def go_away(self, deadline: float) -> None:
        """Shutdown: close with 1001 once the responses in flight are done (at most
        ``deadline`` seconds from now; what is still in flight then is ended unfinished),
        and wait (bounded) until the socket has closed."""
        self._going_away = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(deadline):
                await self._idle.wait()
        self._leave.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2 * CLOSE_TIMEOUT):
                await self._done.wait()

    # -- client -> upstream ------------------------------------------------------------

    async def _client_to_upstream(self) -> _Close | None:
        """Relay the client's messages; each ``response.create`` starts an interception
        first. Returns when the client closes (or breaks a rule: binary, oversize), with
        how to close the client when it is still open."""
        client, upstream = self.client, self.upstream
        while True:
            msg = await client.receive()
            kind = msg.type
            if kind is WSMsgType.TEXT:
                data: bytes = msg.data
                if not await self._admit(data):
                    continue
                try:
                    await upstream.send_frame(data, WSMsgType.TEXT)
                except ConnectionError:
                    return WSCloseCode.INTERNAL_ERROR, "upstream connection lost"
            elif kind is WSMsgType.BINARY:
                return (
                    WSCloseCode.UNSUPPORTED_DATA,
                    "binary frames are not supported; send JSON text messages",
                )
            elif kind is WSMsgType.ERROR:
                # aiohttp has closed the socket already (1009 for an oversize message).
                log.info(
                    "Responses WebSocket client error",
                    extra={"error": str(client.exception() or msg.data)},
                )
                return None
            else:  # CLOSE, CLOSING, CLOSED
                return None

    async def _admit(self, data: bytes) -> bool:
        """Start the interception of a ``response.create``; False (after answering the
        client with an error event) for one the gateway refuses, or during shutdown."""
        if _CREATE not in data or _message_type(data) != "response.create":
            return True
        if self._going_away:
            # Not forwarded: the socket closes with 1001 as soon as it is idle, and the
            # client retries this turn on a new socket.
            return False
        try:
            info = decode_responses_request(data)
            reject_background(info)
        except Rejection as exc:
            await self.client.send_frame(error_event(exc.status, exc.message), WSMsgType.TEXT)
            return False
        provider = self.provider
        admitted = await self.limiter.admit(
            Demand(
                actor=self.actor,
                provider_name=provider.name,
                provider_type=provider.type,
                model=info.model or "",
                body_bytes=len(data),
                max_output_tokens=info.max_output_tokens,
                hold_slot=False,
            )
        )
        ix = self._interception(info)
        if isinstance(admitted, Refusal):
            # Recorded like a refused HTTP request; the socket stays open for the next turn.
            self.hooks.started(ix)
            self.hooks.ended(ix, refusal_outcome(admitted))
            await self.client.send_frame(refusal_event(admitted), WSMsgType.TEXT)
            return False
        ix.ticket = admitted
        self.hooks.started(ix)
        self._turns.append(_Turn(ix, ResponsesStreamObserver()))
        self._idle.clear()
        return True

    def _interception(self, info: RequestInfo) -> Interception:
        headers = self.request.headers
        return Interception(
            id=new_uuid7(),
            provider=self.provider,
            api="responses",
            actor=self.actor,
            request=info,
            client=self.client_name,
            user_agent=self.user_agent,
            session_id=session_id(self.client_name, headers, info.user_id),
            byok_hint=self.byok_hint,
            started_at=utcnow(),
            began=time.perf_counter(),
            credential_hint=self.credential_hint,
        )

    # -- upstream -> client ------------------------------------------------------------

    async def _upstream_to_client(self) -> _Close | None:
        """Relay the upstream's messages, observing each for the response in flight and
        ending its interception (before the client sees the terminal event). Returns when
        either side is gone, with how to close the client when it is still open."""
        client, upstream = self.client, self.upstream
        while True:
            msg = await upstream.receive()
            kind = msg.type
            if kind is WSMsgType.TEXT:
                data: bytes = msg.data
                ended = self._observe(data) if self._turns else None
                if ended is not None:
                    # Before the client sees the end, so its next response.create is
                    # admitted against the exact usage of this one.
                    await ended.settle()
                try:
                    await client.send_frame(data, WSMsgType.TEXT)
                except ConnectionError:
                    return None
            elif kind is WSMsgType.BINARY:
                try:
                    await client.send_frame(msg.data, WSMsgType.BINARY)
                except ConnectionError:
                    return None
            elif kind is WSMsgType.ERROR:
                # aiohttp hands protocol errors (1009 for an oversize message) over as the
                # message's data, and keeps exception() for the others.
                exc = msg.data if isinstance(msg.data, BaseException) else upstream.exception()
                too_big = isinstance(exc, aiohttp.WebSocketError) and exc.code == 1009
                reason = (
                    "upstream sent a message larger than "
                    f"{size_text(self.sockets.max_upstream_message)}"
                    if too_big
                    else f"upstream WebSocket failed: {type(exc).__name__}"
                )
                self._end_turns(Outcome("server_error", reason))
                return (
                    WSCloseCode.MESSAGE_TOO_BIG if too_big else WSCloseCode.INTERNAL_ERROR,
                    reason,
                )
            else:  # CLOSE, CLOSING, CLOSED
                closed = upstream.close_code
                self._end_turns(
                    Outcome(
                        "server_error",
                        f"upstream closed the WebSocket (code {closed}) before the response "
                        "completed",
                    )
                )
                return _relayable(closed), "upstream closed the connection"

    def _observe(self, data: bytes) -> Ticket | None:
        """Observe one upstream message for the response in flight; when it ends that
        response, end its interception and return its ticket to settle."""
        turn = self._turns[0]
        observer = turn.observer
        observer.observe(SSEEvent(None, data, b""))
        if not observer.ended:
            return None
        self._turns.popleft()
        result = observer.result()
        outcome = stream_outcome(result)
        if result.error is not None and (status := _error_status(data)) is not None:
            # The status says more than the error's type (OpenAI's 429 is "requests").
            outcome = Outcome(error_type_for_status(status), result.error.message)
        self.hooks.observed(turn.ix, result)
        self.hooks.ended(turn.ix, outcome)
        if not self._turns:
            self._idle.set()
        return turn.ix.ticket

    def _end_turns(self, outcome: Outcome) -> None:
        """End every interception still in flight with ``outcome`` (what was observed of
        each is recorded all the same)."""
        turns = self._turns
        while turns:
            turn = turns.popleft()
            self.hooks.observed(turn.ix, turn.observer.result())
            self.hooks.ended(turn.ix, outcome)
            if turn.ix.ticket is not None:
                # Possibly on a cancelled task's way out: settled in the background.
                turn.ix.ticket.release_nowait()
        self._idle.set()


def _relayable(code: int | None) -> int:
    """The close code the client gets for the upstream's: the same one, except those that
    may not be sent in a close frame (none given: 1000; the connection broke: 1011)."""
    if code is None or code == 1005:
        return WSCloseCode.OK
    if code in (1006, 1015) or not 1000 <= code < 5000:
        return WSCloseCode.INTERNAL_ERROR
    return code


def _handshake_headers_for_client(upstream: _Upstream) -> CIMultiDict[str]:
    """The upstream handshake's headers worth relaying to the client (request id, model,
    Codex's turn state …), without the upgrade's own."""
    response = upstream._response  # aiohttp keeps the handshake response only here
    out = response_headers_for_client(response.headers)
    for name in list(out):
        if name.lower().startswith("sec-websocket-") or name.lower() == "content-type":
            del out[name]
    return out
