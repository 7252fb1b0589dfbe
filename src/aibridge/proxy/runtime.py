"""A running proxy: routing reloader + listener, started and stopped together."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.proxy.ca import CertificateAuthority
from aibridge.proxy.daemon import ProxyOptions, ProxyServer
from aibridge.proxy.metrics import ProxyMetrics
from aibridge.proxy.routing import Refresh, RoutingReloader, Version
from aibridge.store import config_version
from aibridge.store.providers import ProviderRoute, load_provider_routes
from aibridge.store.pubsub import PubSub


def database_refresh(sessions: async_sessionmaker[AsyncSession]) -> Refresh:
    """The routing refresh that reads the live providers from the database."""

    async def refresh() -> Sequence[ProviderRoute]:
        async with sessions() as session:
            return await load_provider_routes(session)

    return refresh


def database_version(sessions: async_sessionmaker[AsyncSession]) -> Version:
    """The providers' config version, read from the database."""

    async def version() -> int:
        async with sessions() as session:
            return await config_version.read(session)

    return version


@dataclass(frozen=True)
class RunningProxy:
    """Handles to a started proxy."""

    server: ProxyServer
    routing: RoutingReloader
    metrics: ProxyMetrics

    @property
    def port(self) -> int:
        """The listener's port."""
        return self.server.port


@asynccontextmanager
async def running_proxy(
    *,
    refresh: Refresh,
    pubsub: PubSub | None,
    authenticate: Callable[[str], Awaitable[object]],
    gateway_url: str,
    ca: CertificateAuthority,
    host: str,
    port: int,
    options: ProxyOptions | None = None,
    registry: CollectorRegistry | None = None,
    scratch_dir: Path | None = None,
    version: Version | None = None,
    reconcile_interval: float = 30.0,
) -> AsyncIterator[RunningProxy]:
    """Start routing (subscribe, first load) then the listener; stop both on exit.
    ``version`` (with ``reconcile_interval``) polls for changes a notification missed."""
    metrics = ProxyMetrics(registry)
    routing = RoutingReloader(
        refresh, pubsub, metrics=metrics, version=version, reconcile_interval=reconcile_interval
    )
    await routing.start()
    try:
        server = ProxyServer(
            ca=ca,
            router=lambda: routing.router,
            authenticate=authenticate,
            gateway_url=gateway_url,
            metrics=metrics,
            options=options,
            scratch_dir=scratch_dir,
        )
        await server.start(host, port)
        try:
            yield RunningProxy(server, routing, metrics)
        finally:
            await server.close()
    finally:
        await routing.stop()
