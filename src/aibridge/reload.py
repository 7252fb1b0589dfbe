"""Provider hot reload: database rows → provider runtimes → an atomic snapshot swap.

The snapshot also carries the enabled MCP servers, read in the same transaction, so a
change to either reaches new bridges the same way (``ai_providers_changed`` and
``mcp_servers_changed`` both trigger a reload; both bump the one config version).

Subscribe first, then reload once synchronously, then reload on every notification
(including a "messages may be lost" signal) and whenever the cheap config-version
poll sees a change a notification did not deliver. A failed database read keeps the
previous snapshot; a bad row is skipped and reported without affecting the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.clock import Clock, SystemClock
from aibridge.mcp.config import server_settings
from aibridge.mcp.settings import MCPServerSettings
from aibridge.providers.base import DisabledProvider, Provider, ProviderBuildError, build_provider
from aibridge.providers.breaker_metrics import CircuitBreakerMetrics
from aibridge.providers.keyring import KeyRingMetrics
from aibridge.providers.snapshot import ProviderSnapshot
from aibridge.store import config_version
from aibridge.store.crypto import Encryptor
from aibridge.store.mcp_servers import MCPServerRecord, load_enabled_servers
from aibridge.store.providers import ProviderRecord, load_live_providers
from aibridge.store.pubsub import MCP_SERVERS_CHANGED, PROVIDERS_CHANGED, PubSub
from aibridge.store.watch import ConfigWatcher

log = logging.getLogger(__name__)


class ReloadMetrics:
    """The reload series, plus the key ring and breaker series that the runtimes a reload
    builds report to (those are created with the rest of the gateway's metrics)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        keypool: KeyRingMetrics | None = None,
        breakers: CircuitBreakerMetrics | None = None,
    ) -> None:
        self.registry = registry
        self.keypool = keypool
        self.breakers = breakers
        self.provider_info = Gauge(
            "aibridge_provider_info",
            "1 for every provider of the current snapshot, labelled with its status.",
            ["provider_name", "provider_type", "status"],
            registry=registry,
        )
        self.reload_last_attempt = Gauge(
            "aibridge_provider_reload_last_attempt_timestamp_seconds",
            "Unix time of the last provider reload attempt.",
            registry=registry,
        )
        self.reload_last_success = Gauge(
            "aibridge_provider_reload_last_success_timestamp_seconds",
            "Unix time of the last successful provider reload.",
            registry=registry,
        )
        self.reloads = Counter(
            "aibridge_provider_reloads_total",
            "Provider reloads by result.",
            ["result"],
            registry=registry,
        )


@dataclass
class ReloadStatus:
    """What the last reloads did, for ``/readyz`` and metrics."""

    loaded: bool = False
    config_version: int = -1
    last_attempt: float | None = None
    last_success: float | None = None
    last_error: str | None = None
    reloads: int = 0
    provider_status: dict[str, tuple[str, str]] = field(default_factory=dict)
    mcp_servers: int = 0
    mcp_errors: dict[str, str] = field(default_factory=dict)


def build_mcp_servers(
    records: Sequence[MCPServerRecord],
) -> tuple[tuple[MCPServerSettings, ...], dict[str, str]]:
    """The runtime settings of each enabled server; a row that cannot be used (written
    around the validation) is skipped and reported by name, the others are kept."""
    servers: list[MCPServerSettings] = []
    errors: dict[str, str] = {}
    for record in records:
        if not record.enabled:
            continue
        try:
            servers.append(server_settings(record))
        except ValueError as exc:
            errors[record.name] = str(exc)
            log.error(
                "MCP server skipped: misconfigured",
                extra={"mcp_server": record.name, "error": str(exc)},
            )
    return tuple(servers), errors


def build_snapshot(
    records: list[ProviderRecord],
    generation: int,
    *,
    previous: ProviderSnapshot | None = None,
    clock: Clock | None = None,
    metrics: ReloadMetrics | None = None,
    mcp_servers: tuple[MCPServerSettings, ...] = (),
) -> ProviderSnapshot:
    """Build every row independently; a row that fails is skipped and reported.
    ``mcp_servers`` (see :func:`build_mcp_servers`) go into the snapshot as they are.

    A row identical to the one behind the previous snapshot's runtime keeps that
    runtime, so key cooldowns and breaker state survive unrelated reloads.
    """
    providers: dict[str, Provider | DisabledProvider] = {}
    errors: dict[str, str] = {}
    for record in records:
        old = previous.get(record.name) if previous is not None else None
        if old is not None and old.record == record:
            providers[record.name] = old
            continue
        try:
            providers[record.name] = build_provider(
                record,
                clock=clock,
                keyring_metrics=metrics.keypool if metrics else None,
                breaker_metrics=metrics.breakers if metrics else None,
            )
        except (ProviderBuildError, ValueError) as exc:
            errors[record.name] = str(exc)
            log.error(
                "provider skipped: misconfigured",
                extra={"provider": record.name, "error": str(exc)},
            )
    return ProviderSnapshot(generation, providers, errors, mcp_servers)


class ProviderReloader:
    """Keeps a :class:`ProviderSnapshot` in step with the database."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        encryptor: Encryptor | None,
        pubsub: PubSub,
        on_snapshot: Callable[[ProviderSnapshot], None],
        *,
        reconcile_interval: float = 30.0,
        clock: Clock | None = None,
        metrics: ReloadMetrics | None = None,
        on_applied: Callable[[int], Awaitable[object]] | None = None,
    ) -> None:
        """``on_applied`` gets the applied config version after every successful reload
        and on every reconcile tick (the replica heartbeat); it must not raise."""
        self._sessions = sessions
        self._encryptor = encryptor
        self._on_snapshot = on_snapshot
        self._clock = clock or SystemClock()
        self._metrics = metrics
        self._on_applied = on_applied
        self._lock = asyncio.Lock()
        self._generation = 0
        self.status = ReloadStatus()
        self._watch = ConfigWatcher(
            sessions,
            pubsub,
            (PROVIDERS_CHANGED, MCP_SERVERS_CHANGED),
            what="provider",
            version_name=config_version.PROVIDERS,
            reload=self.reload,
            applied_version=lambda: self.status.config_version,
            interval=reconcile_interval,
            on_tick=self._report_applied,
        )
        self._changed = asyncio.Condition()
        self._latest: ProviderSnapshot | None = None

    async def start(self) -> None:
        """Subscribe, then load once (raising if either fails), then watch."""
        if not await self._watch.start():
            raise RuntimeError(f"initial provider load failed: {self.status.last_error}")

    async def stop(self) -> None:
        """Unsubscribe and stop background work."""
        await self._watch.stop()

    async def wait_for(self, predicate: Callable[[ProviderSnapshot], bool]) -> ProviderSnapshot:
        """Wait until a snapshot satisfying ``predicate`` is installed (wrap in a timeout)."""
        async with self._changed:
            while self._latest is None or not predicate(self._latest):
                await self._changed.wait()
            return self._latest

    @property
    def reconcile_interval(self) -> float:
        """Seconds between config-version checks (and replica heartbeats)."""
        return self._watch.interval

    @property
    def snapshot(self) -> ProviderSnapshot | None:
        """The snapshot the last successful reload installed (None before the first)."""
        return self._latest

    async def _report_applied(self) -> None:
        if self._on_applied is None or not self.status.loaded:
            return
        try:
            await self._on_applied(self.status.config_version)
        except Exception as exc:
            # Diagnostics only: a failing observer must not stop reloads.
            log.warning("applied-version hook failed", extra={"error": str(exc)})

    async def reload(self) -> bool:
        """Read all live providers and enabled MCP servers in one transaction and swap the
        snapshot, then report the applied version (outside the lock); False on failure."""
        ok = await self._reload_locked()
        if ok:
            await self._report_applied()
        return ok

    async def _reload_locked(self) -> bool:
        async with self._lock:
            self.status.last_attempt = time.time()
            try:
                async with self._sessions() as session, session.begin():
                    version = await config_version.read(session)
                    records = await load_live_providers(session, self._encryptor)
                    mcp_records = await load_enabled_servers(session, self._encryptor)
            except Exception as exc:
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                if self._metrics is not None:
                    self._metrics.reloads.labels("error").inc()
                    self._metrics.reload_last_attempt.set(self.status.last_attempt)
                log.error(
                    "provider reload failed; keeping the previous snapshot",
                    extra={"error": self.status.last_error},
                )
                return False
            self._generation += 1
            mcp_servers, mcp_errors = build_mcp_servers(mcp_records)
            snapshot = build_snapshot(
                records,
                self._generation,
                previous=self._latest,
                clock=self._clock,
                metrics=self._metrics,
                mcp_servers=mcp_servers,
            )
            self._on_snapshot(snapshot)
            self._latest = snapshot
            async with self._changed:
                self._changed.notify_all()
            self.status.loaded = True
            self.status.config_version = version
            self.status.last_success = time.time()
            self.status.last_error = None
            self.status.reloads += 1
            self.status.provider_status = {
                name: (p.type, "enabled" if p.enabled else "disabled")
                for name, p in snapshot.providers.items()
            } | {r.name: (r.type, "error") for r in records if r.name in snapshot.errors}
            self.status.mcp_servers = len(mcp_servers)
            self.status.mcp_errors = mcp_errors
            self._export_metrics()
            log.info(
                "providers reloaded",
                extra={
                    "generation": self._generation,
                    "providers": len(snapshot.providers),
                    "errors": len(snapshot.errors),
                    "mcp_servers": len(mcp_servers),
                },
            )
            return True

    def _export_metrics(self) -> None:
        metrics = self._metrics
        if metrics is None:
            return
        metrics.reloads.labels("success").inc()
        assert self.status.last_attempt is not None and self.status.last_success is not None
        metrics.reload_last_attempt.set(self.status.last_attempt)
        metrics.reload_last_success.set(self.status.last_success)
        metrics.provider_info.clear()
        for name, (ptype, status) in self.status.provider_status.items():
            metrics.provider_info.labels(name, ptype, status).set(1)
