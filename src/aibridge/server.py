"""Application assembly: services start-up/shutdown and the aiohttp app."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from aibridge.admin.deps import current_actor, require_admin
from aibridge.admin.errors import APIError, error_middleware
from aibridge.admin.routes import add_admin_routes
from aibridge.auth import Authenticator, AuthError, AuthUnavailable, extract_token
from aibridge.bridge import RequestBridge
from aibridge.clock import Clock
from aibridge.config import Settings, mask_url
from aibridge.connection_guard import ConnectionLimits, GatewayRunner
from aibridge.files import private_dir
from aibridge.httputil import json_response, route_not_supported
from aibridge.intercept.errors import error_response, family_for_request, routing_error_response
from aibridge.intercept.hooks import Addons
from aibridge.pool import (
    BridgeBuildError,
    CachedBridgePool,
    PoolShuttingDown,
    RetryLimitExceeded,
    request_bridge_builder,
)
from aibridge.providers.http import UpstreamSessions
from aibridge.providers.keypool import KeyPoolStateCollector
from aibridge.providers.routes import RoutingError
from aibridge.recording.addon import RecordingAddon
from aibridge.recording.writer import Recorder
from aibridge.reload import ProviderReloader
from aibridge.services import SERVICES, Services
from aibridge.store import seed, users
from aibridge.store.crypto import Encryptor
from aibridge.store.db import create_engine, migrate, session_factory
from aibridge.store.models import RESERVED_PROVIDER_NAMES
from aibridge.store.pubsub import API_KEYS_CHANGED, InProcessPubSub, PubSub
from aibridge.telemetry import GatewayMetrics, MetricsAddon

log = logging.getLogger(__name__)

GC_GEN0_THRESHOLD = 10_000
"""Generation-0 threshold of the cyclic collector once the app has started (default 700)."""


async def make_pubsub(database_url: str) -> PubSub:
    """PostgreSQL LISTEN/NOTIFY for PostgreSQL deployments, in-process otherwise."""
    if database_url.startswith("postgresql"):
        from aibridge.store.pubsub_pg import PostgresPubSub

        ps = PostgresPubSub(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
        await ps.start()
        return ps
    return InProcessPubSub()


SHUTDOWN_STEP_TIMEOUT = 10.0
"""Seconds one shutdown step may take (a hung database must not hang the shutdown)."""


async def _close_step(
    name: str,
    close: Callable[[], Awaitable[object]],
    timeout: float | None,  # noqa: ASYNC109 (a bound per step, not the caller's)
) -> None:
    """One guarded shutdown step: a failure (or a step that hangs past ``timeout``) is
    logged, and the steps after it still run."""
    try:
        async with asyncio.timeout(timeout):
            await close()
    except Exception:
        log.exception("shutdown: closing the %s failed; closing the rest", name)


@asynccontextmanager
async def running_services(
    settings: Settings,
    *,
    environ: dict[str, str] | None = None,
    announce: Callable[[str], None] = print,
    clock: Clock | None = None,
    recorder_options: Mapping[str, Any] | None = None,
    worker: int = 0,
) -> AsyncIterator[Services]:
    """Open the database (migrating it), pub/sub and authenticator; bootstrap on first
    start (first admin key, providers seeded from the environment); close on exit.

    Shutdown closes the components in reverse order of their start (an exit stack):
    the provider reloader, the bridge pool (draining requests in flight), the
    authenticator, the recorder (its queue goes to the database or the spill file),
    pub/sub, upstream sessions, the engine. Each close is its own guarded, time-bounded
    step, so one that fails or hangs (the database is down) never keeps the others,
    the recorder above all, from running.

    ``clock`` drives provider key cooldowns and circuit breakers (tests pass a
    ``FakeClock``); ``recorder_options`` are :class:`Recorder` knobs (queue size, timeouts).
    ``worker`` is the worker index under ``serve --workers N``: the recorder's preferred
    journal slot, part of the replica identity stamped on interceptions.
    """
    url = settings.resolved_database_url()
    # Before the database: the default SQLite file lives in the data dir.
    private_dir(settings.data_dir)
    log.info("opening database", extra={"database": mask_url(url)})
    async with AsyncExitStack() as stack:

        def on_exit(
            name: str,
            close: Callable[[], Awaitable[object]],
            timeout: float | None = SHUTDOWN_STEP_TIMEOUT,
        ) -> None:
            stack.push_async_callback(_close_step, name, close, timeout)

        engine = create_engine(url)
        on_exit("database engine", engine.dispose)
        upstream = UpstreamSessions(
            max_body_bytes=settings.max_upstream_body_bytes,
            max_error_bytes=settings.max_upstream_error_bytes,
        )
        on_exit("upstream sessions", upstream.close)
        await migrate(engine)
        sessions = session_factory(engine)
        encryptor = Encryptor(settings.encryption_key) if settings.encryption_key else None
        await seed.check_encryption(sessions, encryptor)
        pubsub = await make_pubsub(url)
        on_exit("pub/sub", pubsub.close)
        authenticator = Authenticator(sessions, ttl=settings.auth_cache_ttl)
        unsubscribe = await pubsub.subscribe(API_KEYS_CHANGED, authenticator.on_keys_changed)
        on_exit("key-change subscription", unsubscribe)
        metrics = GatewayMetrics(max_models=settings.metrics_max_models)
        recorder = Recorder.for_database(
            sessions,
            settings.data_dir,
            worker=worker,
            registry=metrics.registry,
            **(recorder_options or {}),
        )
        # Bounded by its own close timeout; the step after the pool has drained requests.
        on_exit("recorder", recorder.close, None)
        await recorder.start()
        # Bounded by its own flush timeout.
        on_exit("authenticator", authenticator.stop, None)
        services = Services(
            settings,
            engine,
            sessions,
            pubsub,
            authenticator,
            encryptor,
            recorder=recorder,
            upstream=upstream,
            metrics=metrics,
        )
        token = await users.ensure_first_admin(sessions)
        if token is not None:
            announce(
                "Created the first admin user 'admin'. Its API key is shown once:\n\n"
                f"    {token}\n\n"
                "Create more users with `aibridge users create NAME [--admin]` and keys with "
                "`aibridge keys create --user NAME`."
            )
        env = dict(os.environ) if environ is None else environ
        await seed.seed_providers_from_env(services, env)

        pool: CachedBridgePool[RequestBridge] = CachedBridgePool(
            request_bridge_builder(
                upstream,
                max_body_bytes=settings.max_body_bytes,
                # Metrics first: the recorder's start write is the one that waits.
                hooks=Addons(MetricsAddon(metrics), RecordingAddon(recorder)),
            ),
            None,
            max_items=settings.pool_max_items,
            ttl=settings.pool_ttl,
            retirement_timeout=settings.bridge_retirement_timeout,
            registry=metrics.registry,
        )
        services.pool = pool
        # Scrape-time key counts of the live snapshot (aibridge_key_pool_state).
        metrics.registry.register(KeyPoolStateCollector(pool.key_pools))
        # Drains in-flight requests before the recorder and upstream sessions close;
        # bounded by the retirement timeout.
        on_exit(
            "request bridge pool",
            partial(pool.shutdown, timeout=settings.bridge_retirement_timeout),
            None,
        )
        pool.start()

        reloader = ProviderReloader(
            sessions,
            encryptor,
            pubsub,
            pool.replace_providers,
            reconcile_interval=settings.reconcile_interval,
            clock=clock,
            metrics=metrics,
        )
        services.reloader = reloader
        on_exit("provider reloader", reloader.stop)
        await reloader.start()
        authenticator.start()
        yield services


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
    except AuthError as err:
        return error_response(family_for_request(tail, request.headers), 401, f"aibridge: {err}")
    except AuthUnavailable as err:
        return error_response(family_for_request(tail, request.headers), 503, f"aibridge: {err}")
    assert services.pool is not None
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
            return await bridge.handle(request, route, byok=bool(byok_token))
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


async def healthz(_request: web.Request) -> web.Response:
    """Process liveness."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the database answers within two seconds and providers are loaded.

    With ``metrics_auth=admin`` only admin keys see the details (providers, versions,
    errors); everyone else gets the status and its HTTP code, which is what probes need.
    """
    services = request.app[SERVICES]
    started = time.perf_counter()
    body: dict[str, object] = {"status": "ok", "pid": os.getpid()}
    if services.recorder is not None and services.recorder.replica is not None:
        body["replica"] = services.recorder.replica
    status = 200
    try:
        async with asyncio.timeout(2.0), services.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        body["database"] = "ok"
        body["database_ms"] = round((time.perf_counter() - started) * 1000, 2)
    except Exception as exc:
        body.update(status="unavailable", database="unreachable", detail=type(exc).__name__)
        status = 503
    if services.reloader is not None:
        reload_status = services.reloader.status
        body["providers_loaded"] = reload_status.loaded
        body["config_version"] = reload_status.config_version
        body["providers"] = {
            name: {"type": ptype, "status": pstatus}
            for name, (ptype, pstatus) in sorted(reload_status.provider_status.items())
        }
        if reload_status.last_error:
            body["last_reload_error"] = reload_status.last_error
        if not reload_status.loaded:
            body["status"] = "unavailable"
            status = 503
    if services.settings.metrics_auth == "admin" and not await _is_admin(request):
        return json_response({"status": body["status"]}, status=status)
    return json_response(body, status=status)


async def _is_admin(request: web.Request) -> bool:
    try:
        return (await current_actor(request)).is_admin
    except APIError:
        return False


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text exposition of this process's series (admin keys only with
    ``metrics_auth=admin``)."""
    services = request.app[SERVICES]
    if services.settings.metrics_auth == "admin":
        await require_admin(request)
    body = services.metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def tune_gc() -> None:
    """Take the start-up heap out of the cyclic collector's sight.

    Every request allocates a few hundred container objects, so generation-0 collections
    run every few requests, and each older-generation pass traversed the whole start-up
    heap (SQLAlchemy, Alembic, pydantic, aiohttp: several hundred thousand objects) again.
    ``gc.freeze()`` moves what is alive at start-up to the permanent generation (still
    freed by reference counting; only cycles among those objects would stay), and a
    larger generation-0 threshold lets most request garbage die by refcount first.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def create_runner(app: web.Application, settings: Settings, **kwargs: Any) -> web.AppRunner:
    """The runner for ``app``: connections get the configured header, body and keep-alive
    timeouts (:mod:`aibridge.connection_guard`); ``kwargs`` go to ``web.AppRunner``."""
    limits = ConnectionLimits(
        header_timeout=settings.header_read_timeout, body_timeout=settings.body_read_timeout
    )
    return GatewayRunner(app, limits=limits, keepalive_timeout=settings.keepalive_timeout, **kwargs)


def create_app(services: Services) -> web.Application:
    """The gateway's aiohttp application."""
    app = web.Application(
        middlewares=[error_middleware], client_max_size=services.settings.max_body_bytes
    )
    app[SERVICES] = services
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    add_admin_routes(app)
    # Registered last: admin and health routes above take precedence.
    # ``[\s\S]``, not ``.``: a decoded "%0a" must reach the data plane (and its 400) too.
    app.router.add_route("*", r"/{name}/{tail:[\s\S]*}", data_plane)
    return app
