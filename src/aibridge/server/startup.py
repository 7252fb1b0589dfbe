"""Start-up of one gateway process: every component, in order, on one exit stack."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

from aibridge import tracing
from aibridge.auth import Authenticator
from aibridge.bridge import RequestBridge
from aibridge.clock import SYSTEM_CLOCK, Clock
from aibridge.config import Settings
from aibridge.files import private_dir
from aibridge.governance.limiter import build_limiter
from aibridge.governance.metrics import LimiterMetrics
from aibridge.governance.price_reload import PriceReloader
from aibridge.governance.prices import PriceBook
from aibridge.intercept.hooks import Addons
from aibridge.mcp.credentials import user_tokens_loader
from aibridge.mcp.settings import MCPOptions
from aibridge.pool import CachedBridgePool, request_bridge_builder
from aibridge.providers.apidump import ApiDumps
from aibridge.providers.keyring import KeyRingStateCollector
from aibridge.providers.seed import seed_providers_from_env
from aibridge.providers.shared_cooldowns import build_shared_cooldowns
from aibridge.providers.upstream import UpstreamClients
from aibridge.recording import Recorder
from aibridge.recording.addon import RecordingAddon
from aibridge.recording.retention import RetentionJob, RetentionMetrics
from aibridge.reload import ProviderReloader, ReloadMetrics
from aibridge.secrets_mask import mask_url
from aibridge.server.accesslog import AccessLogAddon
from aibridge.server.components import Component, Components
from aibridge.server.services import Services
from aibridge.server.tracing import start_tracing, tracing_config
from aibridge.store import users
from aibridge.store.crypto import Encryptor
from aibridge.store.db import create_engine, migrate, session_factory
from aibridge.store.pubsub import (
    API_KEYS_CHANGED,
    MCP_CREDENTIALS_CHANGED,
    Callback,
    InProcessPubSub,
    PubSub,
)
from aibridge.store.replicas import ReplicaHeartbeat, replica_id_for
from aibridge.store.seed import check_encryption
from aibridge.telemetry import GatewayMetrics, MetricsAddon

if TYPE_CHECKING:
    from aibridge.server.otel import OTelTracing

log = logging.getLogger(__name__)


async def make_pubsub(database_url: str) -> PubSub:
    """PostgreSQL LISTEN/NOTIFY for PostgreSQL deployments, in-process otherwise."""
    if database_url.startswith("postgresql"):
        from aibridge.store.pubsub_pg import PostgresPubSub

        ps = PostgresPubSub(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
        await ps.start()
        return ps
    return InProcessPubSub()


def on_mcp_credentials_changed(pool: CachedBridgePool[Any]) -> Callback:
    """The ``mcp_credentials_changed`` subscriber: retire the bridges of the user named by
    the payload, so their next request builds a bridge with their current MCP tokens.

    A "messages may be lost" delivery needs nothing here: the provider reloader gets the
    same signal and its reload replaces every bridge. A malformed payload is logged and
    ignored (it cannot name a user).
    """

    def on_message(payload: bytes, error: Exception | None) -> None:
        if error is not None:
            return
        try:
            user_id = uuid.UUID(payload.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            log.warning("ignored an MCP credential notification without a user id")
            return
        pool.retire_user(user_id)

    return on_message


async def _stop_tracing(tracer: OTelTracing) -> None:
    """Stop tracing: no new spans from here on, then a bounded flush of the last ones."""
    tracing.uninstall(tracer)
    await tracer.shutdown()


@asynccontextmanager
async def running_services(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    announce: Callable[[str], None] = print,
    clock: Clock | None = None,
    recorder_options: Mapping[str, Any] | None = None,
    worker: int = 0,
) -> AsyncIterator[Services]:
    """Open the database (migrating it), pub/sub and authenticator; bootstrap on first
    start (first admin key, providers seeded from the environment); close on exit.

    Every component is started through :class:`~aibridge.server.components.Components`;
    shutdown stops them in reverse order of their start: the shared key cooldowns
    (their Redis connections; only with ``redis_url``), the provider reloader, the
    bridge pool (draining requests in flight), the limiter (after the drained requests
    settled: its maintenance task, then its Redis connections), the authenticator
    (last-used times), the recorder (its queue goes to the database or the spill file),
    pub/sub, upstream sessions, the engine, and last the trace exporter (when the
    ``OTEL_*`` variables turn tracing on: see :mod:`aibridge.server.tracing`). Each stop
    is its own guarded, time-bounded step, so one that fails or hangs (the database is
    down) never keeps the others, the recorder above all, from running.

    ``clock`` drives provider key cooldowns, circuit breakers and the limiter's windows
    and budget periods (tests pass a ``FakeClock``); ``recorder_options`` are
    :class:`Recorder` knobs (queue size, timeouts).
    ``worker`` is the worker index under ``serve --workers N``: the recorder's preferred
    journal slot, part of the replica identity stamped on interceptions.
    """
    env = os.environ if environ is None else environ
    # Checked first: a bad OTEL_* value stops the start before anything opened.
    trace_config = tracing_config(env)
    url = settings.resolved_database_url()
    # Before the database: the default SQLite file lives in the data dir.
    private_dir(settings.data_dir)
    log.info("opening database", extra={"database": mask_url(url)})
    async with AsyncExitStack() as stack:
        components = Components(stack)
        metrics = GatewayMetrics(max_models=settings.metrics_max_models)
        if trace_config is not None:
            # First started, last stopped: the spans of the last drained requests are
            # flushed; bounded, so a collector that is down never hangs the shutdown.
            tracer = start_tracing(trace_config, metrics.registry)
            await components.start(
                Component(
                    "trace exporter",
                    start=partial(tracing.install, tracer),
                    stop=partial(_stop_tracing, tracer),
                    stop_timeout=None,
                )
            )

        engine = create_engine(url)
        await components.start(
            Component("database engine", start=partial(migrate, engine), stop=engine.dispose)
        )
        sessions = session_factory(engine)
        upstream = UpstreamClients(
            max_body_bytes=settings.max_upstream_body_bytes,
            max_error_bytes=settings.max_upstream_error_bytes,
            dumps=ApiDumps(
                settings.api_dump_dir,
                max_file_bytes=settings.api_dump_max_file_bytes,
                max_dir_bytes=settings.api_dump_max_dir_bytes,
            ),
        )
        await components.start(Component("upstream clients", stop=upstream.close))
        encryptor = Encryptor(settings.encryption_key) if settings.encryption_key else None
        await check_encryption(sessions, encryptor)

        pubsub = await make_pubsub(url)
        await components.start(Component("pub/sub", stop=pubsub.close))
        authenticator = Authenticator(sessions, ttl=settings.auth_cache_ttl)
        unsubscribe = await pubsub.subscribe(API_KEYS_CHANGED, authenticator.on_keys_changed)
        await components.start(Component("key-change subscription", stop=unsubscribe))

        recorder = Recorder.for_database(
            sessions,
            settings.data_dir,
            worker=worker,
            registry=metrics.registry,
            **(recorder_options or {}),
        )
        # Bounded by its own close timeout; stopped after the pool has drained requests.
        await components.start(
            Component("recorder", start=recorder.start, stop=recorder.close, stop_timeout=None)
        )
        # Its stop writes last-used times, bounded by its own flush timeout.
        await components.start(
            Component(
                "authenticator",
                start=authenticator.start,
                stop=authenticator.stop,
                stop_timeout=None,
            )
        )

        token = await users.ensure_first_admin(sessions)
        if token is not None:
            announce(
                "Created the first admin user 'admin'. Its API key is shown once:\n\n"
                f"    {token}\n\n"
                "Create more users with `aibridge users create NAME [--admin]` and keys with "
                "`aibridge keys create --user NAME`."
            )
        await seed_providers_from_env(sessions, encryptor, pubsub, env)

        # Before the pool: the recording addon prices every upstream call from this book,
        # so it holds the stored prices before the first request can arrive.
        prices = PriceBook()
        price_reloader = PriceReloader(
            sessions, pubsub, prices, reconcile_interval=settings.reconcile_interval
        )
        await components.start(
            Component("price reloader", start=price_reloader.start, stop=price_reloader.stop)
        )
        # After the recorder and the engine (its start rebuilds the budgets' spend from
        # the records), before the pool (every bridge admits through it); stopped after
        # the pool drained, so the last requests settle first. Its stop closes the Redis
        # client even when another component's stop failed (each stop is guarded).
        limiter = build_limiter(
            settings,
            prices=prices,
            sessions=sessions,
            metrics=LimiterMetrics(metrics.registry),
            clock=clock or SYSTEM_CLOCK,
        )
        await components.start(Component("limiter", start=limiter.start, stop=limiter.aclose))

        # Read once per bridge build (bridges are cached per user and key), never per request.
        mcp_user_tokens = user_tokens_loader(sessions, encryptor)
        pool: CachedBridgePool[RequestBridge] = CachedBridgePool(
            request_bridge_builder(
                upstream,
                limiter=limiter,
                max_body_bytes=settings.max_body_bytes,
                # Recording first: a start is queued before anything else can fail, so
                # every end record has its start.
                hooks=Addons(
                    RecordingAddon(recorder, prices),
                    MetricsAddon(metrics),
                    AccessLogAddon(prices),
                ),
                user_tokens=mcp_user_tokens,
                mcp=MCPOptions(
                    max_iterations=settings.mcp_max_iterations,
                    init_timeout=settings.mcp_init_timeout,
                    call_timeout=settings.mcp_call_timeout,
                    tools_ttl=settings.mcp_tools_ttl,
                ),
            ),
            None,
            max_items=settings.pool_max_items,
            ttl=settings.pool_ttl,
            retirement_timeout=settings.bridge_retirement_timeout,
            registry=metrics.registry,
        )
        # Scrape-time key counts of the live snapshot (aibridge_key_pool_state).
        metrics.registry.register(KeyRingStateCollector(pool.key_rings))
        # Drains in-flight requests before the recorder and upstream clients close;
        # bounded by the retirement timeout.
        await components.start(
            Component(
                "request bridge pool",
                start=pool.start,
                stop=partial(pool.shutdown, timeout=settings.bridge_retirement_timeout),
                stop_timeout=None,
            )
        )

        # After the pool (it retires into it), before the reloader: a credential change
        # made while the first snapshot loads still reaches the bridges built from it.
        unsubscribe_credentials = await pubsub.subscribe(
            MCP_CREDENTIALS_CHANGED, on_mcp_credentials_changed(pool)
        )
        await components.start(
            Component("MCP credential subscription", stop=unsubscribe_credentials)
        )

        # Made before the reloader, whose snapshots it hooks up (rings built by a reload
        # get the live cooldowns before they serve); started after it. None without Redis.
        shared_cooldowns = build_shared_cooldowns(
            settings.redis_url,
            settings.redis_prefix,
            snapshot=lambda: pool.snapshot,
            clock=clock or SYSTEM_CLOCK,
            registry=metrics.registry,
        )
        # The replicas table row: written at start, after reloads, on reconcile ticks.
        heartbeat = ReplicaHeartbeat(
            sessions,
            replica_id_for(recorder.replica),
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=(clock or SYSTEM_CLOCK).now(),
            clock=clock or SYSTEM_CLOCK,
        )
        reloader = ProviderReloader(
            sessions,
            encryptor,
            pubsub,
            (
                shared_cooldowns.watch(pool.replace_providers)
                if shared_cooldowns is not None
                else pool.replace_providers
            ),
            reconcile_interval=settings.reconcile_interval,
            clock=clock,
            metrics=ReloadMetrics(
                metrics.registry, keypool=metrics.keypool, breakers=metrics.breakers
            ),
            on_applied=heartbeat.beat,
        )
        await components.start(
            Component("provider reloader", start=reloader.start, stop=reloader.stop)
        )
        if shared_cooldowns is not None:
            # Its stop closes its Redis connections even when another stop failed.
            await components.start(
                Component(
                    "shared key cooldowns",
                    start=shared_cooldowns.start,
                    stop=shared_cooldowns.aclose,
                )
            )
        # Deletes records past retention_days. On SQLite only the first worker runs it
        # (the workers share one file); on PostgreSQL every replica starts it and an
        # advisory lock picks one per run.
        retention = RetentionJob(
            engine,
            sessions,
            days=settings.retention_days if worker == 0 or url.startswith("postgresql") else 0,
            interval=settings.retention_interval_seconds,
            metrics=RetentionMetrics(metrics.registry),
            clock=clock or SYSTEM_CLOCK,
        )
        await components.start(
            Component("retention job", start=retention.start, stop=retention.stop)
        )
        yield Services(
            settings=settings,
            engine=engine,
            sessions=sessions,
            pubsub=pubsub,
            encryptor=encryptor,
            authenticator=authenticator,
            metrics=metrics,
            upstream=upstream,
            recorder=recorder,
            pool=pool,
            reloader=reloader,
            mcp_user_tokens=mcp_user_tokens,
            prices=prices,
            price_reloader=price_reloader,
            limiter=limiter,
            retention=retention,
            clock=clock or SYSTEM_CLOCK,
        )
