"""CachedBridgePool: counterparts of reference §7.2 (Pool-v4 ``pool_test.go``), §7.3
(``pool_internal_test.go``) and §7.6 (metrics) that apply, plus the pool's own edges
(single flight, LRU/TTL, in-flight requests across retirement, bounded drains).

Not applicable here: ``TestPoolPolicyRejectedEntryRemainsUsableUntilRetired`` (this cache
has no admission policy: the newest key is always admitted, see ``test_pool``),
``TestPoolServeRebuildsShutdownCachedBridge`` (the pool owns a bridge's lifecycle: nothing
else can retire a bridge, and retiring one removes it from the cache at once), and the
§7.6 provider_info tests (reloader metrics, not the pool).

Retirements that race with a request are made the way they happen in production: an
expiry sweep (the clock moved past the TTL) inside the ``before_admission`` hook.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from aibridge.actor import Actor
from aibridge.clock import FakeClock
from aibridge.pool import (
    BridgeBuildError,
    BridgeBuildExited,
    BridgeKey,
    CachedBridgePool,
    PoolHooks,
    PoolShuttingDown,
    RetryLimitExceeded,
)
from aibridge.providers.snapshot import ProviderSnapshot
from tests.pool.harness import (
    WAIT,
    FakeBridge,
    Harness,
    acquire_once,
    close_pool,
    fake_snapshot,
    make_actor,
)

DRAIN_TIMED_OUT = "bridge retirement timed out; cancelled admitted requests"
"""What the pool logs when a drain had to cancel admitted requests."""


def sample(pool: CachedBridgePool[Any], name: str, **labels: str) -> float:
    """A sample of the pool's registry (0 when the series does not exist yet)."""
    value = pool.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def settle(pool: CachedBridgePool[Any]) -> None:
    """Wait (bounded) for the pool's background retirements."""
    async with asyncio.timeout(WAIT):
        await pool.settle()


def gated_harness() -> tuple[Harness, asyncio.Event]:
    """A harness whose builds wait for the returned event before they build."""
    release = asyncio.Event()

    async def in_builder(_key: BridgeKey, _snapshot: ProviderSnapshot) -> None:
        await release.wait()

    h = Harness()
    h.in_builder = in_builder
    return h, release


class Held:
    """A request that holds its bridge until released (a long response in flight)."""

    def __init__(self, pool: CachedBridgePool[Any], actor: Actor) -> None:
        self.admitted = asyncio.Event()
        self.release = asyncio.Event()
        self.bridge: Any = None
        self.cancelled = False
        self.task = asyncio.create_task(self._run(pool, actor))

    async def _run(self, pool: CachedBridgePool[Any], actor: Actor) -> Any:
        try:
            async with pool.acquire(actor) as bridge:
                bridge.admitted_total += 1
                self.bridge = bridge
                self.admitted.set()
                await self.release.wait()
                return bridge
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    async def started(self) -> Any:
        async with asyncio.timeout(WAIT):
            await self.admitted.wait()
        return self.bridge


# ---------------------------------------------------------------------------------------
# §7.2 pool_test.go@19aed56 (Serve era; ``Serve`` itself is gone: only tests called it)
# ---------------------------------------------------------------------------------------


async def test_a_build_that_publishes_into_a_replaced_generation_is_not_served() -> None:
    """Mirrors ``TestPoolReplaceProvidersDuringCachePublication``: a build parked right
    before publishing into generation 1 while replace publishes generation 2 must not
    serve the stale bridge; the request is retried and answered by the new providers."""
    parked, release = asyncio.Event(), asyncio.Event()

    async def before_store(_key: BridgeKey, generation: int) -> None:
        if generation == 1:
            parked.set()
            await release.wait()

    h = Harness()
    pool = h.pool(
        max_items=10,
        ttl=60.0,
        snapshot=fake_snapshot(1, old="old"),
        hooks=PoolHooks(after_build_before_store=before_store),
    )
    try:
        request = asyncio.create_task(acquire_once(pool, make_actor()))
        async with asyncio.timeout(WAIT):
            await parked.wait()
        pool.replace_providers(fake_snapshot(2, new="new"))
        release.set()
        async with asyncio.timeout(WAIT):
            bridge = await request
        assert bridge.body("/new/v1/models") == (200, "new")
        assert len(h.bridges) == 2
        stale = h.bridges[0]
        assert stale.snapshot.generation == 1
        await settle(pool)
        assert (stale.admitted_total, stale.shutdown_calls) == (0, 1)
        assert sample(pool, "aibridge_bridge_pool_retries_total", reason="generation") == 1
        assert sample(pool, "aibridge_bridge_pool_retirements_total", reason="stale") == 1
        assert pool.cache_metrics().keys_added == 1  # only the new-generation bridge
    finally:
        release.set()
        await close_pool(pool)


# ---------------------------------------------------------------------------------------
# §7.3 pool_internal_test.go
# ---------------------------------------------------------------------------------------


async def test_serve_retries_retired_cached_bridge_admission() -> None:
    """Mirrors ``TestPoolServeRetriesRetiredCachedBridgeAdmission``: the cached bridge is
    retired (expired by a sweep) between selection and admission; the request retries on a
    second build."""
    h = Harness()
    clock = FakeClock()

    async def expire_first(_key: BridgeKey, bridge: FakeBridge) -> None:
        if bridge is h.bridges[0]:
            clock.advance(60.0)
            assert pool.sweep() == 1

    pool = h.pool(max_items=10, ttl=60.0, clock=clock)
    actor = make_actor()
    try:
        async with asyncio.timeout(WAIT), pool.acquire(actor):
            pass  # prime the cache; the hook is installed below
        pool._hooks.before_admission = expire_first
        served = await acquire_once(pool, actor)
        assert served is h.bridges[1] and len(h.bridges) == 2
        assert sample(pool, "aibridge_bridge_pool_retries_total", reason="admission") == 1
        assert sample(pool, "aibridge_bridge_pool_retry_exhausted_total", reason="admission") == 0
        # The cache now holds the second bridge.
        assert await acquire_once(pool, actor) is h.bridges[1]
        await settle(pool)
        assert h.bridges[0].shutdown_calls == 1
    finally:
        await close_pool(pool)


async def test_with_a_negative_ttl_a_build_serves_uncached_and_retires_after_the_request() -> None:
    """Mirrors ``TestPoolServeUncachedFallback``: with a negative TTL nothing is cached, yet
    the build still serves the request; it is retired when the request ends."""
    h = Harness()
    pool = h.pool(max_items=10, ttl=-1.0)
    try:
        bridge = await acquire_once(pool, make_actor())
        assert bridge.admitted_total == 1
        assert len(h.bridges) == 1
        assert pool.cache_metrics().keys_added == 0 and len(pool) == 0
        assert sample(pool, "aibridge_bridge_pool_uncached_serve_attempts_total") == 1
        await settle(pool)
        assert bridge.shutdown_calls == 1
    finally:
        await close_pool(pool)


async def test_serve_uncached_fallback_coalesces_concurrent_builds() -> None:
    """Mirrors ``TestPoolServeUncachedFallbackCoalescesConcurrentBuilds``: 16 concurrent
    requests join one blocked uncached build; all are served; exactly one build and one
    shutdown; KeysAdded 0; uncached-serve counter 16."""
    h, release = gated_harness()
    pool = h.pool(max_items=10, ttl=-1.0)
    actor = make_actor()
    try:
        tasks = [asyncio.create_task(acquire_once(pool, actor)) for _ in range(16)]
        # One loop turn runs every task up to its wait on the shared build.
        await asyncio.sleep(0)
        [build] = pool._builds.in_progress()
        assert build.users == 16
        release.set()
        async with asyncio.timeout(WAIT):
            served = await asyncio.gather(*tasks)
        assert len(h.bridges) == 1 and all(b is h.bridges[0] for b in served)
        assert h.bridges[0].admitted_total == 16
        await settle(pool)
        assert sample(pool, "aibridge_bridge_pool_builds_total") == 1
        assert h.bridges[0].shutdown_calls == 1
        assert pool.cache_metrics().keys_added == 0
        assert sample(pool, "aibridge_bridge_pool_uncached_serve_attempts_total") == 16
    finally:
        release.set()
        await close_pool(pool)


async def test_uncached_bridge_retired_twice_over_shuts_down_once() -> None:
    """Exactly-once retirement when two paths reach the same bridge: an uncached bridge in
    use is retired by a replacement, and again by its last caller's release."""
    h = Harness()
    pool = h.pool(max_items=10, ttl=-1.0)
    held = Held(pool, make_actor())
    try:
        bridge = await held.started()
        pool.replace_providers(fake_snapshot(2))
        held.release.set()
        async with asyncio.timeout(WAIT):
            await held.task
        await settle(pool)
        assert bridge.shutdown_calls == 1
        assert sample(pool, "aibridge_bridge_pool_retirements_total", reason="replaced") == 1
        assert sample(pool, "aibridge_bridge_pool_retirements_total", reason="uncached") == 0
    finally:
        held.release.set()
        await close_pool(pool)


async def test_serve_admission_retries_are_bounded() -> None:
    """Mirrors ``TestPoolServeAdmissionRetriesAreBounded``: a bridge retired (expired by a
    sweep) before each of three admissions fails the request with the retry-limit error
    after 3 builds."""
    clock = FakeClock()

    async def always_expire(_key: BridgeKey, _bridge: FakeBridge) -> None:
        clock.advance(60.0)
        assert pool.sweep() == 1

    h = Harness()
    pool = h.pool(
        max_items=10, ttl=60.0, clock=clock, hooks=PoolHooks(before_admission=always_expire)
    )
    try:
        with pytest.raises(RetryLimitExceeded) as err:
            await acquire_once(pool, make_actor())
        assert str(err.value) == "request bridge retry limit exceeded: admission"
        assert len(h.bridges) == 3
        assert sample(pool, "aibridge_bridge_pool_retries_total", reason="admission") == 2
        assert sample(pool, "aibridge_bridge_pool_retry_exhausted_total", reason="admission") == 1
        await settle(pool)
        assert [b.shutdown_calls for b in h.bridges] == [1, 1, 1]
    finally:
        await close_pool(pool)


async def test_build_group_releases_waiters_after_exception() -> None:
    """Mirrors ``TestBridgeBuildGroupReleasesWaitersAfterPanic``: a failing build raises the
    same error in the leader and the joined waiter; the key can be built again afterwards."""
    h, release = gated_harness()
    h.build_error = ValueError("boom")
    pool = h.pool(max_items=10, ttl=60.0)
    actor = make_actor()
    try:
        leader = asyncio.create_task(acquire_once(pool, actor))
        waiter = asyncio.create_task(acquire_once(pool, actor))
        await asyncio.sleep(0)  # one loop turn: both have joined the single build
        assert pool._builds.in_progress()[0].users == 2
        release.set()
        async with asyncio.timeout(WAIT):
            results = await asyncio.gather(leader, waiter, return_exceptions=True)
        assert all(isinstance(r, BridgeBuildError) for r in results)
        assert results[0] is results[1]
        assert str(results[0]) == "create new request bridge: boom"
        assert isinstance(results[0].__cause__, ValueError)
        assert sample(pool, "aibridge_bridge_pool_build_failures_total") == 1

        h.build_error = None
        assert isinstance(await acquire_once(pool, actor), FakeBridge)
    finally:
        release.set()
        await close_pool(pool)


async def test_build_group_releases_waiters_after_exit() -> None:
    """Mirrors ``TestBridgeBuildGroupReleasesWaitersAfterGoexit``: a build that exits
    without a result (its task is cancelled) releases the waiters with "request bridge
    build exited"; the key is reusable."""
    release = asyncio.Event()

    async def in_builder(_key: BridgeKey, _snapshot: ProviderSnapshot) -> None:
        await release.wait()
        raise asyncio.CancelledError()  # the build task ends abruptly

    h = Harness()
    h.in_builder = in_builder
    pool = h.pool(max_items=10, ttl=60.0)
    actor = make_actor()
    try:
        leader = asyncio.create_task(acquire_once(pool, actor))
        waiter = asyncio.create_task(acquire_once(pool, actor))
        await asyncio.sleep(0)
        release.set()
        async with asyncio.timeout(WAIT):
            results = await asyncio.gather(leader, waiter, return_exceptions=True)
        assert [type(r) for r in results] == [BridgeBuildExited, BridgeBuildExited]
        assert str(results[0]) == "request bridge build exited"
        assert not leader.cancelled() and not waiter.cancelled()

        h.in_builder = None
        assert isinstance(await acquire_once(pool, actor), FakeBridge)
        assert len(pool._builds) == 0
    finally:
        release.set()
        await close_pool(pool)


async def test_serve_uncached_fallback_releases_after_exception() -> None:
    """Mirrors ``TestPoolServeUncachedFallbackReleasesAfterPanic``: an exception in the
    request propagates, yet the uncached bridge is still retired (shut down once)."""
    h = Harness()
    pool = h.pool(max_items=10, ttl=-1.0)
    try:
        with pytest.raises(RuntimeError, match="writer exploded"):
            async with asyncio.timeout(WAIT), pool.acquire(make_actor()):
                raise RuntimeError("writer exploded")
        await settle(pool)
        assert h.bridges[0].shutdown_calls == 1
    finally:
        await close_pool(pool)


async def test_shutdown_cancels_bridge_build() -> None:
    """Mirrors ``TestPoolShutdownCancelsBridgeBuild``: shutdown with no time left while a
    build is blocked (Go: in MCP Build) returns False (forced), the build sees cancellation
    and the request fails with "pool shutting down"."""
    started = asyncio.Event()
    observed_cancel = asyncio.Event()

    async def blocking_build(_key: BridgeKey, _snapshot: ProviderSnapshot) -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # blocks until cancelled
        except asyncio.CancelledError:
            observed_cancel.set()
            raise

    h = Harness()
    h.in_builder = blocking_build
    pool = h.pool(max_items=10, ttl=60.0)
    request = asyncio.create_task(acquire_once(pool, make_actor()))
    async with asyncio.timeout(WAIT):
        await started.wait()
        assert await pool.shutdown(timeout=0) is False
    assert observed_cancel.is_set()
    with pytest.raises(PoolShuttingDown, match=r"^pool shutting down$"):
        async with asyncio.timeout(WAIT):
            await request
    assert h.bridges == []


async def test_shutdown_cancels_admitted_request() -> None:
    """Mirrors ``TestPoolShutdownCancelsAdmittedRequest``: shutdown with no time left while
    a request is admitted and streaming returns False and cancels that request; the
    bridge is still shut down exactly once."""
    h = Harness()
    pool = h.pool(max_items=10, ttl=60.0)
    held = Held(pool, make_actor())
    bridge = await held.started()
    async with asyncio.timeout(WAIT):
        assert await pool.shutdown(timeout=0) is False
    async with asyncio.timeout(WAIT):
        with pytest.raises(asyncio.CancelledError):
            await held.task
    assert held.cancelled
    assert bridge.shutdown_calls == 1


# ---------------------------------------------------------------------------------------
# §7.6 metrics
# ---------------------------------------------------------------------------------------


async def test_metrics_without_registry_are_safe() -> None:
    """Mirrors ``TestMetricsNilSafe``: without an injected registry the pool works and
    keeps its series on a private registry (never the global one)."""
    h = Harness()
    pool = CachedBridgePool(h.build, fake_snapshot(1), sweep_interval=None, clock=FakeClock())
    try:
        await acquire_once(pool, make_actor())
        assert sample(pool, "aibridge_bridge_pool_builds_total") == 1
        assert pool.metrics.registry is not None
    finally:
        await close_pool(pool)


async def test_the_pools_series_live_on_the_injected_registry() -> None:
    """The pool's series live on the injected registry: builds, failures, retirements by
    reason and the size gauge."""
    registry = CollectorRegistry()
    h = Harness()
    pool = h.pool(max_items=1, ttl=60.0, registry=registry)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    try:
        await acquire_once(pool, make_actor())
        assert value("aibridge_bridge_pool_size") == 1
        await acquire_once(pool, make_actor())  # evicts the first
        pool.replace_providers(fake_snapshot(2))  # retires the second
        assert value("aibridge_bridge_pool_size") == 0
        h.build_error = RuntimeError("nope")
        with pytest.raises(BridgeBuildError):
            await acquire_once(pool, make_actor())
        assert value("aibridge_bridge_pool_builds_total") == 3
        assert value("aibridge_bridge_pool_build_failures_total") == 1
        assert value("aibridge_bridge_pool_retirements_total", reason="evicted") == 1
        assert value("aibridge_bridge_pool_retirements_total", reason="replaced") == 1
    finally:
        await close_pool(pool)


# ---------------------------------------------------------------------------------------
# The pool's own edges
# ---------------------------------------------------------------------------------------


async def test_single_flight_concurrent_first_requests_build_one_bridge() -> None:
    """DESIGN "single-flight construction": N concurrent first requests build exactly one
    bridge, which is cached (KeysAdded 1) and shared by all of them."""
    h, release = gated_harness()
    pool = h.pool(max_items=10, ttl=60.0)
    actor = make_actor()
    try:
        tasks = [asyncio.create_task(acquire_once(pool, actor)) for _ in range(16)]
        await asyncio.sleep(0)
        release.set()
        async with asyncio.timeout(WAIT):
            served = await asyncio.gather(*tasks)
        assert len(h.bridges) == 1 and all(b is h.bridges[0] for b in served)
        assert sample(pool, "aibridge_bridge_pool_builds_total") == 1
        m = pool.cache_metrics()
        assert (m.keys_added, m.misses, m.hits) == (1, 16, 0)
        assert await acquire_once(pool, actor) is h.bridges[0]
    finally:
        release.set()
        await close_pool(pool)


async def test_cancelled_leader_does_not_strand_joined_callers() -> None:
    """The build runs in its own task: cancelling the request that started it does not
    cancel it; the joined request gets the bridge and it is cached for later ones."""
    h, release = gated_harness()
    pool = h.pool(max_items=10, ttl=60.0)
    actor = make_actor()
    try:
        leader = asyncio.create_task(acquire_once(pool, actor))
        joiner = asyncio.create_task(acquire_once(pool, actor))
        await asyncio.sleep(0)
        leader.cancel()
        release.set()
        async with asyncio.timeout(WAIT):
            bridge = await joiner
        assert leader.cancelled()
        assert bridge is h.bridges[0] and len(h.bridges) == 1
        assert await acquire_once(pool, actor) is bridge
    finally:
        release.set()
        await close_pool(pool)


async def test_ttl_is_absolute_and_hits_do_not_extend_it() -> None:
    """TTL counts from insertion: a hit just before expiry does not keep the entry alive."""
    clock = FakeClock()
    h = Harness()
    pool = h.pool(max_items=10, ttl=10.0, clock=clock)
    actor = make_actor()
    try:
        first = await acquire_once(pool, actor)
        clock.advance(9.999)
        assert await acquire_once(pool, actor) is first  # still alive, a hit
        clock.advance(0.001)  # exactly ttl since insertion: expired
        assert await acquire_once(pool, actor) is not first
        assert pool.cache_metrics().keys_expired == 1
    finally:
        await close_pool(pool)


async def test_lru_evicts_least_recently_used() -> None:
    """When full, the least recently *used* key goes (a hit refreshes recency, not TTL)."""
    h = Harness()
    pool = h.pool(max_items=2, ttl=60.0)
    a, b, c = make_actor(), make_actor(), make_actor()
    try:
        bridge_a = await acquire_once(pool, a)
        bridge_b = await acquire_once(pool, b)
        assert await acquire_once(pool, a) is bridge_a  # a is now most recently used
        await acquire_once(pool, c)  # evicts b
        assert await acquire_once(pool, a) is bridge_a
        await settle(pool)
        assert (bridge_a.shutdown_calls, bridge_b.shutdown_calls) == (0, 1)
        assert pool.cache_metrics().keys_evicted == 1 and len(pool) == 2
    finally:
        await close_pool(pool)


async def test_sweep_retires_expired_bridges_without_traffic() -> None:
    """``sweep()`` (run periodically in production) releases expired bridges on an idle
    gateway; the lookup path would otherwise only notice on the next request."""
    clock = FakeClock()
    h = Harness()
    pool = h.pool(max_items=10, ttl=5.0, clock=clock)
    try:
        bridge = await acquire_once(pool, make_actor())
        assert pool.sweep() == 0
        clock.advance(5.0)
        assert pool.sweep() == 1 and len(pool) == 0
        await settle(pool)
        assert bridge.shutdown_calls == 1
    finally:
        await close_pool(pool)


async def test_request_in_flight_survives_replacement(caplog: pytest.LogCaptureFixture) -> None:
    """A request keeps the bridge it holds across a replacement: it is not cancelled, new
    requests get a new-generation bridge, and the old bridge's drain completes cleanly
    once the request finishes (shutdown exactly once, no timed-out drain)."""
    h = Harness()
    pool = h.pool(max_items=10, ttl=60.0, snapshot=fake_snapshot(1, old="old"))
    actor = make_actor()
    held = Held(pool, actor)
    try:
        old = await held.started()
        pool.replace_providers(fake_snapshot(2, new="new"))
        new = await acquire_once(pool, actor)
        assert new is not old and new.body("/new/v1/models") == (200, "new")
        assert sample(pool, "aibridge_bridge_pool_retirements_total", reason="replaced") == 1
        assert not held.task.done()
        held.release.set()
        async with asyncio.timeout(WAIT):
            assert await held.task is old
        await settle(pool)
        assert (old.shutdown_calls, held.cancelled) == (1, False)
        assert DRAIN_TIMED_OUT not in caplog.text
    finally:
        held.release.set()
        await close_pool(pool)


async def test_retirement_timeout_cancels_admitted_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past ``retirement_timeout`` a retired bridge cancels the requests still admitted."""
    h = Harness()
    pool = h.pool(max_items=1, ttl=60.0, retirement_timeout=0.0)
    held = Held(pool, make_actor())
    try:
        old = await held.started()
        await acquire_once(pool, make_actor())  # evicts the held bridge
        async with asyncio.timeout(WAIT):
            with pytest.raises(asyncio.CancelledError):
                await held.task
        await settle(pool)
        assert (held.cancelled, old.shutdown_calls) == (True, 1)
        assert DRAIN_TIMED_OUT in caplog.text
    finally:
        held.release.set()
        await close_pool(pool)


async def test_shutdown_drains_in_flight_then_refuses_and_repeats_harmlessly() -> None:
    """Shutdown refuses new work at once ("pool shutting down"), waits for the admitted
    request, retires everything exactly once, and a second call is harmless."""
    h = Harness()
    pool = h.pool(max_items=10, ttl=60.0)
    held = Held(pool, make_actor())
    bridge = await held.started()
    shutdown = asyncio.create_task(pool.shutdown(timeout=WAIT))
    await asyncio.sleep(0)  # one loop turn: shutdown has started
    with pytest.raises(PoolShuttingDown, match=r"^pool shutting down$"):
        await acquire_once(pool, make_actor())
    assert not shutdown.done() and not held.task.done()
    held.release.set()
    async with asyncio.timeout(WAIT):
        assert await shutdown is True
        assert await pool.shutdown() is True
    assert (held.cancelled, bridge.shutdown_calls) == (False, 1)


def test_a_bridge_key_renders_as_user_bar_key() -> None:
    """The key renders as the reference's ``{user}|{key}``."""
    actor = make_actor(key_id="abc123")
    assert str(BridgeKey.of(actor)) == f"{actor.user_id}|abc123"
