"""CachedBridgePool: Python counterparts of the seed tests (Coder's ``pool_test.go``).

Every test names the Go test it mirrors (reference §7.1) and asserts the same things:
instance identity, exact cache counters, "pool shutting down", no join of a stale build,
no deadlock between replace and shutdown. Time is a :class:`FakeClock`; builds are parked
on events; every await that could hang is bounded by ``asyncio.timeout``.

The fakes (bridge, harness) are in ``harness.py``, shared with ``test_pool_internal``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from aibridge.bridge import RequestBridge
from aibridge.clock import FakeClock
from aibridge.governance.limiter import Limiter, LimiterConfig
from aibridge.intercept.errors import routing_error_response
from aibridge.pool import (
    BridgeKey,
    CachedBridgePool,
    PoolHooks,
    PoolShuttingDown,
    request_bridge_builder,
)
from aibridge.providers.base import build_provider
from aibridge.providers.keyring import KeyRingStateCollector
from aibridge.providers.routes import RoutingError
from aibridge.providers.snapshot import ProviderSnapshot
from aibridge.providers.upstream import UpstreamClients
from aibridge.store.providers import ProviderRecord
from aibridge.testing.providers import provider_record
from tests.pool.harness import (
    WAIT,
    FakeBridge,
    Harness,
    acquire_once,
    close_pool,
    counters,
    fake_snapshot,
    make_actor,
    retirements,
)

# ---------------------------------------------------------------------------------------
# Seed tests
# ---------------------------------------------------------------------------------------


async def test_one_bridge_per_user_and_key_with_eviction_and_exact_counters() -> None:
    """Mirrors ``TestPool``: one bridge per (user, key), MaxItems=1 eviction, exact counters."""
    h = Harness()
    pool = h.pool(max_items=1, ttl=1.0)
    try:
        user1, user2 = uuid.uuid4(), uuid.uuid4()
        key1, key2 = uuid.uuid4().hex, uuid.uuid4().hex

        # First acquire for a user builds a bridge once...
        inst = await acquire_once(pool, make_actor(user1, key1))
        assert len(h.bridges) == 1
        # ...and the same instance comes back on the next acquire.
        inst_b = await acquire_once(pool, make_actor(user1, key1))
        assert inst_b is inst
        assert counters(pool) == (1, 0, 1, 1)
        assert len(h.bridges) == 1

        # A new user evicts the old key (max_items=1) and gets a new instance.
        inst2 = await acquire_once(pool, make_actor(user2, key1))
        assert inst2 is not inst
        assert counters(pool) == (2, 1, 1, 2)

        # The same user with another gateway key gets yet another instance.
        inst2b = await acquire_once(pool, make_actor(user2, key2))
        assert inst2b is not inst2
        assert counters(pool) == (3, 2, 1, 3)
        assert len(h.bridges) == 3

        # The two evicted bridges are shut down exactly once each.
        async with asyncio.timeout(WAIT):
            await pool.settle()
        assert [b.shutdown_calls for b in (inst, inst2, inst2b)] == [1, 1, 0]
        assert retirements(pool, "evicted") == 2
    finally:
        await close_pool(pool)
    # Shutdown retires the last one; nothing is shut down twice.
    assert [b.shutdown_calls for b in h.bridges] == [1, 1, 1]


def real_snapshot(generation: int, *records: ProviderRecord) -> ProviderSnapshot:
    """A snapshot of real provider runtimes."""
    return ProviderSnapshot(generation, {r.name: build_provider(r) for r in records})


async def upstream_answering(body: str) -> TestServer:
    """A started upstream whose ``GET /v1/models`` answers ``body``."""

    async def models(_request: web.Request) -> web.Response:
        return web.Response(text=body)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    server = TestServer(app)
    await server.start_server()
    return server


async def test_pool_replace_providers_clears_cache_and_uses_new_providers() -> None:
    """Mirrors ``TestPoolReplaceProvidersClearsCacheAndUsesNewProviders`` end to end.

    Real RequestBridges (the production builder) behind a real aiohttp app, real upstreams:
    ``/old/v1/models`` answers "old"; after ``replace_providers`` the next acquire returns
    a different instance whose ``/new/v1/models`` reaches the new upstream.
    """
    old_up = await upstream_answering("old")
    new_up = await upstream_answering("new")
    upstream = UpstreamClients()
    old = provider_record("old", base_url=str(old_up.make_url("/v1")))
    new = provider_record("new", base_url=str(new_up.make_url("/v1")))
    retired: list[RequestBridge] = []

    async def on_retired(bridge: RequestBridge) -> None:
        retired.append(bridge)

    # Passthrough routes never record, so no addons are needed behind the bridge.
    builder = request_bridge_builder(
        upstream, limiter=Limiter(LimiterConfig()), max_body_bytes=1 << 20
    )
    pool: CachedBridgePool[RequestBridge] = CachedBridgePool(
        builder,
        real_snapshot(1, old),
        max_items=1,
        ttl=60.0,
        clock=FakeClock(),
        sweep_interval=None,
        registry=CollectorRegistry(),
        hooks=PoolHooks(before_bridge_shutdown=on_retired),
    )
    actor = make_actor()
    served: list[RequestBridge] = []

    async def data_plane(request: web.Request) -> web.StreamResponse:
        async with pool.acquire(actor) as bridge:
            served.append(bridge)
            route = bridge.snapshot.resolve(
                request.match_info["name"], "/" + request.match_info["tail"], request.method
            )
            if isinstance(route, RoutingError):
                return routing_error_response(request, route)
            return await bridge.handle(request, route)

    app = web.Application()
    app.router.add_route("*", "/{name}/{tail:.*}", data_plane)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        async with asyncio.timeout(WAIT):
            resp = await client.get("/old/v1/models")
            assert (resp.status, await resp.text()) == (200, "old")
            inst = served[-1]

            pool.replace_providers(real_snapshot(2, new))

            resp = await client.get("/new/v1/models")
            assert (resp.status, await resp.text()) == (200, "new")
            inst_after_reload = served[-1]
            assert inst_after_reload is not inst
            # The old provider is gone from the new bridge.
            resp = await client.get("/old/v1/models")
            assert resp.status == 404
            assert served[-1] is inst_after_reload
            await pool.settle()
        assert retired == [inst]
    finally:
        await close_pool(pool)
        await client.close()
        await upstream.close()
        await old_up.close()
        await new_up.close()


async def test_pool_replace_providers_does_not_join_stale_singleflight() -> None:
    """Mirrors ``TestPoolReplaceProvidersDoesNotJoinStaleSingleflight``.

    Acquire #1 parks inside its build (Go parks in the MCP Build of the bridge build);
    replace_providers; Acquire #2 does not wait for #1 and is served by the new providers;
    #1 then completes without error; Acquire #3 returns the same instance as #2 (the stale
    build was never cached). Pool-v4 on top: the stale bridge is retired without serving
    anything and #1 is served by #2's bridge.
    """
    first_started, release_first = asyncio.Event(), asyncio.Event()

    async def park_first_build(_key: BridgeKey, snapshot: ProviderSnapshot) -> None:
        if snapshot.generation == 1:
            first_started.set()
            await release_first.wait()

    h = Harness()
    h.in_builder = park_first_build
    pool = h.pool(max_items=1, ttl=60.0, snapshot=fake_snapshot(1, old="old"))
    actor = make_actor()
    first = asyncio.create_task(acquire_once(pool, actor))
    try:
        async with asyncio.timeout(WAIT):
            await first_started.wait()

        pool.replace_providers(fake_snapshot(2, new="new"))

        second = await acquire_once(pool, actor)  # bounded; must not wait for #1
        assert not first.done()
        assert second.body("/new/v1/models") == (200, "new")

        release_first.set()
        async with asyncio.timeout(WAIT):
            first_bridge = await first  # no error
        assert first_bridge is second

        third = await acquire_once(pool, actor)
        assert third is second

        # The stale build (old providers) was built, never admitted, retired exactly once.
        async with asyncio.timeout(WAIT):
            await pool.settle()
        stale = [b for b in h.bridges if b.snapshot.generation == 1]
        assert len(stale) == 1 and len(h.bridges) == 2
        assert (stale[0].admitted_total, stale[0].shutdown_calls) == (0, 1)
        m = pool.cache_metrics()
        assert (m.keys_added, m.misses, m.hits) == (1, 2, 2)
        assert (
            pool.metrics.registry.get_sample_value(
                "aibridge_bridge_pool_retries_total", {"reason": "generation"}
            )
            == 1.0
        )
    finally:
        release_first.set()
        await close_pool(pool)


async def test_pool_replace_providers_after_shutdown_is_noop() -> None:
    """Mirrors ``TestPoolReplaceProvidersAfterShutdownIsNoop``: no error, then "pool shutting
    down" from acquire; the builder is never even called."""
    h = Harness()
    pool = h.pool(max_items=1, ttl=60.0)
    async with asyncio.timeout(WAIT):
        assert await pool.shutdown() is True

    pool.replace_providers(fake_snapshot(2, new="new"))  # must not raise
    assert pool.generation == 1

    with pytest.raises(PoolShuttingDown) as err:
        await acquire_once(pool, make_actor())
    assert str(err.value) == "pool shutting down"
    assert h.bridges == []


async def test_a_bridge_past_its_ttl_is_rebuilt_and_the_old_one_shut_down_once() -> None:
    """Mirrors ``TestPool_Expiry``: miss, hit, then past the TTL a miss again (Misses 2,
    Hits 1); the expired bridge is shut down in the background, exactly once."""
    h = Harness()
    clock = FakeClock()
    ttl = 1.0
    pool = h.pool(max_items=1, ttl=ttl, clock=clock)
    try:
        actor = make_actor()
        first = await acquire_once(pool, actor)  # miss
        assert await acquire_once(pool, actor) is first  # hit
        m = pool.cache_metrics()
        assert (m.misses, m.hits) == (1, 1)

        clock.advance(ttl + 0.001)

        third = await acquire_once(pool, actor)  # miss: the entry expired
        assert third is not first
        m = pool.cache_metrics()
        assert (m.misses, m.hits) == (2, 1)
        assert (m.keys_expired, m.keys_evicted) == (1, 0)

        # The synctest.Wait() counterpart: background shutdowns have completed.
        async with asyncio.timeout(WAIT):
            await pool.settle()
        assert first.shutdown_calls == 1
        assert third.shutdown_calls == 0
    finally:
        await close_pool(pool)


# ---------------------------------------------------------------------------------------
# Other §7.1 tests of the same pool_test.go revision
# ---------------------------------------------------------------------------------------


async def test_replace_and_shutdown_running_together_both_return() -> None:
    """Mirrors ``TestPoolShutdownReplaceProviders``: replace and shutdown running
    concurrently do not deadlock and both return.

    ``replace_providers`` is synchronous here (it swaps and retires without awaiting), so
    the place it can be "parked" is its background half: the retirement of the old
    generation's bridge is held at the ``before_bridge_shutdown`` hook while shutdown
    starts, another replace arrives mid-shutdown, and then everything is released.
    """
    parked = asyncio.Event()
    release = asyncio.Event()

    async def hold(_bridge: Any) -> None:
        parked.set()
        await release.wait()

    h = Harness()
    pool = h.pool(max_items=10, ttl=60.0, hooks=PoolHooks(before_bridge_shutdown=hold))
    actor = make_actor()
    old = await acquire_once(pool, actor)

    pool.replace_providers(fake_snapshot(2, new="new"))
    async with asyncio.timeout(WAIT):
        await parked.wait()

    shutdown = asyncio.create_task(pool.shutdown(timeout=WAIT))
    # One loop turn (not a wait for time): the task takes its first step, which marks the
    # pool as closing before shutdown's first await.
    await asyncio.sleep(0)
    assert pool.closing
    pool.replace_providers(fake_snapshot(3, newer="newer"))  # mid-shutdown: silent no-op
    assert pool.generation == 2
    assert not shutdown.done()  # it is waiting for the parked retirement

    release.set()
    async with asyncio.timeout(WAIT):
        assert await shutdown is True
    assert old.shutdown_calls == 1
    assert retirements(pool, "replaced") == 1
    with pytest.raises(PoolShuttingDown, match=r"^pool shutting down$"):
        await acquire_once(pool, actor)


async def test_key_rings_are_the_snapshots_rings_in_provider_order() -> None:
    """Mirrors ``TestPoolKeyPools`` (pool part): ``key_rings()`` returns the key rings of the
    current snapshot in provider order, skipping a provider without keys (BYOK-only), and
    the scrape-time ``aibridge_key_pool_state`` collector follows a replacement. (429
    transitions are the key ring's own behaviour, covered in test_keyring.py.)"""

    def with_keys(name: str, n: int) -> ProviderRecord:
        keys = [f"sk-{name}-{i:04d}" for i in range(n)]
        return provider_record(name, base_url="https://example.com/v1", keys=keys)

    pool: CachedBridgePool[FakeBridge] = Harness().pool(
        snapshot=real_snapshot(1, with_keys("a", 2), with_keys("byok", 0), with_keys("b", 1))
    )
    registry = CollectorRegistry()
    registry.register(KeyRingStateCollector(pool.key_rings))

    def state(provider: str, st: str) -> float | None:
        return registry.get_sample_value(
            "aibridge_key_pool_state", {"provider": provider, "state": st}
        )

    assert [kp.provider for kp in pool.key_rings()] == ["a", "b"]
    assert (state("a", "valid"), state("b", "valid"), state("byok", "valid")) == (2, 1, None)

    pool.replace_providers(
        real_snapshot(2, with_keys("a", 1), with_keys("b", 2), with_keys("c", 1))
    )
    assert [kp.provider for kp in pool.key_rings()] == ["a", "b", "c"]
    assert (state("a", "valid"), state("b", "valid"), state("c", "valid")) == (1, 2, 1)
    await close_pool(pool)
