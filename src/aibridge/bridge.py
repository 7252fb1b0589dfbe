"""The RequestBridge: serves a routed ``/{provider}/…`` request, bridged (the interception
pipeline) or passthrough (the reverse proxy).

A bridge is built for one actor (user + gateway key) over one provider snapshot; the
pool shares it between that actor's concurrent requests and owns its lifecycle
(admission, retirement, bounded drain: :mod:`aibridge.pool`). The data-plane handler
resolves each request against that same snapshot (:attr:`RequestBridge.snapshot`), so a
request is routed and served by one provider generation.
"""

from __future__ import annotations

from aiohttp import web

from aibridge.actor import Actor
from aibridge.governance.limiter import Limiter
from aibridge.intercept.admission import SETTLEMENT
from aibridge.intercept.agentic import DEFAULT_MAX_ITERATIONS
from aibridge.intercept.hooks import NO_ADDONS, Addons
from aibridge.intercept.passthrough import passthrough
from aibridge.intercept.pipeline import Interceptor
from aibridge.intercept.responses.websocket import ResponsesSocket, ResponsesSockets, open_socket
from aibridge.mcp.toolset import Toolset
from aibridge.providers.routes import BridgedRoute, PassthroughRoute, WebSocketRoute
from aibridge.providers.snapshot import ProviderSnapshot
from aibridge.providers.upstream import UpstreamClients


class RequestBridge:
    """Serves data-plane requests for one actor over one provider snapshot.

    ``hooks`` are the addons (metrics, recording) that observe its interceptions and
    passthrough requests; ``limiter`` admits every bridged request (and WebSocket) and
    settles what it used (the bridge adds the settlement addon to the hooks).
    ``toolset`` holds the actor's MCP sessions: their tools are injected into every
    bridged request (at most ``max_iterations`` upstream turns each); :meth:`aclose`
    closes the sessions when the pool retires the bridge.
    """

    def __init__(
        self,
        snapshot: ProviderSnapshot,
        actor: Actor,
        upstream: UpstreamClients,
        *,
        limiter: Limiter,
        max_body_bytes: int,
        hooks: Addons = NO_ADDONS,
        toolset: Toolset | None = None,
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
    ) -> None:
        self.snapshot = snapshot
        self.actor = actor
        self.upstream = upstream
        self.max_body_bytes = max_body_bytes
        # Last: the ticket gets the usage after the recorder and the metrics saw it.
        # (Flattened: one tuple of addons, so each hook call is one loop, not two.)
        self.hooks = Addons(hooks, SETTLEMENT)
        self.limiter = limiter
        self.toolset = toolset
        self._interceptor = Interceptor(
            actor,
            upstream,
            self.hooks,
            limiter=limiter,
            max_body_bytes=max_body_bytes,
            toolset=toolset,
            max_iterations=max_iterations,
        )

    async def aclose(self) -> None:
        """Close the bridge's MCP sessions (after its requests have drained)."""
        if self.toolset is not None:
            await self.toolset.close()

    async def handle(
        self,
        request: web.Request,
        route: BridgedRoute | PassthroughRoute,
        *,
        byok: bool = False,
        actor: Actor | None = None,
    ) -> web.StreamResponse:
        """Serve ``request`` on ``route`` (resolved against :attr:`snapshot`).

        ``actor`` is the request's own (its limits as just authenticated; default: the
        bridge's). Passthrough routes (model lists, token counts, event logging) are not
        limited: they cost no tokens, are cheap and short, and clients call them at start
        (refusing them would break the client rather than slow it down).
        """
        if isinstance(route, BridgedRoute):
            return await self._interceptor.handle(request, route, byok=byok, actor=actor)
        self.hooks.passed_through(route, request.method)
        return await passthrough(
            request, route, self.upstream, byok=byok, max_body_bytes=self.max_body_bytes
        )

    async def open_websocket(
        self,
        request: web.Request,
        route: WebSocketRoute,
        sockets: ResponsesSockets,
        *,
        byok: bool = False,
        actor: Actor | None = None,
    ) -> ResponsesSocket | web.StreamResponse:
        """The handshake of a Responses WebSocket on ``route``: the socket, dialled upstream
        and ready to :meth:`~ResponsesSocket.run`, or the HTTP answer that refuses it.

        The socket then needs nothing of this bridge (it keeps the provider and the
        hooks), so the caller runs it after releasing the bridge: a socket lives as long
        as the client's session, and must not hold a bridge the pool wants to retire.
        """
        return await open_socket(
            request,
            route,
            self.actor if actor is None else actor,
            self.upstream,
            self.hooks,
            sockets,
            self.limiter,
            byok=byok,
        )
