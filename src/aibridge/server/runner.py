"""Running the gateway: the event loop, the connection runner, and :func:`serve_forever`."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import web

from aibridge.config import Settings
from aibridge.secrets_mask import mask_url
from aibridge.server.app import create_app
from aibridge.server.connection_guard import ConnectionLimits, GatewayRunner
from aibridge.server.services import Services
from aibridge.server.startup import running_services

# The name the CLI always logged "listening" and "shutting down" under.
log = logging.getLogger("aibridge")

GC_GEN0_THRESHOLD = 10_000
"""Generation-0 threshold of the cyclic collector once the app has started (default 700)."""


class StartupError(Exception):
    """The gateway cannot start; ``str(err)`` says what to fix."""


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
    timeouts (:mod:`aibridge.server.connection_guard`); ``kwargs`` go to ``web.AppRunner``."""
    limits = ConnectionLimits(
        header_timeout=settings.header_read_timeout, body_timeout=settings.body_read_timeout
    )
    return GatewayRunner(app, limits=limits, keepalive_timeout=settings.keepalive_timeout, **kwargs)


async def serve_forever(
    settings: Settings,
    stop: asyncio.Event | None = None,
    *,
    reuse_port: bool = False,
    worker: int = 0,
) -> None:
    """Run the gateway until SIGINT/SIGTERM (or ``stop`` is set); ``worker`` is the
    worker index under ``--workers N``. Raises :class:`StartupError` when the listen
    address cannot be bound."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_services(settings, worker=worker) as services:
        app = create_app(services)
        tune_gc()
        # Cancelling the handler when the client goes away tears down the upstream
        # request at once: the gateway pays for every token it keeps reading.
        runner = create_runner(
            app, settings, access_log=None, handle_signals=False, handler_cancellation=True
        )
        await runner.setup()
        host, port = settings.listen_address()
        site = web.TCPSite(runner, host, port, reuse_address=True, reuse_port=reuse_port or None)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(
                f"cannot listen on {settings.listen}: {exc.strerror}; choose another --listen"
            ) from None
        log.info(
            "aibridge listening",
            extra={
                "listen": f"http://{host}:{port}",
                "database": mask_url(settings.resolved_database_url()),
            },
        )
        try:
            async with AsyncExitStack() as extras:
                if settings.proxy_listen:
                    await _start_gateway_proxy(extras, settings, services, site_port(runner, port))
                await stop.wait()
                log.info("shutting down")
        finally:
            await runner.cleanup()


def site_port(runner: web.AppRunner, configured: int) -> int:
    """The port the gateway listens on (the bound one when ``configured`` is 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return configured


async def _start_gateway_proxy(
    extras: AsyncExitStack, settings: Settings, services: Services, port: int
) -> None:
    """Start the proxy beside this gateway: decrypted requests go to its own listener on
    loopback (or ``proxy_gateway_url``), its series to the gateway's registry."""
    # Imported here: a gateway without the proxy never loads it (nor cryptography's x509).
    from aibridge.server.proxy import ProxyConfigError, running_settings_proxy

    gateway_url = settings.proxy_gateway_url or f"http://127.0.0.1:{port}"
    try:
        await extras.enter_async_context(
            running_settings_proxy(
                settings,
                pubsub=services.pubsub,
                authenticator=services.authenticator,
                sessions=services.sessions,
                gateway_url=gateway_url,
                registry=services.metrics.registry,
            )
        )
    except ProxyConfigError as exc:
        raise StartupError(str(exc)) from None
    except OSError as exc:
        raise StartupError(
            f"cannot listen on {settings.proxy_listen}: {exc.strerror}; "
            "choose another --proxy-listen"
        ) from None
