"""The gateway's aiohttp application: health and metrics, the admin API, the dashboard,
the data plane."""

from __future__ import annotations

from aiohttp import web

from aibridge.admin.context import AdminContext, LiveProviders
from aibridge.admin.errors import error_middleware
from aibridge.admin.routes import add_admin_routes
from aibridge.governance.periods import time_zone
from aibridge.intercept.admission import add_ratelimit_headers
from aibridge.intercept.responses.websocket import ResponsesSockets
from aibridge.server.accesslog import access_log_middleware, add_request_id
from aibridge.server.dataplane import data_plane
from aibridge.server.health import healthz, metrics_endpoint, readyz
from aibridge.server.services import RESPONSES_SOCKETS, SERVICES, Services
from aibridge.store.replicas import replica_id_for
from aibridge.ui import add_ui_routes


def live_providers(services: Services) -> LiveProviders:
    """What ``/api/v1/providers/status`` shows of this replica (read at request time)."""
    reloader = services.reloader
    status = reloader.status
    return LiveProviders(
        replica=replica_id_for(services.recorder.replica),
        snapshot=reloader.snapshot,
        statuses=dict(status.provider_status),
        config_version=status.config_version,
        loaded=status.loaded,
        last_success=status.last_success,
        last_error=status.last_error,
        reconcile_interval=reloader.reconcile_interval,
    )


async def prepare_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the request id, and an admitted request's ``x-ratelimit-*``.
    One handler for both: aiohttp awaits one coroutine per handler per response."""
    add_request_id(response)
    add_ratelimit_headers(request, response)


def create_app(services: Services) -> web.Application:
    """The gateway's aiohttp application."""
    app = web.Application(
        # The access log outermost: it sees the status error_middleware settled on.
        middlewares=[access_log_middleware, error_middleware],
        client_max_size=services.settings.max_body_bytes,
    )
    app[SERVICES] = services
    settings = services.settings
    sockets = ResponsesSockets(
        per_user=settings.responses_websocket_per_user,
        drain_timeout=settings.responses_websocket_drain_timeout,
    )
    app[RESPONSES_SOCKETS] = sockets
    # aiohttp's shutdown signal runs after the listener stopped and before it waits for
    # (then cancels) the handlers still running: sockets close with 1001 there.
    app.on_shutdown.append(lambda _app: sockets.shutdown())
    # The request id and the gateway's own x-ratelimit-* (the relays prepare responses).
    app.on_response_prepare.append(prepare_headers)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    add_admin_routes(
        app,
        AdminContext(
            sessions=services.sessions,
            pubsub=services.pubsub,
            encryptor=services.encryptor,
            authenticator=services.authenticator,
            default_limits=settings.default_limits,
            budget_zone=time_zone(settings.budget_timezone),
            clock=services.clock,
            budget_soft_fraction=settings.budget_soft_fraction,
            live_providers=lambda: live_providers(services),
        ),
    )
    # The dashboard (static files; it uses the admin API like any script would).
    add_ui_routes(app)
    # Registered last: admin and health routes above take precedence.
    # ``[\s\S]``, not ``.``: a decoded "%0a" must reach the data plane (and its 400) too.
    app.router.add_route("*", r"/{name}/{tail:[\s\S]*}", data_plane)
    return app
