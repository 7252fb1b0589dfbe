"""The Redis store: same semantics as the in-process store, shared by replicas; TTLs,
NOSCRIPT, FLUSHALL (budgets survive through the recorded spend) and Redis outages."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from aibridge.clock import FakeClock
from aibridge.governance.limiter import Limiter, Ticket
from aibridge.governance.limitstore import LimitStore
from aibridge.governance.memory_store import MemoryStore
from aibridge.governance.metrics import LimiterMetrics
from aibridge.governance.redis_store import RedisStore
from aibridge.limits import Limits
from aibridge.store.db import session_factory
from aibridge.store.models import Interception, TokenUsage
from aibridge.testing.databases import migrated_engine, sqlite_file_url
from aibridge.testing.redis import delete_prefix, private_redis, unique_prefix

from .conftest import require_redis
from .helpers import START, budget, demand, make_actor, make_limiter, refusal, ticket

StoreFactory = Callable[[], LimitStore]


@pytest.fixture(params=["memory", "redis"])
async def stores(
    request: pytest.FixtureRequest,
) -> AsyncIterator[StoreFactory]:
    """A factory of stores sharing one set of counters (each call: another replica)."""
    if request.param == "memory":
        shared = MemoryStore()
        yield lambda: shared
        return
    url = require_redis()
    prefix = unique_prefix()
    made: list[RedisStore] = []

    def make() -> LimitStore:
        store = RedisStore.from_url(url, prefix)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()
    await delete_prefix(url, prefix)


async def test_two_replicas_admit_exactly_the_request_limit(stores: StoreFactory) -> None:
    fake = FakeClock(now=START)
    replicas = [make_limiter(fake, store=stores(), replica_id=n) for n in ("a", "b")]
    actor = make_actor(Limits(requests_per_minute=10))
    results = await asyncio.wait_for(
        asyncio.gather(*(replicas[i % 2].admit(demand(actor)) for i in range(30))), 10
    )
    assert sum(isinstance(r, Ticket) for r in results) == 10
    refused = [refusal(r) for r in results if not isinstance(r, Ticket)]
    assert {r.retry_after for r in refused} == {60}
    fake.advance(60)
    ticket(await replicas[1].admit(demand(actor)))


async def test_window_edges(stores: StoreFactory) -> None:
    fake = FakeClock(now=START)
    limiter = make_limiter(fake, store=stores())
    actor = make_actor(Limits(requests_per_minute=2))
    ticket(await limiter.admit(demand(actor)))
    fake.advance(20.5)
    second = ticket(await limiter.admit(demand(actor)))
    assert second.headers["x-ratelimit-reset-requests"] == "40s"
    fake.advance(39.4)
    assert refusal(await limiter.admit(demand(actor))).retry_after == 1
    fake.advance(0.1)
    ticket(await limiter.admit(demand(actor)))
    assert refusal(await limiter.admit(demand(actor))).retry_after == 21


async def test_tokens_settle_below_and_above(stores: StoreFactory) -> None:
    fake = FakeClock(now=START)
    limiter = make_limiter(fake, store=stores())
    actor = make_actor(Limits(tokens_per_minute=500))
    held = [ticket(await limiter.admit(demand(actor))) for _ in range(3)]
    assert refusal(await limiter.admit(demand(actor))).retry_after == 60
    for t in held:
        t.add_usage("openai", ("gpt-5",), 10, 5, 1000, 5)
        await t.settle()
    fake.advance(1)
    settled = ticket(await limiter.admit(demand(actor)))
    assert settled.headers["x-ratelimit-remaining-tokens"] == "240"
    settled.add_usage("openai", ("gpt-5",), 300, 300, 0, 0)
    await settled.settle()
    # The bucket leaves the window in 61 s; Retry-After is capped at the window.
    assert refusal(await limiter.admit(demand(actor))).retry_after == 60
    fake.advance(61)
    ticket(await limiter.admit(demand(actor)))


async def test_crashed_replica_slot_and_reservation_expire(stores: StoreFactory) -> None:
    fake = FakeClock(now=START)
    crashed = make_limiter(fake, store=stores(), replica_id="dead")
    alive = make_limiter(fake, store=stores(), replica_id="alive")
    actor = make_actor(Limits(max_concurrent=1, budget=budget("0.0004")))
    ticket(await crashed.admit(demand(actor)))  # holds the slot and 3 * 10^8 pico-USD
    bob = make_actor(Limits(max_concurrent=1), name="bob")
    held = ticket(await alive.admit(demand(bob)))
    assert refusal(await alive.admit(demand(actor))).error_type == "concurrency_limited"
    fake.advance(20)
    await alive.refresh_leases()
    fake.advance(10)  # the dead replica's lease (30 s) is over, bob's was refreshed
    second = ticket(await alive.admit(demand(actor)))
    assert refusal(await alive.admit(demand(bob))).error_type == "concurrency_limited"
    await second.settle()
    await held.settle()


async def test_budget_cross_refuse_new_period(stores: StoreFactory) -> None:
    fake = FakeClock(now=START)
    limiter = make_limiter(fake, store=stores())
    actor = make_actor(Limits(budget=budget("0.001", "day")))
    first = ticket(await limiter.admit(demand(actor)))
    first.add_usage("openai", ("gpt-5",), 500, 300, 0, 0)
    await first.settle()
    over = refusal(await limiter.admit(demand(actor)))
    assert over.error_type == "budget_exceeded" and "$0.0011" in over.message
    assert over.retry_after == 12 * 3600
    fake.advance(12 * 3600)
    ticket(await limiter.admit(demand(actor)))


async def test_every_key_has_a_ttl(shared_redis: tuple[str, str]) -> None:
    url, prefix = shared_redis
    fake = FakeClock(now=datetime.now(UTC))  # real time: Redis judges EXAT against it
    store = RedisStore.from_url(url, prefix)
    limiter = make_limiter(fake, store=store)
    actor = make_actor(
        Limits(
            max_concurrent=5,
            requests_per_minute=5,
            tokens_per_minute=10_000,
            budget=budget("10", "month"),
        )
    )
    held = ticket(await limiter.admit(demand(actor)))
    done = ticket(await limiter.admit(demand(actor)))
    done.add_usage("openai", ("gpt-5",), 100, 100, 0, 0)
    await done.settle()
    client = aioredis.Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        kinds = {k.decode()[len(prefix) :].split(":", 1)[0] for k in keys}
        assert kinds == {"c", "r", "t", "tr", "s", "br"}
        for key in keys:
            assert await client.ttl(key) > 0, key
    finally:
        await client.aclose()
    await held.settle()
    await store.aclose()


async def test_noscript_after_script_flush() -> None:
    async with private_redis() as server:
        store = RedisStore.from_url(server.url, "p:")
        limiter = make_limiter(FakeClock(now=START), store=store)
        actor = make_actor(Limits(requests_per_minute=2))
        ticket(await limiter.admit(demand(actor)))
        await store.client.script_flush()
        ticket(await limiter.admit(demand(actor)))
        assert refusal(await limiter.admit(demand(actor))).error_type == "request_rate_limited"
        assert not limiter.fallback
        await store.aclose()


async def _record_spend(sessions: object, actor_id: uuid.UUID, key_id: str, pusd: int) -> None:
    async with sessions() as session, session.begin():  # type: ignore[operator]
        ix = Interception(
            id=uuid.uuid4(),
            initiator_id=actor_id,
            api_key_id=key_id,
            provider="openai",
            provider_name="openai",
            model="gpt-5",
            started_at=START,
        )
        session.add(ix)
        await session.flush()
        session.add(
            TokenUsage(id=uuid.uuid4(), interception_id=ix.id, input_tokens=1, cost_pusd=pusd)
        )


async def test_flushall_keeps_the_periods_spend(tmp_path: Path) -> None:
    fake = FakeClock(now=START)
    actor = make_actor(Limits(budget=budget("0.001", "day")))
    async with (
        migrated_engine(sqlite_file_url(tmp_path)) as engine,
        private_redis() as server,
    ):
        sessions = session_factory(engine)
        await _record_spend(sessions, actor.user_id, actor.key_id, 8 * 10**8)  # $0.0008
        store = RedisStore.from_url(server.url, "p:")
        base = make_limiter(fake)
        limiter = Limiter(
            base.config, prices=base.prices, clock=fake, store=store, sessions=sessions
        )
        await limiter.start()
        fresh: Limiter | None = None
        try:
            # Admitted while spend + reservations < budget: 8 < 10, then 8 + 3 >= 10.
            first = ticket(await limiter.admit(demand(actor)))
            assert refusal(await limiter.admit(demand(actor))).error_type == "budget_exceeded"
            first.add_usage("openai", ("gpt-5",), 200, 0, 0, 0)  # + 2 * 10^8
            await first.settle()
            day = int(START.replace(hour=0).timestamp())
            spend_key = f"p:s:u:{actor.user_id}|day:{day}"
            assert await store.client.get(spend_key) == b"1000000000"
            await store.client.flushall()
            # Redis lost everything; this replica still knows the recorded 8 plus the 2
            # it saw settle, and seeds Redis again with them.
            assert str(limiter.budget_status(actor)[0].spent_usd) == "0.001"
            assert refusal(await limiter.admit(demand(actor))).error_type == "budget_exceeded"
            assert await store.client.get(spend_key) == b"1000000000"
            # A restarted replica (no memory of its own) after another flush rebuilds
            # from the records alone: the 2 not yet recorded are lost, the 8 are not.
            await store.client.flushall()
            fresh = Limiter(
                base.config,
                prices=base.prices,
                clock=fake,
                store=RedisStore.from_url(server.url, "p:"),
                sessions=sessions,
            )
            await fresh.start()
            ticket(await fresh.admit(demand(actor)))
            assert refusal(await fresh.admit(demand(actor))).error_type == "budget_exceeded"
        finally:
            await limiter.aclose()
            if fresh is not None:
                await fresh.aclose()


async def test_redis_down_falls_back_and_recovers() -> None:
    fake = FakeClock(now=START)
    registry = CollectorRegistry()
    async with private_redis() as server:
        store = RedisStore.from_url(server.url, "p:")
        limiter = make_limiter(fake, store=store, metrics=LimiterMetrics(registry))
        actor = make_actor(Limits(requests_per_minute=3, budget=budget("0.001")))
        spent = ticket(await limiter.admit(demand(actor)))
        spent.add_usage("openai", ("gpt-5",), 800, 0, 0, 0)  # 8 * 10^8 pico-USD
        await spent.settle()
        assert registry.get_sample_value("aibridge_limiter_fallback") == 0
        await server.stop()
        # Traffic keeps flowing on this replica's own counters...
        during = ticket(await asyncio.wait_for(limiter.admit(demand(actor)), 5))
        assert limiter.fallback
        assert registry.get_sample_value("aibridge_limiter_fallback") == 1
        # ...and the budget keeps enforcing from the last known spend (8 + 3 >= 10).
        refused = refusal(await limiter.admit(demand(actor)))
        assert refused.error_type == "budget_exceeded"
        await during.settle()
        assert not await limiter.probe()
        await server.start()
        assert await asyncio.wait_for(limiter.probe(), 5)
        assert registry.get_sample_value("aibridge_limiter_fallback") == 0
        # Back on Redis: the first request (before the outage) is counted there.
        ticket(await limiter.admit(demand(make_actor(Limits(requests_per_minute=3)))))
        assert not limiter.fallback
        await store.aclose()
