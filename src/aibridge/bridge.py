"""The RequestBridge: routes ``/{provider}/…`` to an interceptor or the passthrough
proxy, with the 404 / 503 / 413 edges.

A bridge is built for one actor (user + gateway key) over one provider snapshot; the
pool shares it between that actor's concurrent requests and owns its lifecycle
(admission, retirement, bounded drain: :mod:`aibridge.pool`).
"""

from __future__ import annotations

import logging

from aiohttp import web

from aibridge.actor import Actor
from aibridge.httputil import route_not_supported
from aibridge.intercept.engine import Interception
from aibridge.intercept.errors import error_response
from aibridge.intercept.passthrough import passthrough
from aibridge.metric_labels import method_label
from aibridge.providers.base import DisabledProvider
from aibridge.providers.http import UpstreamSessions
from aibridge.providers.paths import UnsafePath
from aibridge.providers.snapshot import ProviderSnapshot
from aibridge.recording.recorder import Recorder
from aibridge.telemetry import GatewayMetrics

log = logging.getLogger(__name__)


class RequestBridge:
    """Serves data-plane requests for one actor over one provider snapshot."""

    def __init__(
        self,
        snapshot: ProviderSnapshot,
        actor: Actor,
        recorder: Recorder,
        sessions: UpstreamSessions,
        *,
        max_body_bytes: int,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.metrics = metrics
        self.actor = actor
        self.recorder = recorder
        self.sessions = sessions
        self.max_body_bytes = max_body_bytes

    async def handle(
        self, request: web.Request, name: str, tail: str, *, byok: bool = False
    ) -> web.StreamResponse:
        """Serve ``request`` for provider ``name`` and path ``tail`` (after the name, still
        percent-encoded as the client sent it)."""
        provider = self.snapshot.get(name)
        if provider is None:
            return route_not_supported(request)
        if isinstance(provider, DisabledProvider):
            return error_response(
                provider.family, 503, f'provider_disabled: AI provider "{name}" is disabled'
            )
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return error_response(
                provider.family, 501, "WebSocket transport is not supported, use HTTP"
            )
        try:
            route = provider.match(tail)
        except UnsafePath as exc:
            return error_response(provider.family, 400, str(exc))
        if route is None:
            return route_not_supported(request)
        if route.kind == "passthrough":
            if self.metrics is not None:
                self.metrics.passthrough.labels(name, method_label(request.method)).inc()
            return await passthrough(
                request,
                provider,
                route,
                self.sessions,
                byok=byok,
                max_body_bytes=self.max_body_bytes,
            )
        if request.method != "POST":
            return error_response(
                provider.family, 405, f"{request.method} is not allowed on {request.path}; use POST"
            )
        interception = Interception(
            provider=provider,
            route=route,
            actor=self.actor,
            recorder=self.recorder,
            sessions=self.sessions,
            byok=byok,
            max_body_bytes=self.max_body_bytes,
            metrics=self.metrics,
        )
        return await interception.handle(request)
