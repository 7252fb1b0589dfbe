"""CachedBridgePool: one bridge per (user, gateway key), shared, bounded and hot-reloadable.

What the pool guarantees (the seed's contract, DESIGN.md "The pool"):

* **One bridge per key.** A bridge is built on first use for ``BridgeKey(user_id, key_id)``
  and shared by that key's concurrent requests.
* **Bounded.** At most ``max_items`` cached bridges, each living at most ``ttl`` seconds
  from insertion (absolute: hits do not extend it, so MCP sessions and tokens held by a
  bridge are refreshed periodically).
* **Single-flight per generation.** N concurrent first requests build exactly one bridge.
  The provider *generation* is part of the build identity: a build that started before
  :meth:`CachedBridgePool.replace_providers` is never joined by, cached for, or served to
  a request that arrives afterwards. When a stale build finishes, its bridge is retired
  without serving anything and the callers that had joined it retry on the current
  generation (Pool-v4 behaviour: nobody is served by providers that were replaced).
* **Retirement is exactly once, in the background, bounded.** Eviction, expiry,
  replacement, admission refusal and shutdown all go through one retire path guarded by
  a flag: the bridge stops admitting at once, then a tracked task drains its admitted
  requests (up to ``retirement_timeout``, after which they are cancelled) and closes the
  MCP proxier the pool built for it.
* **In-flight requests keep their bridge.** A request holds an admission on the bridge it
  acquired; nothing the pool does afterwards swaps the bridge under it.

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
import functools
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from aibridge.actor import Actor
from aibridge.bridge import RequestBridge
from aibridge.clock import SYSTEM_CLOCK, Clock
from aibridge.intercept.hooks import NO_ADDONS, Addons
from aibridge.providers.base import Provider
from aibridge.providers.http import UpstreamSessions
from aibridge.providers.keypool import KeyPool
from aibridge.providers.snapshot import ProviderSnapshot

log = logging.getLogger(__name__)

DEFAULT_MAX_ITEMS = 5000
DEFAULT_TTL_SECONDS = 15 * 60.0
DEFAULT_RETIREMENT_TIMEOUT = 5.0
DEFAULT_MCP_TIMEOUT = 30.0
DEFAULT_SHUTDOWN_TIMEOUT = 10.0
DEFAULT_SWEEP_INTERVAL = 60.0
MAX_SERVE_ATTEMPTS = 3
"""A request tries at most this many bridges (generation or admission races) before failing."""
UNCACHED_WARNING_PERIOD = 60.0
CANCEL_GRACE_SECONDS = 1.0
"""How long a forced shutdown waits for cancelled tasks to unwind."""


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


class PoolError(Exception):
    """Base class of the pool's errors."""


class PoolShuttingDown(PoolError):
    """The pool is shutting down (or shut down) and takes no new work."""

    def __init__(self) -> None:
        super().__init__("pool shutting down")


class GenerationRetired(PoolError):
    """The bridge was built for a provider generation that has been replaced."""

    def __init__(self) -> None:
        super().__init__("provider generation retired")


class BridgeBuildExited(PoolError):
    """The build task ended without a result (it was cancelled)."""

    def __init__(self) -> None:
        super().__init__("request bridge build exited")


class RetryLimitExceeded(PoolError):
    """Every attempt lost a race with a retirement; ``reason`` is the last one."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"request bridge retry limit exceeded: {reason}")
        self.reason = reason


class BridgeBuildError(PoolError):
    """The builder failed; the cause is chained."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"create new request bridge: {cause}")


# ---------------------------------------------------------------------------------------
# What the pool needs from its collaborators
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BridgeKey:
    """Identity of a cached bridge: the user and the gateway key they presented."""

    user_id: uuid.UUID
    key_id: str

    @classmethod
    def of(cls, actor: Actor) -> BridgeKey:
        """The key for ``actor``."""
        return cls(actor.user_id, actor.key_id)

    def __str__(self) -> str:
        return f"{self.user_id}|{self.key_id}"


class AdmissionTicket(Protocol):
    """A request admitted onto a bridge."""

    def release(self) -> None:
        """The request is done (must be idempotent)."""
        ...


class PoolBridge(Protocol):
    """The lifecycle a pooled bridge must support (``RequestBridge`` implements it)."""

    def try_admit(self) -> AdmissionTicket | None:
        """Admit the current request, or None once retired."""
        ...

    def retire(self) -> None:
        """Stop admitting; admitted requests continue. Synchronous and idempotent."""
        ...

    async def shutdown(self, timeout: float) -> bool:  # noqa: ASYNC109 (cancels requests)
        """Wait up to ``timeout`` s for admitted requests, then cancel them."""
        ...


class MCPProxier(Protocol):
    """MCP server proxies of one bridge (tools injected into its requests)."""

    async def init(self) -> None:
        """Connect to the MCP servers and list their tools."""
        ...

    async def shutdown(self) -> None:
        """Close the MCP sessions."""
        ...


MCPFactory = Callable[[BridgeKey, Actor], Awaitable[MCPProxier | None]]
"""Builds the MCP proxier for a key (None: no MCP servers). Failures are logged, not fatal."""


async def no_mcp(_key: BridgeKey, _actor: Actor) -> MCPProxier | None:
    """The default MCP factory: no tools."""
    return None


B = TypeVar("B", bound=PoolBridge)
B_co = TypeVar("B_co", bound=PoolBridge, covariant=True)
T = TypeVar("T")


class BridgeBuilder(Protocol[B_co]):
    """Builds a bridge for ``key``/``actor`` over ``snapshot``, with the (optional) MCP tools."""

    def __call__(
        self,
        key: BridgeKey,
        actor: Actor,
        snapshot: ProviderSnapshot,
        *,
        mcp: MCPProxier | None,
    ) -> Awaitable[B_co]:
        """Build the bridge."""
        ...


def request_bridge_builder(
    sessions: UpstreamSessions,
    *,
    max_body_bytes: int,
    hooks: Addons = NO_ADDONS,
) -> BridgeBuilder[RequestBridge]:
    """The production builder: a :class:`RequestBridge` over the generation's snapshot.

    ``mcp`` is accepted but unused until the bridge injects MCP tools; the pool owns the
    proxier's lifecycle either way.
    """

    async def build(
        key: BridgeKey, actor: Actor, snapshot: ProviderSnapshot, *, mcp: MCPProxier | None
    ) -> RequestBridge:
        return RequestBridge(snapshot, actor, sessions, max_body_bytes=max_body_bytes, hooks=hooks)

    return build


@dataclass
class PoolHooks:
    """Test hooks that park a call at a precise point (reference §2.6 names in brackets).

    All default to None, which costs nothing in production.
    """

    after_build_before_store: Callable[[BridgeKey, int], Awaitable[None]] | None = None
    """[bridge_cache_publish] Inside the build task, after the bridge is built, before it is
    published to the cache; receives the key and the build's generation id."""
    before_admission: Callable[[BridgeKey, Any], Awaitable[None]] | None = None
    """[bridge_serve_admission] After a bridge was selected, before the request is admitted."""
    before_bridge_shutdown: Callable[[Any], Awaitable[None]] | None = None
    """In the background retirement task, before the bridge is drained."""


# ---------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheMetrics:
    """Point-in-time cache counters (in-process, for tests; reference §8.1).

    ``keys_evicted`` counts capacity evictions only; TTL expirations are ``keys_expired``;
    removals because of a provider replacement or shutdown are neither (see the
    ``aibridge_bridge_pool_retirements_total{reason}`` series for every retirement).
    """

    hits: int
    misses: int
    keys_added: int
    keys_evicted: int
    keys_expired: int


class PoolMetrics:
    """The pool's Prometheus series on ``registry`` (a private registry when None)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self.builds = Counter(
            "aibridge_bridge_pool_builds_total", "Bridges built by the pool.", registry=reg
        )
        self.build_failures = Counter(
            "aibridge_bridge_pool_build_failures_total",
            "Bridge builds that failed.",
            registry=reg,
        )
        self.retries = Counter(
            "aibridge_bridge_pool_retries_total",
            "Requests that retried on another bridge (generation or admission race).",
            ["reason"],
            registry=reg,
        )
        self.retry_exhausted = Counter(
            "aibridge_bridge_pool_retry_exhausted_total",
            "Requests that failed after the last retry.",
            ["reason"],
            registry=reg,
        )
        self.uncached_serves = Counter(
            "aibridge_bridge_pool_uncached_serve_attempts_total",
            "Requests served by a bridge that could not be cached.",
            registry=reg,
        )
        self.retirements = Counter(
            "aibridge_bridge_pool_retirements_total",
            "Bridges retired, by reason.",
            ["reason"],
            registry=reg,
        )
        self.size = Gauge("aibridge_bridge_pool_size", "Bridges currently cached.", registry=reg)


# ---------------------------------------------------------------------------------------
# Internals
# ---------------------------------------------------------------------------------------

CacheKey = tuple[int, BridgeKey]
"""(generation id, key): entries of different generations can never collide."""


@dataclass(eq=False)
class _Generation(Generic[B]):
    id: int
    snapshot: ProviderSnapshot
    retired: bool = False
    # Every live entry built for this generation (cached or not), so retiring the
    # generation reaches bridges the cache no longer knows about.
    entries: set[_Entry[B]] = field(default_factory=set)


@dataclass(eq=False)
class _Entry(Generic[B]):
    ck: CacheKey
    key: BridgeKey
    generation: _Generation[B]
    bridge: B
    mcp: MCPProxier | None
    uncached: bool = False
    retired: bool = False


@dataclass(eq=False)
class _Build(Generic[B]):
    """One in-progress construction that callers join (single flight) and lease."""

    ck: CacheKey
    future: asyncio.Future[_Entry[B]]
    task: asyncio.Task[None] | None = None
    users: int = 0
    # Runs once when the build is done and the last lease is released (an uncached
    # bridge is retired then); None when the result is cached or there is no result.
    cleanup: Callable[[], None] | None = None

    def maybe_cleanup(self) -> None:
        if self.users == 0 and self.future.done() and self.cleanup is not None:
            cleanup, self.cleanup = self.cleanup, None
            cleanup()


class _Lease:
    """A caller's share of a build; releasing the last share runs the build's cleanup."""

    __slots__ = ("_build", "_released")

    def __init__(self, build: _Build[Any] | None) -> None:
        self._build = build
        self._released = build is None

    def release(self) -> None:
        if self._released or self._build is None:
            return
        self._released = True
        self._build.users -= 1
        self._build.maybe_cleanup()


_NO_LEASE = _Lease(None)


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
        self._admission: AdmissionTicket | None = None
        self._lease: _Lease | None = None

    async def __aenter__(self) -> B:
        entry, self._admission, self._lease = await self._pool._admit(self._actor)
        return entry.bridge

    async def __aexit__(self, *exc_info: object) -> None:
        admission, lease = self._admission, self._lease
        self._admission = self._lease = None
        if admission is not None:
            admission.release()
        if lease is not None:
            lease.release()


class _BridgeCache(Generic[B]):
    """LRU map with an absolute per-entry expiry and the hit/miss/added/evicted counters.

    ``on_exit(entry, reason)`` is called exactly once for every entry the cache removes by
    itself (capacity eviction, expiry); :meth:`discard` removes without calling it because
    the caller is the one retiring the entry.
    """

    def __init__(
        self,
        max_items: int,
        ttl: float,
        on_exit: Callable[[_Entry[B], str], None],
    ) -> None:
        self.max_items = max_items
        self.ttl = ttl
        self._on_exit = on_exit
        # LRU order: first = least recently used.
        self._items: OrderedDict[CacheKey, _Entry[B]] = OrderedDict()
        # Insertion order. The TTL is the same for every entry and hits do not extend it,
        # so insertion order is also expiry order: expired entries are always a prefix.
        self._expiry: OrderedDict[CacheKey, float] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.keys_added = 0
        self.keys_evicted = 0
        self.keys_expired = 0

    @property
    def enabled(self) -> bool:
        """False when nothing can be cached (every build is then served uncached)."""
        return self.max_items > 0 and self.ttl > 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, ck: object) -> bool:
        return ck in self._items

    def get(self, ck: CacheKey, now: float) -> _Entry[B] | None:
        """The live entry for ``ck`` (counting a hit or a miss)."""
        self.purge_expired(now)
        entry = self._items.get(ck)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(ck)
        return entry

    def put(self, entry: _Entry[B], now: float) -> None:
        """Insert ``entry``, evicting expired then least-recently-used entries to make room."""
        self.purge_expired(now)
        old = self._items.pop(entry.ck, None)
        if old is not None:
            # Single flight makes this unreachable; keep exactly-once retirement anyway.
            self._expiry.pop(entry.ck, None)
            self._on_exit(old, "replaced")
        while len(self._items) >= self.max_items:
            victim_ck, victim = self._items.popitem(last=False)
            self._expiry.pop(victim_ck, None)
            self.keys_evicted += 1
            self._on_exit(victim, "evicted")
        self._items[entry.ck] = entry
        self._expiry[entry.ck] = now + self.ttl
        self.keys_added += 1

    def discard(self, entry: _Entry[B]) -> None:
        """Remove ``entry`` if it is the one cached under its key (no exit hook)."""
        if self._items.get(entry.ck) is entry:
            del self._items[entry.ck]
            self._expiry.pop(entry.ck, None)

    def purge_expired(self, now: float) -> int:
        """Drop every entry whose TTL has run out (``now >= inserted + ttl``)."""
        purged = 0
        while self._expiry:
            ck, expires_at = next(iter(self._expiry.items()))
            if now < expires_at:
                break
            del self._expiry[ck]
            entry = self._items.pop(ck)
            self.keys_expired += 1
            purged += 1
            self._on_exit(entry, "expired")
        return purged


# ---------------------------------------------------------------------------------------
# The pool
# ---------------------------------------------------------------------------------------


class CachedBridgePool(Generic[B]):
    """Per-(user, gateway key) cache of bridges; see the module docstring for the contract.

    Serve a request with ``async with pool.acquire(actor) as bridge: ...`` (or
    ``await pool.serve(actor, fn)``). Call :meth:`replace_providers` after every provider
    reload and :meth:`shutdown` when the process stops.
    """

    def __init__(
        self,
        builder: BridgeBuilder[B],
        snapshot: ProviderSnapshot | None = None,
        *,
        max_items: int = DEFAULT_MAX_ITEMS,
        ttl: float = DEFAULT_TTL_SECONDS,
        retirement_timeout: float = DEFAULT_RETIREMENT_TIMEOUT,
        mcp_factory: MCPFactory = no_mcp,
        mcp_timeout: float = DEFAULT_MCP_TIMEOUT,
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
        if retirement_timeout < 0 or mcp_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self._builder = builder
        self._clock = clock
        self._retirement_timeout = retirement_timeout
        self._mcp_factory = mcp_factory
        self._mcp_timeout = mcp_timeout
        self._sweep_interval = sweep_interval
        self._hooks = hooks or PoolHooks()
        self.metrics = PoolMetrics(registry)
        self._cache: _BridgeCache[B] = _BridgeCache(max_items, ttl, self._on_cache_exit)
        self.metrics.size.set_function(lambda: len(self._cache))
        # The constructor's generation is 1; each replacement creates id + 1.
        self._generation: _Generation[B] = _Generation(1, snapshot or ProviderSnapshot(0))
        self._builds: dict[CacheKey, _Build[B]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False
        self._shutdown_task: asyncio.Task[bool] | None = None
        self._last_uncached_warning: float | None = None

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

    def key_pools(self) -> list[KeyPool]:
        """Key pools of the current snapshot in provider order, skipping key-less providers.

        Feed for ``KeyPoolStateCollector`` at scrape time (reference ``KeyPools()``).
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

    async def serve(self, actor: Actor, fn: Callable[[B], Awaitable[T]]) -> T:
        """Run ``fn(bridge)`` while holding ``actor``'s bridge (see :meth:`acquire`)."""
        async with self.acquire(actor) as bridge:
            return await fn(bridge)

    def _check_open(self) -> None:
        if self._closing:
            raise PoolShuttingDown()

    async def _admit(self, actor: Actor) -> tuple[_Entry[B], AdmissionTicket, _Lease]:
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
                admission = None if entry.retired else entry.bridge.try_admit()
            except BaseException:
                lease.release()
                raise
            if admission is not None:
                if entry.uncached:
                    self._record_uncached_serve(entry)
                return entry, admission, lease
            lease.release()
            # The bridge refused (it was retired between selection and admission): make
            # sure the pool forgets it, then try a fresh one.
            self._retire(entry, "refused")
            self._retry(attempt, "admission")
        raise AssertionError("unreachable")  # pragma: no cover - _retry raises on the last

    def _retry(self, attempt: int, reason: str) -> None:
        if attempt >= MAX_SERVE_ATTEMPTS:
            self.metrics.retry_exhausted.labels(reason).inc()
            raise RetryLimitExceeded(reason)
        self.metrics.retries.labels(reason).inc()
        log.debug("request bridge retry", extra={"reason": reason, "attempt": attempt})

    def _record_uncached_serve(self, entry: _Entry[B]) -> None:
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
        self, generation: _Generation[B], key: BridgeKey, actor: Actor
    ) -> tuple[_Entry[B], _Lease]:
        ck: CacheKey = (generation.id, key)
        cached = self._cache.get(ck, self._clock.monotonic())
        if cached is not None and not cached.retired:
            return cached, _NO_LEASE
        build = self._builds.get(ck)
        if build is None:
            build = _Build(ck, asyncio.get_running_loop().create_future())
            self._builds[ck] = build
            # The build runs in its own task so a cancelled leader (client gone) does not
            # strand the callers that joined it; the result is still cached for later.
            build.task = asyncio.create_task(
                self._run_build(build, generation, key, actor), name=f"bridge-build {key}"
            )
            build.task.add_done_callback(functools.partial(self._on_build_done, build))
        build.users += 1
        lease = _Lease(build)
        try:
            # shield: cancelling this waiter must not cancel the shared future.
            entry = await asyncio.shield(build.future)
        except BaseException:
            lease.release()
            raise
        return entry, lease

    async def _run_build(
        self, build: _Build[B], generation: _Generation[B], key: BridgeKey, actor: Actor
    ) -> None:
        entry: _Entry[B] | None = None
        try:
            entry = await self._construct(build.ck, generation, key, actor)
            if self._hooks.after_build_before_store is not None:
                await self._hooks.after_build_before_store(key, generation.id)
            self._publish(entry, build)
            build.future.set_result(entry)
        except GenerationRetired as exc:
            # _publish already retired the stale bridge.
            self._fail(build, exc)
        except Exception as exc:
            # Every joined caller gets the same error (the analogue of a Go panic being
            # re-raised in each waiter); the key is free again once this task ends.
            if entry is not None:
                self._retire(entry, "abandoned")
            self._fail(build, exc)
        except BaseException:
            # Cancelled (forced shutdown) or interpreter exit: never strand what was built.
            if entry is not None:
                self._retire(entry, "abandoned")
            raise

    def _on_build_done(self, build: _Build[B], _task: asyncio.Task[None]) -> None:
        # A done-callback rather than a ``finally``: it also runs when the task was
        # cancelled before its first step, so waiters can never be left hanging.
        if self._builds.get(build.ck) is build:
            del self._builds[build.ck]
        self._fail(build, PoolShuttingDown() if self._closing else BridgeBuildExited())
        # If every caller went away before the build finished, clean up now.
        build.maybe_cleanup()

    @staticmethod
    def _fail(build: _Build[B], exc: BaseException) -> None:
        if not build.future.done():
            build.future.set_exception(exc)
            # Mark retrieved: if every waiter was cancelled nobody reads it, and asyncio
            # would otherwise log "exception was never retrieved".
            build.future.exception()

    async def _construct(
        self, ck: CacheKey, generation: _Generation[B], key: BridgeKey, actor: Actor
    ) -> _Entry[B]:
        self.metrics.builds.inc()
        mcp = await self._build_mcp(key, actor)
        try:
            bridge = await self._builder(key, actor, generation.snapshot, mcp=mcp)
        except BaseException as exc:
            if mcp is not None:
                self._spawn(self._close_mcp(mcp), name=f"mcp-close {key}")
            if isinstance(exc, Exception):
                self.metrics.build_failures.inc()
                raise BridgeBuildError(exc) from exc
            raise
        return _Entry(ck, key, generation, bridge, mcp)

    async def _build_mcp(self, key: BridgeKey, actor: Actor) -> MCPProxier | None:
        """MCP Build then Init; failures degrade to a bridge without (some) tools."""
        try:
            async with asyncio.timeout(self._mcp_timeout):
                proxier = await self._mcp_factory(key, actor)
        except Exception as exc:
            log.warning(
                "failed to create MCP server proxiers", extra={"key": str(key), "error": repr(exc)}
            )
            return None
        if proxier is None:
            return None
        try:
            async with asyncio.timeout(self._mcp_timeout):
                await proxier.init()
        except Exception as exc:
            # Keep the proxier: servers that did initialise still provide tools, and the
            # retirement closes whatever it opened.
            log.warning(
                "failed to initialize MCP server proxier(s)",
                extra={"key": str(key), "error": repr(exc)},
            )
        return proxier

    def _publish(self, entry: _Entry[B], build: _Build[B]) -> None:
        """Register the built entry with its generation and cache it (synchronous)."""
        generation = entry.generation
        if generation.retired:
            # A replacement (or shutdown) happened while this build ran: the bridge was
            # built from replaced providers and must serve nobody.
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

    def _on_cache_exit(self, entry: _Entry[B], reason: str) -> None:
        self._retire(entry, reason)

    def _retire(self, entry: _Entry[B], reason: str) -> None:
        """Retire ``entry`` exactly once: stop admission now, drain and close in background."""
        if entry.retired:
            return
        entry.retired = True
        entry.generation.entries.discard(entry)
        self._cache.discard(entry)
        entry.bridge.retire()
        self.metrics.retirements.labels(reason).inc()
        self._spawn(self._shutdown_entry(entry), name=f"bridge-retire {entry.key}")

    async def _shutdown_entry(self, entry: _Entry[B]) -> None:
        try:
            if self._hooks.before_bridge_shutdown is not None:
                await self._hooks.before_bridge_shutdown(entry.bridge)
            await entry.bridge.shutdown(self._retirement_timeout)
        except Exception:
            # Reference: evicted-bridge shutdown errors are ignored (logged here).
            log.warning("request bridge shutdown failed", exc_info=True)
        finally:
            # Also on cancellation (forced pool shutdown): MCP sessions must not leak.
            if entry.mcp is not None:
                await self._close_mcp(entry.mcp)

    async def _close_mcp(self, mcp: MCPProxier) -> None:
        try:
            async with asyncio.timeout(self._retirement_timeout):
                await mcp.shutdown()
        except Exception:
            log.warning("MCP proxier shutdown failed", exc_info=True)

    def _spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro, name=name)
        except RuntimeError:
            # No running loop. Unreachable in practice (bridges only exist inside a loop),
            # but a synchronous replace_providers() must not raise because of it.
            log.warning("no running loop; bridge shutdown skipped", extra={"task": name})
            coro.close()
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def settle(self) -> None:
        """Wait until every background retirement started so far (and since) has finished.

        For tests and orderly shutdowns; unbounded, so wrap it in ``asyncio.timeout``.
        """
        while self._background:
            await asyncio.wait(set(self._background))

    def _retire_generation(self, generation: _Generation[B], reason: str) -> None:
        if generation.retired:
            return
        generation.retired = True
        for entry in list(generation.entries):
            self._retire(entry, reason)

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
        self._generation = _Generation(old.id + 1, snapshot)
        # Eagerly, not by TTL, so old bridges (and their MCP sessions) go promptly after a
        # provider change such as a key rotation.
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while pending := self._pending_tasks():
            remaining = deadline - loop.time()
            if remaining <= 0:
                await self._force(pending)
                return False
            await asyncio.wait(pending, timeout=remaining)
        return True

    def _pending_tasks(self) -> set[asyncio.Task[None]]:
        tasks = {b.task for b in self._builds.values() if b.task is not None}
        return tasks | self._background

    async def _force(self, pending: set[asyncio.Task[None]]) -> None:
        log.warning("bridge pool shutdown timed out; cancelling", extra={"tasks": len(pending)})
        # A cancelled build may retire what it built, spawning a retirement: a few rounds.
        for _ in range(3):
            # Let tasks created just now take their first step, so their cleanup handlers
            # (cancel admitted requests, close MCP) are in place when the cancel lands.
            await asyncio.sleep(0)
            pending = self._pending_tasks()
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=CANCEL_GRACE_SECONDS)
            pending = self._pending_tasks()
            if not pending:
                return
        log.error("bridge pool shutdown left tasks running", extra={"tasks": len(pending)})
