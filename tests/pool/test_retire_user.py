"""CachedBridgePool.retire_user: one user's bridges go (after an MCP credential change),
everybody else's stay; a build of theirs already running serves nobody."""

from __future__ import annotations

import asyncio
import uuid

from aibridge.pool import BridgeKey
from aibridge.providers.snapshot import ProviderSnapshot
from tests.pool.harness import (
    WAIT,
    Harness,
    acquire_once,
    close_pool,
    make_actor,
    retirements,
)


async def test_retire_user_retires_every_bridge_of_that_user_and_no_other() -> None:
    h = Harness()
    pool = h.pool(max_items=10, ttl=60.0)
    alice, bob = uuid.uuid4(), uuid.uuid4()
    alice_1, alice_2 = make_actor(alice, "key-a1"), make_actor(alice, "key-a2")
    bob_1 = make_actor(bob, "key-b1")
    try:
        first = {a: await acquire_once(pool, a) for a in (alice_1, alice_2, bob_1)}

        assert pool.retire_user(alice) == 2
        async with asyncio.timeout(WAIT):
            await pool.settle()
        assert [first[a].shutdown_calls for a in (alice_1, alice_2, bob_1)] == [1, 1, 0]
        assert retirements(pool, "user") == 2.0
        assert len(pool) == 1

        # Alice's next requests build afresh; Bob keeps his bridge.
        again = {a: await acquire_once(pool, a) for a in (alice_1, alice_2, bob_1)}
        assert again[alice_1] is not first[alice_1]
        assert again[alice_2] is not first[alice_2]
        assert again[bob_1] is first[bob_1]
        assert len(h.bridges) == 5

        # A user without bridges: nothing happens.
        assert pool.retire_user(uuid.uuid4()) == 0
        assert retirements(pool, "user") == 2.0
    finally:
        await close_pool(pool)


async def test_a_build_running_during_retire_user_serves_nobody_and_is_rebuilt() -> None:
    parked, release = asyncio.Event(), asyncio.Event()
    builds = 0

    async def park_the_first_build(_key: BridgeKey, _snapshot: ProviderSnapshot) -> None:
        nonlocal builds
        builds += 1
        if builds == 1:
            parked.set()
            await release.wait()

    h = Harness()
    h.in_builder = park_the_first_build
    pool = h.pool(max_items=10, ttl=60.0)
    actor = make_actor()
    waiting = asyncio.create_task(acquire_once(pool, actor))
    try:
        async with asyncio.timeout(WAIT):
            await parked.wait()
        # The credential changes while the bridge (and so its MCP sessions) is being built
        # from the old one.
        assert pool.retire_user(actor.user_id) == 0
        release.set()
        async with asyncio.timeout(WAIT):
            served = await waiting
            await pool.settle()
        stale, fresh = h.bridges
        assert served is fresh
        assert (stale.admitted_total, stale.shutdown_calls) == (0, 1)
        assert fresh.shutdown_calls == 0
        assert await acquire_once(pool, actor) is fresh  # the fresh one is cached
        assert retirements(pool, "stale") == 1.0
    finally:
        release.set()
        await close_pool(pool)


async def test_retire_user_after_shutdown_is_a_noop() -> None:
    h = Harness()
    pool = h.pool(max_items=10, ttl=60.0)
    actor = make_actor()
    await acquire_once(pool, actor)
    await close_pool(pool)
    assert pool.retire_user(actor.user_id) == 0
    assert h.bridges[0].shutdown_calls == 1
