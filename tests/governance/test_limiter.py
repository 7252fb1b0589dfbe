"""The limiter over the in-process store, with an injected clock (no sleeps)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from aibridge.clock import FakeClock
from aibridge.governance.limiter import NO_LIMIT_TICKET, Ticket
from aibridge.governance.memory_store import MemoryStore
from aibridge.governance.metrics import LimiterMetrics
from aibridge.limits import Limits

from .helpers import START, budget, demand, make_actor, make_limiter, refusal, ticket


def clock() -> FakeClock:
    return FakeClock(now=START)


async def test_no_limits_is_a_shared_no_op_ticket() -> None:
    limiter = make_limiter(clock())
    result = await limiter.admit(demand(make_actor()))
    assert result is NO_LIMIT_TICKET
    assert dict(result.headers) == {}
    result.add_usage("openai", ("gpt-5",), 1, 2, 3, 4)
    await result.settle()


async def test_unlimited_says_what_admit_would_for_each_actor_object() -> None:
    # The pipeline skips admit() and settle() when unlimited() says so: it must agree
    # with admit, per actor object (a limits change comes with a new one).
    limiter = make_limiter(clock())
    free = make_actor()
    assert limiter.unlimited(free)
    assert await limiter.admit(demand(free)) is NO_LIMIT_TICKET
    limited = make_actor(Limits(requests_per_minute=1))
    assert not limiter.unlimited(limited)
    assert await limiter.admit(demand(limited)) is not NO_LIMIT_TICKET
    assert limiter.unlimited(free)  # the first actor's plan is unchanged
    # Replica-wide settings count too: a concurrency cap applies to every request.
    capped = make_limiter(clock(), max_concurrency=4)
    assert not capped.unlimited(free)


async def test_model_not_allowed_is_403_naming_model_and_patterns() -> None:
    limiter = make_limiter(clock())
    actor = make_actor(Limits(allowed_models=("claude-*",), requests_per_minute=1))
    denied = refusal(await limiter.admit(demand(actor, model="gpt-5")))
    assert (denied.status, denied.error_type) == (403, "model_not_allowed")
    assert denied.retry_after is None
    assert "'gpt-5'" in denied.message and "claude-*" in denied.message
    assert "user alice" in denied.message
    # No counter was touched: the one request per minute is still available.
    ticket(await limiter.admit(demand(actor, model="claude-opus-4")))
    # The key's list must allow it as well.
    both = make_actor(Limits(allowed_models=("*",)), Limits(allowed_models=("gpt-*",)))
    denied = refusal(await limiter.admit(demand(both, model="claude-opus-4")))
    assert "key key-alice" in denied.message
    nameless = refusal(await limiter.admit(demand(both, model="")))
    assert nameless.status == 403 and "names no model" in nameless.message


async def test_request_rate_admits_exactly_the_limit_of_concurrent_requests() -> None:
    fake = clock()
    limiter = make_limiter(fake)
    actor = make_actor(Limits(requests_per_minute=10))
    results = await asyncio.gather(*(limiter.admit(demand(actor)) for _ in range(30)))
    admitted = [r for r in results if isinstance(r, Ticket)]
    refused = [refusal(r) for r in results if not isinstance(r, Ticket)]
    assert (len(admitted), len(refused)) == (10, 20)
    first = refused[0]
    assert (first.status, first.error_type, first.retry_after) == (429, "request_rate_limited", 60)
    assert first.headers["retry-after"] == "60"
    assert first.headers["x-ratelimit-limit-requests"] == "10"
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    assert first.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert "10 requests per minute" in first.message and "resets in 60s" in first.message


async def test_request_window_edges() -> None:
    fake = clock()
    limiter = make_limiter(fake)
    actor = make_actor(Limits(requests_per_minute=2))
    first = ticket(await limiter.admit(demand(actor)))
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    fake.advance(20.5)
    second = ticket(await limiter.admit(demand(actor)))
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert second.headers["x-ratelimit-reset-requests"] == "40s"  # 39.5 rounded up
    fake.advance(39.4)  # 0.1 s before the first leaves the window
    late = refusal(await limiter.admit(demand(actor)))
    assert late.retry_after == 1  # 0.1 s rounded up to a whole second
    fake.advance(0.1)  # exactly 60 s after the first: it has left
    ticket(await limiter.admit(demand(actor)))
    again = refusal(await limiter.admit(demand(actor)))
    assert again.retry_after == 21  # the second leaves at 80.5


async def test_concurrency_slot_freed_on_settle_and_refusal_leaves_nothing() -> None:
    limiter = make_limiter(clock())
    actor = make_actor(Limits(max_concurrent=2, requests_per_minute=3))
    one = ticket(await limiter.admit(demand(actor)))
    ticket(await limiter.admit(demand(actor)))
    busy = refusal(await limiter.admit(demand(actor)))
    assert (busy.error_type, busy.retry_after) == ("concurrency_limited", 1)
    assert "2 requests in flight" in busy.message
    await one.settle()
    await one.settle()  # idempotent: frees one slot, not two
    ticket(await limiter.admit(demand(actor)))
    # The refused request was not counted: 3 admitted = the request limit.
    limited = refusal(await limiter.admit(demand(actor)))
    assert limited.error_type == "concurrency_limited"


async def test_websocket_turn_holds_no_slot() -> None:
    limiter = make_limiter(clock(), max_concurrency=1)
    actor = make_actor(Limits(max_concurrent=1))
    ticket(await limiter.admit(demand(actor)))
    ticket(await limiter.admit(demand(actor, hold_slot=False)))


async def test_replica_max_concurrency() -> None:
    limiter = make_limiter(clock(), max_concurrency=2)
    a = ticket(await limiter.admit(demand(make_actor(name="a"))))
    ticket(await limiter.admit(demand(make_actor(name="b"))))
    full = refusal(await limiter.admit(demand(make_actor(name="c"))))
    assert (full.error_type, full.status, full.headers["retry-after"]) == (
        "concurrency_limited",
        429,
        "1",
    )
    assert "max_concurrency" in full.message
    a.release_nowait()
    await asyncio.wait_for(asyncio.gather(*limiter._tasks), 5)
    ticket(await limiter.admit(demand(make_actor(name="c"))))


async def test_token_rate_settles_below_and_above_the_estimate() -> None:
    fake = clock()
    limiter = make_limiter(fake)
    # Estimate: 400 bytes -> 100 prompt tokens, + 100 output = 200.
    actor = make_actor(Limits(tokens_per_minute=500))
    held = [ticket(await limiter.admit(demand(actor))) for _ in range(3)]
    assert held[0].headers["x-ratelimit-remaining-tokens"] == "300"
    assert held[2].headers["x-ratelimit-remaining-tokens"] == "0"  # 400 + 200 > 500
    # 600 reserved >= 500: refused while they are in flight.
    full = refusal(await limiter.admit(demand(actor)))
    assert full.error_type == "token_rate_limited"
    assert full.retry_after == 60  # nothing settled yet: a whole window
    assert "600 used or reserved" in full.message
    # Settle below the estimate: 10 + 5 cache writes + 5 out = 20 (cache reads ignored).
    for t in held:
        t.add_usage("openai", ("gpt-5",), 10, 5, 1000, 5)
        await t.settle()
    fake.advance(1)
    settled = ticket(await limiter.admit(demand(actor)))
    assert settled.headers["x-ratelimit-remaining-tokens"] == str(500 - 60 - 200)
    # Settle above the estimate: two upstream calls of 300 tokens each.
    settled.add_usage("openai", ("gpt-5",), 300, 0, 0, 0)
    settled.add_usage("openai", ("gpt-5",), 0, 300, 0, 0)
    await settled.settle()
    over = refusal(await limiter.admit(demand(actor)))
    # 660 settled; dropping the bucket of 60 (at second 0) still leaves 600: the reset
    # is when the 600-token bucket (second 1) leaves the window, 61 s after it started;
    # Retry-After says at most the window (60 s, what the SDKs honour).
    assert over.retry_after == 60
    fake.advance(60)
    still = refusal(await limiter.admit(demand(actor)))
    assert still.retry_after == 1
    fake.advance(1)
    ticket(await limiter.admit(demand(actor)))


async def test_crashed_replicas_reservations_expire_after_the_lease() -> None:
    fake = clock()
    shared = MemoryStore()
    crashed = make_limiter(fake, store=shared, lease_seconds=30.0, replica_id="a")
    alive = make_limiter(fake, store=shared, lease_seconds=30.0, replica_id="b")
    actor = make_actor(Limits(max_concurrent=1, tokens_per_minute=300))
    ticket(await crashed.admit(demand(actor)))  # never settled: the replica "dies"
    held = ticket(await alive.admit(demand(make_actor(Limits(max_concurrent=1), name="bob"))))
    refusal(await alive.admit(demand(actor)))
    fake.advance(29.9)
    await alive.refresh_leases()  # keeps bob's slot, not the dead replica's
    refusal(await alive.admit(demand(actor)))
    fake.advance(0.1)
    ticket(await alive.admit(demand(actor)))
    fake.advance(29.8)
    # Bob's lease was refreshed at 29.9 until 59.9: still held at 59.8, gone at 59.9.
    bob = make_actor(Limits(max_concurrent=1), name="bob")
    refusal(await alive.admit(demand(bob)))
    fake.advance(0.1)
    ticket(await alive.admit(demand(bob)))
    await held.settle()


async def test_budget_cross_refuse_and_new_period() -> None:
    fake = clock()
    registry = CollectorRegistry()
    limiter = make_limiter(fake, metrics=LimiterMetrics(registry))
    # gpt-5: 10^6 pico-USD per input token, 2 * 10^6 per output token.
    actor = make_actor(Limits(budget=budget("0.001", "day")))
    first = ticket(await limiter.admit(demand(actor)))  # reserves 100 + 2*100 = 3 * 10^8
    first.add_usage("openai", ("gpt-5", "gpt-5"), 500, 300, 0, 0)  # 1.1 * 10^9: crosses
    await first.settle()
    over = refusal(await limiter.admit(demand(actor)))
    assert (over.error_type, over.status) == ("budget_exceeded", 429)
    assert over.retry_after == 12 * 3600  # noon to midnight UTC
    assert "resets at 2025-03-11T00:00:00+00:00" in over.message
    assert "$0.0011" in over.message and "$0.001 daily" in over.message
    assert (
        registry.get_sample_value("aibridge_limit_refusals_total", {"reason": "budget_exceeded"})
        == 1
    )
    assert registry.get_sample_value("aibridge_budget_soft_exceeded_total", {"scope": "user"}) == 1
    assert (
        registry.get_sample_value("aibridge_budget_remaining_ratio", {"subject": "user alice"}) == 0
    )
    [status] = limiter.budget_status(actor)
    assert (status.scope, str(status.spent_usd), status.soft_exceeded) == ("user", "0.0011", True)
    fake.advance(12 * 3600)  # the next day
    ticket(await limiter.admit(demand(actor)))


async def test_budget_in_flight_reservations_block_the_overshoot() -> None:
    limiter = make_limiter(clock())
    # Each request reserves 3 * 10^8 pico-USD; the budget holds 7 * 10^8.
    actor = make_actor(key=Limits(budget=budget("0.0007", "month")))
    ticket(await limiter.admit(demand(actor)))
    ticket(await limiter.admit(demand(actor)))
    ticket(await limiter.admit(demand(actor)))  # 6 * 10^8 < 7 * 10^8: admitted
    over = refusal(await limiter.admit(demand(actor)))
    assert "key key-alice" in over.message and "reserved by requests in flight" in over.message
    assert "2025-04-01T00:00:00+00:00" in over.message


async def test_global_budget_and_unpriced_models() -> None:
    limiter = make_limiter(clock(), global_budget=budget("0.0005"))
    actor = make_actor()
    t = ticket(await limiter.admit(demand(actor, model="free-model")))
    t.add_usage("openai", ("free-model",), 10**6, 10**6, 0, 0)
    await t.settle()
    ticket(await limiter.admit(demand(actor)))  # unpriced usage costs nothing
    spender = ticket(await limiter.admit(demand(actor)))
    spender.add_usage("openai", ("gpt-5",), 1000, 0, 0, 0)
    await spender.settle()
    over = refusal(await limiter.admit(demand(make_actor(name="bob"))))
    assert "the gateway (global budget)" in over.message
