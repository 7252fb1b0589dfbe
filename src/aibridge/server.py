"""Application assembly: services start-up/shutdown and the aiohttp app."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from sqlalchemy import text

from aibridge.admin.errors import error_middleware, json_response
from aibridge.admin.routes import add_admin_routes
from aibridge.auth import Authenticator
from aibridge.config import Settings, mask_url
from aibridge.services import SERVICES, Services
from aibridge.store import seed, users
from aibridge.store.crypto import Encryptor
from aibridge.store.db import create_engine, migrate, session_factory
from aibridge.store.pubsub import API_KEYS_CHANGED, InProcessPubSub, PubSub, Unsubscribe

log = logging.getLogger(__name__)


async def make_pubsub(database_url: str) -> PubSub:
    """PostgreSQL LISTEN/NOTIFY for PostgreSQL deployments, in-process otherwise."""
    if database_url.startswith("postgresql"):
        from aibridge.store.pubsub_pg import PostgresPubSub

        ps = PostgresPubSub(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
        await ps.start()
        return ps
    return InProcessPubSub()


@asynccontextmanager
async def running_services(
    settings: Settings,
    *,
    environ: dict[str, str] | None = None,
    announce: Callable[[str], None] = print,
) -> AsyncIterator[Services]:
    """Open the database (migrating it), pub/sub and authenticator; bootstrap on first
    start (first admin key, providers seeded from the environment); close on exit."""
    url = settings.resolved_database_url()
    log.info("opening database", extra={"database": mask_url(url)})
    engine = create_engine(url)
    pubsub: PubSub | None = None
    unsubscribe: Unsubscribe | None = None
    authenticator: Authenticator | None = None
    try:
        await migrate(engine)
        sessions = session_factory(engine)
        encryptor = Encryptor(settings.encryption_key) if settings.encryption_key else None
        await seed.check_encryption(sessions, encryptor)
        pubsub = await make_pubsub(url)
        authenticator = Authenticator(sessions)
        unsubscribe = await pubsub.subscribe(API_KEYS_CHANGED, authenticator.on_keys_changed)
        services = Services(settings, engine, sessions, pubsub, authenticator, encryptor)
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
        authenticator.start()
        yield services
    finally:
        if unsubscribe is not None:
            await unsubscribe()
        if authenticator is not None:
            await authenticator.stop()
        if pubsub is not None:
            await pubsub.close()
        await engine.dispose()


async def healthz(_request: web.Request) -> web.Response:
    """Process liveness."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the database answers within two seconds."""
    services = request.app[SERVICES]
    started = time.perf_counter()
    try:
        async with asyncio.timeout(2.0), services.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return json_response(
            {"status": "unavailable", "database": "unreachable", "detail": type(exc).__name__},
            status=503,
        )
    elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
    return json_response({"status": "ok", "database": "ok", "database_ms": elapsed_ms})


def create_app(services: Services) -> web.Application:
    """The gateway's aiohttp application."""
    app = web.Application(
        middlewares=[error_middleware], client_max_size=services.settings.max_body_bytes
    )
    app[SERVICES] = services
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    add_admin_routes(app)
    return app
