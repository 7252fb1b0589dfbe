"""The CachedBridgePool itself (the contract is in the package docstring).

Concurrency model: everything runs on one event loop and every state transition (cache
lookup/insert, generation swap, retirement, admission) is a synchronous block, so they
cannot interleave; the only awaits are the build itself, the optional test hooks and the
background retirements. :meth:`~CachedBridgePool.replace_providers` is therefore a plain
function (``ProviderReloader`` calls it synchronously) that takes effect before it returns,
and it cannot deadlock with :meth:`~CachedBridgePool.shutdown` because it holds nothing
across an await.

Eviction policy: LRU. A hit moves the key to the most-recently-used end; when the cache
is full, expired entries are dropped first and then the least recently used one. The
newest key is always admitted (the seed expects ``MaxItems=1`` to evict the old key, not
refuse the new one). Expiry is lazy (on every lookup/insert) plus a periodic sweep so an
idle gateway still releases expired bridges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry

from aibridge import tracing
from aibridge.actor import Actor
from aibridge.clock import SYSTEM_CLOCK, Clock
from aibridge.pool._admission import Admission
from aibridge.pool._builder import BridgeBuilder, BridgeKey
from aibridge.pool._builds import NO_LEASE, Build, BuildGroup, Lease
from aibridge.pool._cache import BridgeCache, CacheKey, Entry, Generation
from aibridge.pool._errors import (
    BridgeBuildError,
    BridgeBuildExited,
    GenerationRetired,
    PoolShuttingDown,
    RetryLimitExceeded,
)
from aibridge.pool._hooks import PoolHooks
from aibridge.pool._metrics import CacheMetrics, PoolMetrics
from aibridge.pool._retirement import Retirements, wait_or_cancel
from aibridge.providers.base import Provider
from aibridge.providers.keyring import KeyRing
from aibridge.providers.snapshot import ProviderSnapshot

log = logging.getLogger("aibridge.pool")

B = TypeVar("B")

DEFAULT_MAX_ITEMS = 5000
DEFAULT_TTL_SECONDS = 15 * 60.0
DEFAULT_RETIREMENT_TIMEOUT = 5.0
DEFAULT_SHUTDOWN_TIMEOUT = 10.0
DEFAULT_SWEEP_INTERVAL = 60.0
MAX_SERVE_ATTEMPTS = 3
"""A request tries at most this many bridges (generation or admission races) before failing."""
UNCACHED_WARNING_PERIOD = 60.0


class _Acquired(Generic[B]):
    """``async with pool.acquire(actor) as bridge``: admits on entry, releases on exit.

    A plain class rather than ``contextlib.asynccontextmanager``: every data-plane request
    enters one, and the generator-based version costs an async generator, its first-iter
    hook and two extra frames per request.
    """

    __slots__ = ("_actor", "_admission", "_lease", "_pool")

    def __init__(self, pool: CachedBridgePool[B], actor: Actor) -> None:
        self._pool = pool
        self._actor = actor
        self._admission: Admission | None = None
        self._lease: Lease | None = None

    async def __aenter__(self) -> B:
        tracer = tracing.TRACER
        if tracer is not None:
            return await self._traced(tracer)
        entry, self._admission, self._lease = await self._pool._admit(self._actor)
        return entry.bridge

    async def _traced(self, tracer: tracing.Tracer) -> B:
        """The admission inside a ``CachedBridgePool.Acquire`` span (current while it
        runs, so a build it starts is its child); ``cache_hit`` says whether a cached
        bridge served."""
        actor = self._actor
        span = tracer.start(
            tracing.POOL_ACQUIRE,
            {"user_id": str(actor.user_id), "api_key_id": actor.key_id, "cache_hit": False},
        )
        with tracing.current_span(tracer, span):
            entry, self._admission, self._lease = await self._pool._admit(actor)
            return entry.bridge

    async def __aexit__(self, *exc_info: object) -> None:
        admission, lease = self._admission, self._lease
        self._admission = self._lease = None
        if admission is not None:
            admission.release()
        if lease is not None:
            lease.release()


class CachedBridgePool(Generic[B]):
    """Per-(user, gateway key) cache of bridges; see the module docstring for the contract.

    Serve a request with ``async with pool.acquire(actor) as bridge: ...``. Call
    :meth:`replace_providers` after every provider reload and :meth:`shutdown` when the
    process stops.
    """

    def __init__(
        self,
        builder: BridgeBuilder[B],
        snapshot: ProviderSnapshot | None = None,
        *,
        max_items: int = DEFAULT_MAX_ITEMS,
        ttl: float = DEFAULT_TTL_SECONDS,
        retirement_timeout: float = DEFAULT_RETIREMENT_TIMEOUT,
        sweep_interval: float | None = DEFAULT_SWEEP_INTERVAL,
        clock: Clock = SYSTEM_CLOCK,
        registry: CollectorRegistry | None = None,
        hooks: PoolHooks | None = None,
    ) -> None:
        """Create an empty pool.

        ``ttl <= 0`` or ``max_items == 0`` disables caching: each build is then shared only
        by the requests that joined it and retired after the last of them finishes.
        ``sweep_interval=None`` disables the background expiry sweep (expiry stays lazy).
        """
        if max_items < 0:
            raise ValueError("max_items must be >= 0")
        if retirement_timeout < 0:
            raise ValueError("retirement_timeout must be >= 0")
        self._builder = builder
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._hooks = hooks or PoolHooks()
        self.metrics = PoolMetrics(registry)
        self._cache: BridgeCache[B] = BridgeCache(max_items, ttl, self._on_cache_exit)
        self.metrics.size.set_function(lambda: len(self._cache))
        # The constructor's generation is 1; each replacement creates id + 1.
        self._generation: Generation[B] = Generation(1, snapshot or ProviderSnapshot(0))
        self._builds: BuildGroup[Entry[B]] = BuildGroup(self._build_exited)
        self._retirements = Retirements(retirement_timeout, self._hooks)
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False
        self._shutdown_task: asyncio.Task[bool] | None = None
        self._last_uncached_warning: float | None = None
        # Bumped by retire_user: a build that started before the bump must not be cached
        # or served (it may hold the user's old MCP token). One small int per user who
        # ever changed a credential while this process ran.
        self._user_epochs: dict[uuid.UUID, int] = {}

    # -- introspection -------------------------------------------------------------

    @property
    def snapshot(self) -> ProviderSnapshot:
        """The provider snapshot new bridges are built from."""
        return self._generation.snapshot

    @property
    def generation(self) -> int:
        """The pool's current provider generation (1, then +1 per replacement)."""
        return self._generation.id

    @property
    def closing(self) -> bool:
        """True once :meth:`shutdown` has been called."""
        return self._closing

    def cache_metrics(self) -> CacheMetrics:
        """A snapshot of the cache counters."""
        c = self._cache
        return CacheMetrics(c.hits, c.misses, c.keys_added, c.keys_evicted, c.keys_expired)

    def __len__(self) -> int:
        """Number of cached bridges."""
        return len(self._cache)

    def key_rings(self) -> list[KeyRing]:
        """Key pools of the current snapshot in provider order, skipping key-less providers.

        Feed for ``KeyRingStateCollector`` at scrape time (reference ``KeyPools()``).
        """
        return [
            p.keys
            for p in self._generation.snapshot.providers.values()
            if isinstance(p, Provider) and p.keys.has_keys
        ]

    # -- serving ---------------------------------------------------------------------

    def acquire(self, actor: Actor) -> _Acquired[B]:
        """Hold ``actor``'s bridge (built on first use) for the duration of an
        ``async with`` block.

        Raises :class:`PoolShuttingDown` ("pool shutting down") once shutdown started,
        :class:`BridgeBuildError` if the builder failed, :class:`RetryLimitExceeded` if
        every attempt lost a race with a retirement.
        """
        return _Acquired(self, actor)

    def _check_open(self) -> None:
        if self._closing:
            raise PoolShuttingDown()

    async def _admit(self, actor: Actor) -> tuple[Entry[B], Admission, Lease]:
        self._check_open()
        self._ensure_sweeper()
        key = BridgeKey.of(actor)
        for attempt in range(1, MAX_SERVE_ATTEMPTS + 1):
            # Re-checked on every attempt: a shutdown retires the generation, which turns
            # into a generation retry here and must end as "pool shutting down".
            self._check_open()
            generation = self._generation
            try:
                entry, lease = await self._get_or_build(generation, key, actor)
            except GenerationRetired:
                self._retry(attempt, "generation")
                continue
            try:
                if self._hooks.before_admission is not None:
                    await self._hooks.before_admission(key, entry.bridge)
                admission = entry.gate.try_admit()
            except BaseException:
                lease.release()
                raise
            if admission is not None:
                if entry.uncached:
                    self._record_uncached_serve(entry)
                return entry, admission, lease
            lease.release()
            # Retired between selection and admission (an expiry, eviction or replacement
            # while a build resolved or a hook ran): the pool has already forgotten it, so
            # the next attempt selects or builds another.
            self._retry(attempt, "admission")
        raise AssertionError("unreachable")  # pragma: no cover - _retry raises on the last

    def _retry(self, attempt: int, reason: str) -> None:
        if attempt >= MAX_SERVE_ATTEMPTS:
            self.metrics.retry_exhausted.labels(reason).inc()
            raise RetryLimitExceeded(reason)
        self.metrics.retries.labels(reason).inc()
        log.debug("request bridge retry", extra={"reason": reason, "attempt": attempt})

    def _record_uncached_serve(self, entry: Entry[B]) -> None:
        self.metrics.uncached_serves.inc()
        now = self._clock.monotonic()
        last = self._last_uncached_warning
        if last is None or now - last >= UNCACHED_WARNING_PERIOD:
            self._last_uncached_warning = now
            log.warning(
                "request bridge cache rejected entry; serving uncached",
                extra={"provider_generation": entry.generation.id},
            )

    async def _get_or_build(
        self, generation: Generation[B], key: BridgeKey, actor: Actor
    ) -> tuple[Entry[B], Lease]:
        ck: CacheKey = (generation.id, key)
        cached = self._cache.get(ck, self._clock.monotonic())
        tracer = tracing.TRACER
        if cached is not None:
            if tracer is not None:
                _mark_acquire(tracer, "cache_hit")
            # Never a retired one: retiring an entry removes it from the cache at once.
            return cached, NO_LEASE
        if tracer is not None:
            _mark_acquire(tracer, "cache_miss")
        return await self._builds.join(
            ck,
            lambda build: self._run_build(build, generation, key, actor),
            name=f"bridge-build {key}",
        )

    async def _run_build(
        self, build: Build[Entry[B]], generation: Generation[B], key: BridgeKey, actor: Actor
    ) -> None:
        entry: Entry[B] | None = None
        epoch = self._user_epochs.get(key.user_id, 0)
        try:
            entry = await self._construct(build.ck, generation, key, actor)
            if self._hooks.after_build_before_store is not None:
                await self._hooks.after_build_before_store(key, generation.id)
            self._publish(entry, build, epoch)
            build.resolve(entry)
        except GenerationRetired as exc:
            # _publish already retired the stale bridge.
            build.fail(exc)
        except Exception as exc:
            # Every joined caller gets the same error (the analogue of a Go panic being
            # re-raised in each waiter); the key is free again once this task ends.
            if entry is not None:
                self._retire(entry, "abandoned")
            build.fail(exc)
        except BaseException:
            # Cancelled (forced shutdown) or interpreter exit: never strand what was built.
            if entry is not None:
                self._retire(entry, "abandoned")
            raise

    def _build_exited(self) -> BaseException:
        """What the callers of a build that ended without a result get."""
        return PoolShuttingDown() if self._closing else BridgeBuildExited()

    async def _construct(
        self, ck: CacheKey, generation: Generation[B], key: BridgeKey, actor: Actor
    ) -> Entry[B]:
        self.metrics.builds.inc()
        tracer = tracing.TRACER
        try:
            if tracer is None:
                bridge = await self._builder(key, actor, generation.snapshot)
            else:
                # The build task copied the context of the request that started it: the
                # span is a child of that request's Acquire span (joined requests wait).
                span = tracer.start(tracing.POOL_BUILD, {"provider_generation": generation.id})
                with tracing.current_span(tracer, span):
                    bridge = await self._builder(key, actor, generation.snapshot)
        except Exception as exc:
            self.metrics.build_failures.inc()
            raise BridgeBuildError(exc) from exc
        return Entry(ck, key, generation, bridge)

    def _publish(self, entry: Entry[B], build: Build[Entry[B]], epoch: int) -> None:
        """Register the built entry with its generation and cache it (synchronous)."""
        generation = entry.generation
        if generation.retired or self._user_epochs.get(entry.key.user_id, 0) != epoch:
            # A replacement (or shutdown) happened while this build ran: the bridge was
            # built from replaced providers and must serve nobody. Likewise after
            # retire_user: it may hold the user's replaced credentials. Its callers retry
            # and build afresh.
            self._retire(entry, "stale")
            raise GenerationRetired()
        generation.entries.add(entry)
        if self._cache.enabled:
            self._cache.put(entry, self._clock.monotonic())
        else:
            # Cannot cache: share it with the callers that joined this build and retire it
            # when the last of them finishes.
            entry.uncached = True
            build.cleanup = lambda: self._retire(entry, "uncached")

    # -- expiry ------------------------------------------------------------------------

    def sweep(self) -> int:
        """Retire every cached bridge whose TTL has run out; returns how many."""
        return self._cache.purge_expired(self._clock.monotonic())

    def start(self) -> None:
        """Start the background expiry sweeper now (otherwise it starts on first use)."""
        self._ensure_sweeper()

    def _ensure_sweeper(self) -> None:
        if self._sweep_interval is None or self._sweeper is not None or self._closing:
            return
        self._sweeper = asyncio.create_task(
            self._sweep_loop(self._sweep_interval), name="bridge-pool-sweeper"
        )

    async def _sweep_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.sweep()
            except Exception:  # pragma: no cover - defensive: never kill the sweeper
                log.exception("bridge pool sweep failed")

    # -- retirement ----------------------------------------------------------------------

    def _on_cache_exit(self, entry: Entry[B], reason: str) -> None:
        self._retire(entry, reason)

    def _retire(self, entry: Entry[B], reason: str) -> None:
        """Retire ``entry`` exactly once: stop admission now, drain in the background."""
        gate = entry.gate
        if gate.retired:
            return
        gate.retire()
        entry.generation.entries.discard(entry)
        self._cache.discard(entry)
        self.metrics.retirements.labels(reason).inc()
        self._retirements.drain(gate, entry.bridge, name=f"bridge-retire {entry.key}")

    async def settle(self) -> None:
        """Wait until every background retirement started so far (and since) has finished.

        For tests and orderly shutdowns; unbounded, so wrap it in ``asyncio.timeout``.
        """
        await self._retirements.settle()

    def _retire_generation(self, generation: Generation[B], reason: str) -> None:
        if generation.retired:
            return
        generation.retired = True
        for entry in list(generation.entries):
            self._retire(entry, reason)

    def retire_user(self, user_id: uuid.UUID) -> int:
        """Retire every bridge of ``user_id`` (all their gateway keys) now, e.g. after they
        changed an MCP token; returns how many. Builds of theirs already running finish
        but serve nobody (their callers retry), so the next request builds a bridge that
        reads the user's current credentials. Other users' bridges are untouched.

        Synchronous like :meth:`replace_providers`; requests already admitted finish on
        the bridge they hold. A no-op once shutdown started.
        """
        if self._closing:
            return 0
        self._user_epochs[user_id] = self._user_epochs.get(user_id, 0) + 1
        mine = [e for e in self._generation.entries if e.key.user_id == user_id]
        for entry in mine:
            self._retire(entry, "user")
        log.debug("user's request bridges retired", extra={"count": len(mine)})
        return len(mine)

    # -- reload and shutdown -------------------------------------------------------------

    def replace_providers(self, snapshot: ProviderSnapshot) -> None:
        """Swap the provider snapshot and retire every bridge of the old generation.

        Takes effect before returning: the next acquire builds from ``snapshot``. Requests
        already admitted finish on the bridge they hold (bounded by ``retirement_timeout``).
        A silent no-op once shutdown started.
        """
        if self._closing:
            return
        old = self._generation
        self._generation = Generation(old.id + 1, snapshot)
        # Eagerly, not by TTL, so old bridges go promptly after a provider change such as
        # a key rotation.
        self._retire_generation(old, "replaced")
        log.info(
            "request bridge pool reloaded",
            extra={
                "provider_count": len(snapshot.providers),
                "provider_generation": self._generation.id,
            },
        )

    async def shutdown(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:  # noqa: ASYNC109
        """Refuse new work, retire everything, drain, and return.

        Waits up to ``timeout`` s for builds and retirements (each retirement also bounded
        by ``retirement_timeout``); past that, builds and drains are cancelled (which
        cancels the requests still admitted) and it returns False. True on a clean drain.
        Later calls wait for the first one and return its result.
        """
        if self._shutdown_task is None:
            self._closing = True
            self._shutdown_task = asyncio.create_task(self._shutdown(timeout))
        return await asyncio.shield(self._shutdown_task)

    async def _shutdown(self, timeout: float) -> bool:  # noqa: ASYNC109
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self._retire_generation(self._generation, "shutdown")
        return await wait_or_cancel(self._pending_tasks, timeout)

    def _pending_tasks(self) -> set[asyncio.Task[None]]:
        return self._builds.tasks() | self._retirements.tasks


def _mark_acquire(tracer: tracing.Tracer, event: str) -> None:
    """Say on the current ``CachedBridgePool.Acquire`` span whether the cache served."""
    span = tracer.current()
    if span is not None:
        span.add_event(event)
        if event == "cache_hit":
            span.set_attribute("cache_hit", True)
