"""The RequestBridge: routes ``/{provider}/…`` to an interceptor or the passthrough
proxy, with the 404 / 503 / 413 edges.

A bridge is built for one actor (user + gateway key) over one provider snapshot; the
pool shares it between that actor's concurrent requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from aibridge.admin.errors import json_response
from aibridge.auth import Actor
from aibridge.intercept.engine import Interception
from aibridge.intercept.errors import error_response
from aibridge.intercept.passthrough import passthrough
from aibridge.providers.base import DisabledProvider, Provider
from aibridge.providers.http import UpstreamSessions
from aibridge.recording.writer import Recorder
from aibridge.telemetry import GatewayMetrics


@dataclass(frozen=True)
class ProviderSnapshot:
    """An immutable set of provider runtimes with the generation it was built at."""

    generation: int
    providers: Mapping[str, Provider | DisabledProvider] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)

    def get(self, name: str) -> Provider | DisabledProvider | None:
        """The runtime named ``name``."""
        return self.providers.get(name)


def route_not_supported(request: web.Request) -> web.Response:
    """404 for any path no provider serves."""
    return json_response(
        {"message": f"route not supported: {request.method} {request.path}"}, status=404
    )


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
        """Serve ``request`` for provider ``name`` and path ``tail`` (after the name)."""
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
        route = provider.match(tail)
        if route is None:
            return route_not_supported(request)
        if route.kind == "passthrough":
            if self.metrics is not None:
                self.metrics.passthrough.labels(name, request.method).inc()
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
