"""Which CONNECT hosts the proxy decrypts: a host → provider map, hot-reloaded.

The map is built from the live providers' base-URL hostnames. Disabled providers and
rows whose base URL has no usable hostname are left out (their hosts are tunnelled);
when several providers share a hostname the oldest wins and the others are reported
``proxy_excluded`` (still reachable directly at ``/{name}/…`` on the gateway).

It reloads like the provider snapshot: subscribe first, load once, reload on every
notification; a failed read keeps the previous map, and before the first successful
read the map is empty (fail closed: nothing is decrypted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

from aibridge.proxy.metrics import ProxyMetrics
from aibridge.store.providers import ProviderRoute
from aibridge.store.pubsub import PROVIDERS_CHANGED, PubSub, Unsubscribe

log = logging.getLogger(__name__)

ENABLED = "enabled"
DISABLED = "disabled"
ERROR = "error"
PROXY_EXCLUDED = "proxy_excluded"


@dataclass(frozen=True, slots=True)
class RoutedProvider:
    """The provider a decrypted request to a host is sent to."""

    name: str
    type: str


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """How one provider row was classified by a reload (``error`` says why)."""

    name: str
    type: str
    status: str
    host: str = ""
    error: str = ""


@dataclass(frozen=True)
class Router:
    """An immutable host → provider map (hostnames lower-cased)."""

    hosts: Mapping[str, RoutedProvider] = field(default_factory=lambda: MappingProxyType({}))
    statuses: tuple[ProviderStatus, ...] = ()

    def lookup(self, hostname: str) -> RoutedProvider | None:
        """The provider that owns ``hostname`` (case-insensitive), or None."""
        return self.hosts.get(hostname.lower().rstrip("."))


def classify(rows: Sequence[ProviderRoute]) -> list[ProviderStatus]:
    """Classify each row in order; the first row to claim a hostname keeps it."""
    claimed: dict[str, str] = {}
    out: list[ProviderStatus] = []
    for row in rows:
        if not row.enabled:
            out.append(ProviderStatus(row.name, row.type, DISABLED))
            continue
        host, error = _hostname(row.base_url)
        if error:
            out.append(ProviderStatus(row.name, row.type, ERROR, error=error))
            continue
        owner = claimed.get(host)
        if owner is not None:
            out.append(
                ProviderStatus(
                    row.name,
                    row.type,
                    PROXY_EXCLUDED,
                    host=host,
                    error=f'hostname "{host}" already claimed by provider "{owner}"',
                )
            )
            continue
        claimed[host] = row.name
        out.append(ProviderStatus(row.name, row.type, ENABLED, host=host))
    return out


def _hostname(base_url: str) -> tuple[str, str]:
    if not base_url.strip():
        return "", "base url is empty"
    try:
        parts = urlsplit(base_url.strip())
        host = parts.hostname or ""
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        return "", f'invalid base url "{base_url}": {exc}'
    if parts.scheme not in ("http", "https"):
        return "", f'invalid base url "{base_url}": scheme must be http or https'
    if not host:
        return "", f'base url "{base_url}" has no hostname'
    return host.lower().rstrip("."), ""


def build_router(rows: Sequence[ProviderRoute]) -> Router:
    """The router for ``rows`` (see :func:`classify`)."""
    statuses = classify(rows)
    hosts = {s.host: RoutedProvider(s.name, s.type) for s in statuses if s.status == ENABLED}
    return Router(MappingProxyType(hosts), tuple(statuses))


Refresh = Callable[[], Awaitable[Sequence[ProviderRoute]]]
"""Reads the live provider rows (a database read in production)."""
Version = Callable[[], Awaitable[int]]
"""Reads the providers' config version (bumped by every provider write)."""


class RoutingReloader:
    """Keeps :attr:`router` in step with the providers."""

    def __init__(
        self,
        refresh: Refresh,
        pubsub: PubSub | None,
        *,
        metrics: ProxyMetrics | None = None,
        version: Version | None = None,
        reconcile_interval: float = 30.0,
    ) -> None:
        self._refresh = refresh
        # The cheap poll that heals a lost notification, as the provider reloader's.
        self._version = version
        self._interval = reconcile_interval
        self._seen_version: int | None = None
        self._pubsub = pubsub
        self._metrics = metrics
        # Fail closed until the first successful read.
        self.router = Router()
        self.last_error: str | None = None
        self._lock = asyncio.Lock()
        self._pending = asyncio.Event()
        self._changed = asyncio.Condition()
        self._unsubscribe: Unsubscribe | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Subscribe (raising on failure), load once (a failure is logged and the map
        stays empty), then reload on every notification."""
        if self._pubsub is not None:
            self._unsubscribe = await self._pubsub.subscribe(PROVIDERS_CHANGED, self._notified)
        await self._read_version()
        if not await self.reload():
            log.error(
                "proxy routing could not be loaded; nothing is intercepted until it is",
                extra={"error": self.last_error},
            )
        self._tasks = [asyncio.create_task(self._loop(), name="proxy-routing-reload")]
        if self._version is not None:
            self._tasks.append(
                asyncio.create_task(self._reconcile_loop(), name="proxy-routing-reconcile")
            )

    async def stop(self) -> None:
        """Unsubscribe and stop the reload task."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            await unsubscribe()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _notified(self, _payload: bytes, error: Exception | None) -> None:
        if error is not None:
            log.warning("provider notifications may have been lost; reloading proxy routing")
        self._pending.set()

    async def _loop(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            await self.reload()

    async def _read_version(self) -> bool:
        """Read the config version; True when it changed since the last read."""
        if self._version is None:
            return False
        try:
            version = await self._version()
        except Exception as exc:
            log.warning("proxy routing: config version check failed", extra={"error": str(exc)})
            return False
        changed = self._seen_version is not None and version != self._seen_version
        self._seen_version = version
        return changed

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if await self._read_version():
                log.info("provider config changed without a notification; reloading routing")
                self._pending.set()

    async def wait_for(self, predicate: Callable[[Router], bool]) -> Router:
        """Wait until the installed router satisfies ``predicate`` (wrap in a timeout)."""
        async with self._changed:
            while not predicate(self.router):
                await self._changed.wait()
            return self.router

    async def reload(self) -> bool:
        """Read the rows and swap the router; False (previous router kept) on failure."""
        async with self._lock:
            attempt = time.time()
            if self._metrics is not None:
                self._metrics.last_reload.set(attempt)
            try:
                rows = await self._refresh()
            except Exception as exc:
                self.last_error = f"refresh ai providers for proxy routing: {exc}"
                log.error(
                    "proxy routing reload failed; keeping the previous map",
                    extra={"error": self.last_error},
                )
                return False
            router = build_router(rows)
            self.router = router
            self.last_error = None
            for s in router.statuses:
                if s.status in (ERROR, PROXY_EXCLUDED):
                    log.warning(
                        "provider excluded from proxy routing",
                        extra={"provider": s.name, "status": s.status, "error": s.error},
                    )
            if self._metrics is not None:
                self._metrics.provider_info.clear()
                for s in router.statuses:
                    self._metrics.provider_info.labels(s.name, s.type, s.status).set(1)
                self._metrics.last_reload_success.set(time.time())
            log.info(
                "proxy routing reloaded",
                extra={"providers": len(router.statuses), "hosts": sorted(router.hosts)},
            )
            async with self._changed:
                self._changed.notify_all()
            return True
