"""Micro-benchmark of the limiter: admit + add_usage + settle per request, sequentially,
with no limits, with every limit on the in-process store, and with every limit on Redis.

    .venv/bin/python -m bench.limiter [--requests 20000] [--redis redis://127.0.0.1:6379/0]

Prints microseconds per request (the Redis figure is two round trips: one admit, one
settle). Redis keys go under a unique prefix that is deleted afterwards. Without
``--redis`` (or AIBRIDGE_TEST_REDIS_URL) the Redis case is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from decimal import Decimal

from aibridge.actor import Actor
from aibridge.governance.limiter import Demand, Limiter, LimiterConfig, Ticket
from aibridge.governance.limitstore import LimitStore
from aibridge.governance.prices import Price, PriceBook, PriceTable
from aibridge.limits import NO_LIMITS, Budget, Limits

PRICES = PriceBook(
    PriceTable([Price("openai", "gpt-5", 1_250_000, 10_000_000, 125_000, 0, "2025-01-01")])
)
EVERY_LIMIT = Limits(
    requests_per_minute=1_000_000_000,
    tokens_per_minute=10**15,
    max_concurrent=1000,
    allowed_models=("gpt-*", "claude-*"),
    budget=Budget(Decimal(1_000_000), "month"),
)


def actor(limits: Limits) -> Actor:
    return Actor(uuid.uuid4(), "bench", "member", "bench-key", limits, NO_LIMITS)


async def run(limiter: Limiter, limits: Limits, requests: int) -> float:
    demand = Demand(actor(limits), "openai", "openai", "gpt-5", 2000, 512)
    for _ in range(min(1000, requests)):  # warm up caches and the connection pool
        await one(limiter, demand)
    started = time.perf_counter()
    for _ in range(requests):
        await one(limiter, demand)
    return (time.perf_counter() - started) / requests * 1e6


async def one(limiter: Limiter, demand: Demand) -> None:
    ticket = await limiter.admit(demand)
    assert isinstance(ticket, Ticket), ticket
    ticket.add_usage("openai", ("gpt-5",), 500, 100, 0, 0)
    await ticket.settle()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--redis", default=os.environ.get("AIBRIDGE_TEST_REDIS_URL", ""))
    args = parser.parse_args()
    config = LimiterConfig(max_concurrency=0)
    print(f"requests per case: {args.requests} (sequential admit + add_usage + settle)")
    plain = await run(Limiter(config, prices=PRICES), NO_LIMITS, args.requests)
    print(f"no limits:   {plain:8.2f} µs/request")
    memory = await run(Limiter(config, prices=PRICES), EVERY_LIMIT, args.requests)
    print(f"in-process:  {memory:8.2f} µs/request (every limit)")
    if not args.redis:
        print("redis:       skipped (no --redis and no AIBRIDGE_TEST_REDIS_URL)")
        return
    from aibridge.governance.redis_store import RedisStore
    from aibridge.testing.redis import delete_prefix, unique_prefix

    prefix = unique_prefix()
    store: LimitStore = RedisStore.from_url(args.redis, prefix)
    limiter = Limiter(config, prices=PRICES, store=store)
    try:
        shared = await run(limiter, EVERY_LIMIT, args.requests)
        print(f"redis:       {shared:8.2f} µs/request (every limit, 2 round trips)")
        if limiter.fallback:
            print("WARNING: the limiter fell back to in-process counters during the run")
    finally:
        await store.aclose()
        await delete_prefix(args.redis, prefix)


if __name__ == "__main__":
    asyncio.run(main())
