"""Key cooldowns shared across replicas: two in-process gateways on one database and one
Redis, a provider with two keys, and a fake upstream that answers 429 on the first key."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from aibridge.clock import FakeClock
from aibridge.fakellm import Scenario
from aibridge.providers.base import Provider
from aibridge.providers.keyring import RATE_LIMITED, KeyRing
from aibridge.providers.shared_cooldowns import SharedCooldowns, fingerprint
from aibridge.reload import build_snapshot
from aibridge.server import Services
from aibridge.testing.gateway import gateway
from aibridge.testing.providers import provider_record
from aibridge.testing.redis import (
    REDIS_ENV,
    REQUIRE_REDIS_ENV,
    configured_redis_url,
    delete_prefix,
    private_redis,
    unique_prefix,
)
from aibridge.testing.replicas import poll
from aibridge.testing.stack import Stack, stack

TIMEOUT = 60.0
KEY1 = "sk-shared-cooldown-key-one-0001"
KEY2 = "sk-shared-cooldown-key-two-0002"
RETRY_AFTER = 30

pytestmark = pytest.mark.timeout(300)

Client = TestClient[web.Request, web.Application]


def require_redis() -> str:
    """The shared test Redis URL; skips the test when unset (fails in CI instead)."""
    url = configured_redis_url()
    if url is None:
        if os.environ.get(REQUIRE_REDIS_ENV) == "1":
            pytest.fail(f"{REQUIRE_REDIS_ENV}=1 but {REDIS_ENV} is not set")
        pytest.skip(f"set {REDIS_ENV}=redis://127.0.0.1:6379/0 to run the Redis tests")
    return url


@pytest.fixture
async def shared_redis() -> AsyncIterator[tuple[str, str]]:
    """(URL, key prefix of this test) on the shared Redis; its keys are deleted after."""
    url = require_redis()
    prefix = unique_prefix()
    yield url, prefix
    await delete_prefix(url, prefix)


def now_clock() -> FakeClock:
    """A fake clock whose wall clock starts now: the cooldowns' ends are real times in
    Redis (``PXAT``), so a fake date years ago would expire them at once."""
    return FakeClock(now=datetime.now(UTC))


@asynccontextmanager
async def replica_a(
    db_url: str, tmp_path: Path, redis_url: str, prefix: str, clock: FakeClock
) -> AsyncIterator[Stack]:
    """Gateway A with the fake upstream, a member, and provider ``oai`` with two keys."""
    overrides = {"redis_url": redis_url, "redis_prefix": prefix}
    async with stack(db_url, tmp_path / "a", settings_overrides=overrides, clock=clock) as a:
        await a.add_provider("oai", "openai", keys=(KEY1, KEY2))
        yield a


@asynccontextmanager
async def replica_b(
    db_url: str, tmp_path: Path, redis_url: str, prefix: str, clock: FakeClock
) -> AsyncIterator[tuple[Client, Services]]:
    """Gateway B on the same database and Redis (it loads ``oai`` at start)."""
    overrides = {"redis_url": redis_url, "redis_prefix": prefix}
    async with gateway(db_url, tmp_path / "b", settings_overrides=overrides, clock=clock) as b:
        yield b


async def chat(client: Client, token: str) -> tuple[int, Any]:
    """One Chat Completions request through ``client``'s gateway."""
    async with asyncio.timeout(TIMEOUT):
        resp = await client.post(
            "/oai/v1/chat/completions",
            json={"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {token}"},
        )
        return resp.status, await resp.json()


def seen(a: Stack, secret: str) -> int:
    """How many generation requests the fake upstream received with ``secret``."""
    return sum(r.credential() == secret for r in a.fake.generation_requests())


def ring(services: Services) -> KeyRing:
    (only,) = services.pool.key_rings()
    return only


def key1_cooling(services: Services) -> bool:
    pool = ring(services)
    return not pool.is_usable(pool.keys[0])


def metric(services: Services, name: str, **labels: str) -> float | None:
    value: float | None = services.metrics.registry.get_sample_value(name, labels)
    return value


async def test_a_429_on_one_replica_sends_the_other_straight_to_the_next_key(
    sqlite_url: str, tmp_path: Path, shared_redis: tuple[str, str]
) -> None:
    url, prefix = shared_redis
    clock = now_clock()
    async with (
        replica_a(sqlite_url, tmp_path, url, prefix, clock) as a,
        replica_b(sqlite_url, tmp_path, url, prefix, clock) as (client_b, services_b),
    ):
        a.fake.key_scenarios[KEY1] = Scenario.http_error(429, retry_after=str(RETRY_AFTER))
        # A: key 1 answers 429, the request fails over to key 2.
        assert (await chat(a.client, a.user_token))[0] == 200
        assert (seen(a, KEY1), seen(a, KEY2)) == (1, 1)

        # B hears of it in the background, without a request of its own.
        async def b_knows() -> bool:
            return key1_cooling(services_b)

        await poll(b_knows, TIMEOUT, "replica B to apply A's cooldown")
        assert ring(services_b).cooldown_remaining(ring(services_b).keys[0]) == pytest.approx(
            RETRY_AFTER, abs=1
        )
        assert (await chat(client_b, a.user_token))[0] == 200
        assert (seen(a, KEY1), seen(a, KEY2)) == (1, 2)
        applied = "aibridge_key_pool_shared_cooldowns_total"
        assert metric(services_b, applied, direction="applied") == 1
        assert metric(a.services, applied, direction="published") == 1
        assert metric(services_b, "aibridge_key_pool_cooldowns_shared") == 1

        # In Redis: a fingerprint, never the secret nor its hint; it expires on its own.
        redis = aioredis.Redis.from_url(url)
        try:
            async with asyncio.timeout(TIMEOUT):
                names = [n.decode() async for n in redis.scan_iter(match=f"{prefix}*")]
                provider_id = str(ring_provider(a.services).id)
                assert names == [f"{prefix}cooldown:{provider_id}:{fingerprint(provider_id, KEY1)}"]
                value = (await redis.get(names[0])) or b""
                ttl = await redis.pttl(names[0])
        finally:
            await redis.aclose()
        assert KEY1 not in names[0] and KEY1[-4:] not in value.decode()
        assert value.decode().endswith(f" {RATE_LIMITED}")
        assert 0 < ttl <= RETRY_AFTER * 1000

        # After the cooldown (and the upstream's recovery) both go back to key 1.
        del a.fake.key_scenarios[KEY1]
        # (+1: Redis carries the end in whole milliseconds, rounded up.)
        clock.advance(RETRY_AFTER + 1)
        assert (await chat(a.client, a.user_token))[0] == 200
        assert (await chat(client_b, a.user_token))[0] == 200
        assert (seen(a, KEY1), seen(a, KEY2)) == (3, 2)


def ring_provider(services: Services) -> Provider:
    provider = services.pool.snapshot.get("oai")
    assert isinstance(provider, Provider)
    return provider


async def test_a_replica_that_starts_later_catches_up_from_redis(
    sqlite_url: str, tmp_path: Path, shared_redis: tuple[str, str]
) -> None:
    url, prefix = shared_redis
    clock = now_clock()
    async with replica_a(sqlite_url, tmp_path, url, prefix, clock) as a:
        a.fake.key_scenarios[KEY1] = Scenario.http_error(429, retry_after=str(RETRY_AFTER))
        assert (await chat(a.client, a.user_token))[0] == 200

        async def published() -> bool:
            value = metric(
                a.services, "aibridge_key_pool_shared_cooldowns_total", direction="published"
            )
            return value == 1

        await poll(published, TIMEOUT, "replica A to publish the cooldown")
        async with replica_b(sqlite_url, tmp_path, url, prefix, clock) as (client_b, services_b):
            # Start-up waited for the catch-up: B's very first request skips key 1.
            assert key1_cooling(services_b)
            assert (await chat(client_b, a.user_token))[0] == 200
            assert (seen(a, KEY1), seen(a, KEY2)) == (1, 2)


async def test_redis_down_keeps_local_cooldowns_and_shares_them_once_it_is_back(
    sqlite_url: str, tmp_path: Path
) -> None:
    clock = now_clock()
    prefix = unique_prefix()
    async with private_redis() as server:
        async with (
            replica_a(sqlite_url, tmp_path, server.url, prefix, clock) as a,
            replica_b(sqlite_url, tmp_path, server.url, prefix, clock) as (client_b, services_b),
        ):
            gauge = "aibridge_key_pool_cooldowns_shared"
            assert metric(a.services, gauge) == 1
            await server.stop()

            async def a_noticed() -> bool:
                return metric(a.services, gauge) == 0

            await poll(a_noticed, TIMEOUT, "replica A to notice Redis is gone")
            a.fake.key_scenarios[KEY1] = Scenario.http_error(429, retry_after=str(RETRY_AFTER))
            # Local cooldowns work as without Redis: one 429, then A stays on key 2.
            for _ in range(3):
                assert (await chat(a.client, a.user_token))[0] == 200
            assert (seen(a, KEY1), seen(a, KEY2)) == (1, 3)
            assert not key1_cooling(services_b)

            # Redis is back: A publishes what it decided meanwhile, B applies it.
            await server.start()

            async def b_knows() -> bool:
                return key1_cooling(services_b)

            await poll(b_knows, TIMEOUT, "replica B to get the cooldown after the outage")
            assert (await chat(client_b, a.user_token))[0] == 200
            assert (seen(a, KEY1), seen(a, KEY2)) == (1, 4)

            async def a_shares_again() -> bool:
                return metric(a.services, gauge) == 1

            await poll(a_shares_again, TIMEOUT, "replica A to share again")
        # Both gateways are gone: none of their Redis connections is left open.
        redis = aioredis.Redis.from_url(server.url)
        try:
            async with asyncio.timeout(TIMEOUT):
                clients = await redis.client_list()
        finally:
            await redis.aclose()
        assert len(clients) == 1, clients  # this check's own


def shared_on(url: str, prefix: str, clock: FakeClock, record: Any) -> SharedCooldowns:
    """A sharing of its own over a one-provider snapshot built from ``record``."""
    snapshot = build_snapshot([record], 1, clock=clock)
    return SharedCooldowns(
        url,
        prefix,
        snapshot=lambda: snapshot,
        clock=clock,
        registry=CollectorRegistry(),
        retry_interval=0.05,
    )


def shared_ring(shared: SharedCooldowns) -> KeyRing:
    snapshot = shared._snapshot()
    assert snapshot is not None
    return ring_of(snapshot)


def counted(shared: SharedCooldowns, direction: str) -> float:
    registry = shared.metrics.registry
    assert registry is not None
    name = "aibridge_key_pool_shared_cooldowns_total"
    return registry.get_sample_value(name, {"direction": direction}) or 0.0


async def test_applied_cooldowns_are_never_echoed_and_only_longer_ones_are_published(
    shared_redis: tuple[str, str],
) -> None:
    url, prefix = shared_redis
    clock = now_clock()
    record = provider_record("openai", keys=[KEY1, KEY2])
    x, y = shared_on(url, prefix, clock, record), shared_on(url, prefix, clock, record)
    await x.start()
    await y.start()
    try:
        ring_x, ring_y = shared_ring(x), shared_ring(y)
        ring_x.mark_failed(ring_x.keys[0], 429, retry_after=RETRY_AFTER)

        async def y_knows() -> bool:
            return not ring_y.is_usable(ring_y.keys[0])

        await poll(y_knows, TIMEOUT, "Y to apply X's cooldown")
        assert (counted(x, "published"), counted(y, "applied")) == (1, 1)
        # Y took it without announcing it back (no echo), and X ignores its own message.
        assert (counted(y, "published"), counted(x, "applied")) == (0, 0)
        assert not y._pending

        # A shorter cooldown for the same key (a replica that saw a smaller Retry-After
        # before the news arrived) changes nothing in Redis and is not announced.
        provider_id = str(record.id)
        target = (provider_id, fingerprint(provider_id, KEY1))
        async with asyncio.timeout(TIMEOUT):
            await y._send({target: (clock.now().timestamp() + 5, RATE_LIMITED)})
        assert counted(y, "published") == 0
        assert ring_x.cooldown_remaining(ring_x.keys[0]) == pytest.approx(RETRY_AFTER)

        # A longer one (a 401 on Y: 60 s) travels the other way.
        ring_y.mark_failed(ring_y.keys[0], 401)

        async def x_lengthened() -> bool:
            return ring_x.cooldown_remaining(ring_x.keys[0]) > RETRY_AFTER + 1

        await poll(x_lengthened, TIMEOUT, "X to apply Y's longer cooldown")
        assert (counted(y, "published"), counted(x, "applied")) == (1, 1)

        # A malformed message is ignored, the subscription stays up.
        redis = aioredis.Redis.from_url(url)
        try:
            async with asyncio.timeout(TIMEOUT):
                await redis.publish(f"{prefix}cooldowns", b"not json")
        finally:
            await redis.aclose()
        ring_x.mark_failed(ring_x.keys[1], 429, retry_after=RETRY_AFTER)

        async def y_still_listens() -> bool:
            return not ring_y.is_usable(ring_y.keys[1])

        await poll(y_still_listens, TIMEOUT, "Y to apply a cooldown after a bad message")
    finally:
        await x.aclose()
        await y.aclose()


def test_a_rebuilt_ring_gets_the_live_cooldowns_by_fingerprint() -> None:
    clock = now_clock()
    record = provider_record("openai", keys=[KEY1, KEY2])
    first = build_snapshot([record], 1, clock=clock)
    current = [first]
    shared = SharedCooldowns("redis://unused", snapshot=lambda: current[0], clock=clock)
    shared.attach(first)
    old = ring_of(first)
    old.mark_failed(old.keys[0], 429, retry_after=RETRY_AFTER)
    # Another replica cooled key 2 down for longer.
    provider_id = str(record.id)
    assert (
        shared.apply(
            provider_id, fingerprint(provider_id, KEY2), clock.now().timestamp() + 50, RATE_LIMITED
        )
        == 1
    )
    # A reload rebuilds the ring with a new key first: the positions move.
    changed = replace(
        provider_record("openai", keys=["sk-shared-cooldown-new-key-0003", KEY1, KEY2]),
        id=record.id,
    )
    second = build_snapshot([changed], 2, previous=first, clock=clock)
    shared.attach(second)
    current[0] = second
    new = ring_of(second)
    assert new is not old
    assert [round(new.cooldown_remaining(k)) for k in new.keys] == [0, RETRY_AFTER, 50]
    # The new ring reports to the sharing too.
    new.mark_failed(new.keys[0], 401)
    assert shared._pending  # queued for the background publisher


def ring_of(snapshot: Any) -> KeyRing:
    (provider,) = snapshot.providers.values()
    assert isinstance(provider, Provider)
    return provider.keys
