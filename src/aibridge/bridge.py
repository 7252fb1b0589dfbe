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
from aibridge.intercept.hooks import NO_ADDONS, Addons
from aibridge.intercept.passthrough import passthrough
from aibridge.intercept.pipeline import Interceptor
from aibridge.providers.routes import BridgedRoute, PassthroughRoute
from aibridge.providers.snapshot import ProviderSnapshot
from aibridge.providers.upstream import UpstreamClients


class RequestBridge:
    """Serves data-plane requests for one actor over one provider snapshot.

    ``hooks`` are the addons (metrics, recording) that observe its interceptions and
    passthrough requests.
    """

    def __init__(
        self,
        snapshot: ProviderSnapshot,
        actor: Actor,
        upstream: UpstreamClients,
        *,
        max_body_bytes: int,
        hooks: Addons = NO_ADDONS,
    ) -> None:
        self.snapshot = snapshot
        self.actor = actor
        self.upstream = upstream
        self.max_body_bytes = max_body_bytes
        self.hooks = hooks
        self._interceptor = Interceptor(actor, upstream, hooks, max_body_bytes=max_body_bytes)

    async def handle(
        self,
        request: web.Request,
        route: BridgedRoute | PassthroughRoute,
        *,
        byok: bool = False,
    ) -> web.StreamResponse:
        """Serve ``request`` on ``route`` (resolved against :attr:`snapshot`)."""
        if isinstance(route, BridgedRoute):
            return await self._interceptor.handle(request, route, byok=byok)
        self.hooks.passed_through(route, request.method)
        return await passthrough(
            request, route, self.upstream, byok=byok, max_body_bytes=self.max_body_bytes
        )
