"""Micro-benchmark of the limiter: admit + add_usage + settle per request, sequentially.

    .venv/bin/python -m bench.limiter [--requests 5000] [--repeat 15]
        [--redis redis://127.0.0.1:6379/0] [--profile CASE]

Cases (each run ``--repeat`` times, the order rotated so drift hits every case alike):

- ``none``: no limit anywhere (the shared no-op ticket);
- ``rpm``: the in-process store, the user's ``requests_per_minute`` only;
- ``every``: the in-process store, every limit on the user *and* on the key
  (``requests_per_minute``, ``tokens_per_minute``, ``max_concurrent``,
  ``allowed_models``, a monthly budget) plus a global budget and the replica's
  ``max_concurrency``: 11 counter checks and two model checks per request;
- ``redis``: ``every`` on Redis (skipped without ``--redis`` or AIBRIDGE_TEST_REDIS_URL).

Prints the minimum and the median of the repetitions (many short runs; the minimum is
the figure to compare, as on a shared VM other processes and steal time only ever add),
in CPU µs per request (this process's CPU time: what the gateway's event loop pays) and
wall µs per request, with the load average before and after. The Redis case also
counts the commands sent per request (round trips: admit and settle are one ``EVALSHA``
each). Redis keys go under a unique prefix that is deleted afterwards. ``--profile CASE``
prints a cProfile of one case instead.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

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
RPM_ONLY = Limits(requests_per_minute=1_000_000_000)
EVERY_CONFIG = LimiterConfig(
    max_concurrency=10_000, global_budget=Budget(Decimal(1_000_000_000), "month")
)
PLAIN_CONFIG = LimiterConfig()

Run = Callable[[], Awaitable[None]]


def demand(user: Limits, key: Limits) -> Demand:
    """A chat-sized request (2 kB body, max_tokens 512) of a fresh actor."""
    actor = Actor(uuid.uuid4(), "bench", "member", "bench-key", user, key)
    return Demand(actor, "openai", "openai", "gpt-5", 2000, 512)


def one_request(limiter: Limiter, request: Demand) -> Run:
    """One request's limiter work, as the interception does it."""

    async def run() -> None:
        ticket = await limiter.admit(request)
        assert isinstance(ticket, Ticket), ticket
        ticket.add_usage("openai", ("gpt-5",), 500, 100, 0, 0)
        await ticket.settle()

    return run


async def measure(run: Run, requests: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per request over ``requests`` sequential requests."""
    cpu = time.process_time()
    wall = time.perf_counter()
    for _ in range(requests):
        await run()
    return (
        (time.process_time() - cpu) / requests * 1e6,
        (time.perf_counter() - wall) / requests * 1e6,
    )


def load() -> str:
    """The 1-minute load average (the machine is shared: every number carries it)."""
    return f"{os.getloadavg()[0]:.2f}"


class CommandCounter:
    """Counts the commands a Redis client sends (each one a round trip here: the store
    never pipelines more than one command)."""

    def __init__(self, client: Any) -> None:
        self.count = 0
        original = client.execute_command

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await original(*args, **kwargs)

        client.execute_command = counted


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--redis", default=os.environ.get("AIBRIDGE_TEST_REDIS_URL", ""))
    parser.add_argument("--profile", choices=("none", "rpm", "every", "redis"))
    args = parser.parse_args()

    cases: dict[str, Run] = {
        "none": one_request(Limiter(PLAIN_CONFIG, prices=PRICES), demand(NO_LIMITS, NO_LIMITS)),
        "rpm": one_request(Limiter(PLAIN_CONFIG, prices=PRICES), demand(RPM_ONLY, NO_LIMITS)),
        "every": one_request(
            Limiter(EVERY_CONFIG, prices=PRICES), demand(EVERY_LIMIT, EVERY_LIMIT)
        ),
    }
    cleanup: list[Callable[[], Awaitable[None]]] = []
    counter: CommandCounter | None = None
    shared: Limiter | None = None
    if args.redis:
        from aibridge.governance.redis_store import RedisStore
        from aibridge.testing.redis import delete_prefix, unique_prefix

        prefix = unique_prefix()
        redis_store = RedisStore.from_url(args.redis, prefix)
        store: LimitStore = redis_store
        counter = CommandCounter(redis_store.client)
        shared = Limiter(EVERY_CONFIG, prices=PRICES, store=store)
        cases["redis"] = one_request(shared, demand(EVERY_LIMIT, EVERY_LIMIT))
        cleanup.append(store.aclose)
        cleanup.append(lambda: delete_prefix(args.redis, prefix))
    try:
        for run in cases.values():  # warm caches, the script cache and the pool
            for _ in range(min(1000, args.requests)):
                await run()
        if args.profile:
            await profile(cases[args.profile], args.requests)
            return
        await compare(cases, args.requests, args.repeat, counter)
        if shared is not None and shared.fallback:
            print("WARNING: the limiter fell back to in-process counters during the run")
    finally:
        for step in cleanup:
            await step()


async def profile(run: Run, requests: int) -> None:
    """cProfile of ``requests`` runs, the 25 costliest functions by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        await run()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


async def compare(
    cases: dict[str, Run], requests: int, repeat: int, counter: CommandCounter | None
) -> None:
    """Every case ``repeat`` times, rotated; median and minimum per case."""
    before = load()
    names = list(cases)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    commands = 0
    for rep in range(repeat):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            if name == "redis" and counter is not None:
                counter.count = 0
            results[name].append(await measure(cases[name], requests))
            if name == "redis" and counter is not None:
                commands = counter.count
    print(
        f"{requests} sequential requests per run (admit + add_usage + settle), {repeat} runs "
        f"per case; load average {before} -> {load()}"
    )
    print(f"{'case':8} {'CPU µs min':>11} {'CPU µs median':>14} {'wall µs min':>12}")
    for name in names:
        cpu = [r[0] for r in results[name]]
        wall = [r[1] for r in results[name]]
        print(f"{name:8} {min(cpu):11.2f} {statistics.median(cpu):14.2f} {min(wall):12.2f}")
    if counter is not None:
        print(f"redis commands per request: {commands / requests:.2f} (admit + settle)")


if __name__ == "__main__":
    asyncio.run(main())
