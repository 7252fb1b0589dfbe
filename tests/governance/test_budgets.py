"""Budgets rebuilt from the records, soft thresholds, defaults, metrics and lifecycle."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from aibridge.clock import FakeClock
from aibridge.governance.budgets import GLOBAL_SUBJECT, key_subject, recorded_spend, user_subject
from aibridge.governance.limiter import Limiter
from aibridge.governance.metrics import LimiterMetrics
from aibridge.governance.periods import time_zone
from aibridge.limits import Limits
from aibridge.store.db import session_factory
from aibridge.store.models import Interception, TokenUsage
from aibridge.testing.databases import migrated_engine, sqlite_file_url

from .helpers import START, budget, demand, make_actor, make_limiter, refusal, ticket


async def _record(sessions: object, user: uuid.UUID, key: str, at: object, pusd: int) -> None:
    async with sessions() as session, session.begin():  # type: ignore[operator]
        ix = Interception(
            id=uuid.uuid4(),
            initiator_id=user,
            api_key_id=key,
            provider="openai",
            provider_name="openai",
            model="gpt-5",
            started_at=at,
        )
        session.add(ix)
        await session.flush()
        session.add(TokenUsage(id=uuid.uuid4(), interception_id=ix.id, cost_pusd=pusd))


async def test_recorded_spend_per_period_user_key_and_global(tmp_path: Path) -> None:
    alice, bob = make_actor(name="alice"), make_actor(name="bob")
    async with migrated_engine(sqlite_file_url(tmp_path)) as engine:
        sessions = session_factory(engine)
        await _record(sessions, alice.user_id, alice.key_id, START, 5)
        await _record(sessions, alice.user_id, alice.key_id, START - timedelta(days=1), 7)
        await _record(sessions, bob.user_id, bob.key_id, START, 11)
        await _record(sessions, bob.user_id, bob.key_id, START - timedelta(days=40), 1000)
        spend = await recorded_spend(sessions, START, time_zone("UTC"))
    day = int(START.replace(hour=0).timestamp())
    month = int(START.replace(day=1, hour=0).timestamp())
    assert spend[(user_subject(alice.user_id), "day", day)] == 5
    assert spend[(user_subject(alice.user_id), "month", month)] == 12
    assert spend[(key_subject(bob.key_id), "day", day)] == 11
    assert spend[(GLOBAL_SUBJECT, "month", month)] == 23
    assert spend[(GLOBAL_SUBJECT, "day", day)] == 16


async def test_reconcile_raises_but_never_lowers(tmp_path: Path) -> None:
    fake = FakeClock(now=START)
    actor = make_actor(Limits(budget=budget("0.001", "day")))
    async with migrated_engine(sqlite_file_url(tmp_path)) as engine:
        sessions = session_factory(engine)
        base = make_limiter(fake)
        limiter = Limiter(base.config, prices=base.prices, clock=fake, sessions=sessions)
        await limiter.start()
        try:
            spent = ticket(await limiter.admit(demand(actor)))
            spent.add_usage("openai", ("gpt-5",), 400, 0, 0, 0)  # 4 * 10^8, not recorded
            await spent.settle()
            await _record(sessions, actor.user_id, actor.key_id, START, 3 * 10**8)
            await limiter.reconcile()
            # The counter (4) is above the records (3): kept.
            assert str(limiter.budget_status(actor)[0].spent_usd) == "0.0004"
            await _record(sessions, actor.user_id, actor.key_id, START, 5 * 10**8)
            await limiter.reconcile()
            # Another replica's spend reached the records (8): raised.
            assert str(limiter.budget_status(actor)[0].spent_usd) == "0.0008"
            ticket(await limiter.admit(demand(actor)))  # 8 < 10
            assert refusal(await limiter.admit(demand(actor))).error_type == "budget_exceeded"
        finally:
            await limiter.aclose()


async def test_soft_threshold_warns_once_per_period(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeClock(now=START)
    registry = CollectorRegistry()
    limiter = make_limiter(fake, metrics=LimiterMetrics(registry), soft_fraction=0.5)
    actor = make_actor(key=Limits(budget=budget("0.01", "day")))
    caplog.set_level(logging.WARNING, "aibridge.governance.limiter")
    for _ in range(3):
        t = ticket(await limiter.admit(demand(actor)))
        t.add_usage("openai", ("gpt-5",), 2000, 0, 0, 0)  # 2 * 10^9 each: 40 % of it
        await t.settle()
    warnings = [r for r in caplog.records if "soft threshold" in r.getMessage()]
    assert len(warnings) == 1 and "key key-alice" in warnings[0].getMessage()
    assert registry.get_sample_value("aibridge_budget_soft_exceeded_total", {"scope": "key"}) == 1
    ratio = registry.get_sample_value(
        "aibridge_budget_remaining_ratio", {"subject": "key key-alice"}
    )
    assert ratio == pytest.approx(0.4)
    fake.advance(86400)  # a new day: nothing spent, nothing warned yet
    t = ticket(await limiter.admit(demand(actor)))
    t.add_usage("openai", ("gpt-5",), 6000, 0, 0, 0)
    await t.settle()
    assert registry.get_sample_value("aibridge_budget_soft_exceeded_total", {"scope": "key"}) == 2
    assert limiter.budget_status(actor)[0].soft_exceeded


async def test_defaults_apply_to_users_and_the_stricter_key_wins() -> None:
    fake = FakeClock(now=START)
    limiter = make_limiter(fake, defaults=Limits(requests_per_minute=3))
    plain = make_actor(name="plain")
    for _ in range(3):
        ticket(await limiter.admit(demand(plain)))
    assert refusal(await limiter.admit(demand(plain))).error_type == "request_rate_limited"
    # The user raises its own limit; the key is stricter and wins.
    strict = make_actor(Limits(requests_per_minute=100), Limits(requests_per_minute=1))
    ticket(await limiter.admit(demand(strict)))
    denied = refusal(await limiter.admit(demand(strict)))
    assert "key key-alice may send 1 requests" in denied.message
    assert denied.headers["x-ratelimit-limit-requests"] == "1"


async def test_metrics_count_refusals_and_admission_latency() -> None:
    registry = CollectorRegistry()
    limiter = make_limiter(FakeClock(now=START), metrics=LimiterMetrics(registry))
    actor = make_actor(Limits(max_concurrent=1, allowed_models=("gpt-*",)))
    ticket(await limiter.admit(demand(actor)))
    refusal(await limiter.admit(demand(actor)))
    refusal(await limiter.admit(demand(actor, model="claude-x")))
    assert registry.get_sample_value("aibridge_limiter_duration_seconds_count") == 3
    for reason in ("concurrency_limited", "model_not_allowed"):
        assert registry.get_sample_value("aibridge_limit_refusals_total", {"reason": reason}) == 1
    assert registry.get_sample_value("aibridge_limiter_fallback") == 0


async def test_start_and_aclose_run_one_maintenance_task() -> None:
    limiter = make_limiter(FakeClock(now=START))
    await limiter.start()
    await limiter.start()  # idempotent: still one task
    task = limiter._maintainer
    assert task is not None and not task.done()
    await limiter.aclose()
    assert task.done() and limiter._maintainer is None
