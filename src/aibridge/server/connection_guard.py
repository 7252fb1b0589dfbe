"""Read deadlines for client connections, so slow or stalled clients cannot pin them.

aiohttp's server has an idle keep-alive timeout but no bound on how long a client may
take to send its request headers, nor on a request body that stops arriving: a client
trickling one header byte at a time (slowloris) or stalling mid-body keeps a connection
and its handler forever. :class:`GuardedRequestHandler` adds, per connection:

* a **header deadline**: the request line and headers must be complete within
  ``header_timeout`` seconds of the connection opening, or of the first byte of the
  next request on a kept-alive connection (an absolute deadline: trickling does not
  extend it);
* a **body idle timeout**: while a request body is incomplete, the client may not be
  silent for more than ``body_timeout`` seconds (a slow but steady upload is fine).

Idle time between requests is aiohttp's own ``keepalive_timeout``. One lazily re-armed
timer per connection does it all: per request the hot path only stores a deadline.

This hooks :class:`aiohttp.web_protocol.RequestHandler` (the aiohttp version is pinned
in ``requirements.lock``; the tests exercise every hook with raw sockets).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

_HEADERS, _BODY, _IDLE = 0, 1, 2


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Seconds a client may take for its request headers, and may stay silent mid-body."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection protocol with a header deadline and a body idle timeout."""

    __slots__ = ("_deadline", "_guard", "_limits", "_payload", "_phase")

    def __init__(self, manager: web.Server, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._phase = _HEADERS
        self._deadline = 0.0
        self._guard: asyncio.TimerHandle | None = None
        self._payload: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the first request's header deadline."""
        super().connection_made(transport)
        self._expect(_HEADERS, self._limits.header_timeout)

    def connection_lost(self, exc: BaseException | None) -> None:
        """Drop the timer with the connection."""
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        self._payload = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse as aiohttp does, then move the deadline on from what arrived."""
        if self._phase == _IDLE and data:
            # The first bytes of the next request on a kept-alive connection.
            self._expect(_HEADERS, self._limits.header_timeout)
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:
            # A request's headers are complete; its body (if any) must keep coming.
            payload = self._messages[-1][1] if self._messages else None
            if payload is None or payload.is_eof():
                self._phase, self._payload = _IDLE, None
            else:
                self._payload = payload
                self._expect(_BODY, self._limits.body_timeout)
        elif self._phase == _BODY:
            if self._payload.is_eof():
                self._phase, self._payload = _IDLE, None
            else:
                self._deadline = self._loop.time() + self._limits.body_timeout

    def _expect(self, phase: int, timeout: float) -> None:
        self._phase = phase
        self._deadline = self._loop.time() + timeout
        if self._guard is None:
            self._guard = self._loop.call_at(self._deadline, self._check)

    def _check(self) -> None:
        """Timer: close the connection if the client missed its deadline."""
        self._guard = None
        if self._phase == _IDLE or self.transport is None:
            return
        body = self._phase == _BODY
        if body and self._payload.is_eof():
            self._phase, self._payload = _IDLE, None
            return
        now = self._loop.time()
        if now >= self._deadline and self._server_is_behind():
            # Not the client's fault: give it a fresh period.
            limits = self._limits
            self._deadline = now + (limits.body_timeout if body else limits.header_timeout)
        if now < self._deadline:
            self._guard = self._loop.call_at(self._deadline, self._check)
            return
        log.debug(
            "closing a connection whose client is too slow",
            extra={"phase": "body" if body else "headers"},
        )
        self.force_close()

    def _server_is_behind(self) -> bool:
        """Whether the client cannot send because of the server: reading is paused by flow
        control, or a pipelined request waits behind one still being handled."""
        return (
            self._reading_paused
            or self._buffer_paused
            or (self._phase == _HEADERS and self._request_in_progress)
        )


class GuardedServer(web.Server):
    """``web.Server`` whose connections are :class:`GuardedRequestHandler`\\ s."""

    def __init__(self, handler: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._limits = limits

    def __call__(self) -> RequestHandler:
        """A new connection's protocol."""
        return GuardedRequestHandler(self, loop=self._loop, limits=self._limits, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` serving through a :class:`GuardedServer`."""

    def __init__(self, app: web.Application, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._limits = limits

    async def _make_server(self) -> web.Server:
        # The application's start-up and freezing happen in the parent; it builds a plain
        # Server, which is rebuilt here with the same handler, factory and handler options.
        plain = await super()._make_server()
        return GuardedServer(
            plain.request_handler,
            limits=self._limits,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **plain._kwargs,
        )
