"""Recorded spend per period, user and key (SQLite file and PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from aibridge.store.db import session_factory
from aibridge.store.spend import spend_by_key, spend_by_user, spend_pusd
from aibridge.testing.spend import record_cost

START = datetime(2025, 3, 1, tzinfo=UTC)
END = datetime(2025, 4, 1, tzinfo=UTC)
TICK = timedelta(microseconds=1)


async def test_spend_sums_priced_calls_in_the_half_open_period(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    bob, carol = uuid.uuid4(), uuid.uuid4()
    # On the start (counted), just before it and on the end (not counted).
    await record_cost(sessions, bob, START, 100, 20, key_id="k1")
    await record_cost(sessions, bob, START - TICK, 1_000, key_id="k1")
    await record_cost(sessions, bob, END, 10_000, key_id="k1")
    await record_cost(sessions, bob, END - TICK, 3, key_id="k2")
    # Unpriced calls (NULL cost) count zero, alone or next to priced ones.
    await record_cost(sessions, bob, START + timedelta(days=1), None, key_id="k2")
    await record_cost(sessions, bob, START + timedelta(days=2), None, 7, key_id="k2")
    # Another user, and a call without a key (e.g. recorded before keys were tracked).
    await record_cost(sessions, carol, START + timedelta(days=3), 5_000_000_000_000)
    async with sessions() as s:
        assert await spend_pusd(s, START, END, user_id=bob) == 130
        assert await spend_pusd(s, START, END, key_id="k1") == 120
        assert await spend_pusd(s, START, END, key_id="k2") == 10
        assert await spend_pusd(s, START, END, user_id=bob, key_id="k2") == 10
        assert await spend_pusd(s, START, END, user_id=carol, key_id="k1") == 0
        assert await spend_pusd(s, START, END) == 5_000_000_000_130
        assert await spend_pusd(s, END, END + timedelta(days=1), user_id=bob) == 10_000
        assert await spend_pusd(s, START, END, user_id=uuid.uuid4()) == 0
        assert await spend_by_user(s, START, END) == {bob: 130, carol: 5_000_000_000_000}
        assert await spend_by_key(s, START, END) == {"k1": 120, "k2": 10}


async def test_an_interception_without_usage_or_with_only_unpriced_usage_is_zero(
    engine: AsyncEngine,
) -> None:
    sessions = session_factory(engine)
    bob = uuid.uuid4()
    await record_cost(sessions, bob, START, key_id="k1")
    await record_cost(sessions, bob, START, None, None, key_id="k1")
    async with sessions() as s:
        assert await spend_pusd(s, START, END, user_id=bob) == 0
        assert await spend_by_user(s, START, END) == {bob: 0}
        assert await spend_by_key(s, START, END) == {"k1": 0}


async def test_large_sums_stay_exact(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    bob = uuid.uuid4()
    big = 9 * 10**15  # 9,000 USD in pico-USD: beyond a float's exact integers when summed
    for _ in range(3):
        await record_cost(sessions, bob, START, big, 1)
    async with sessions() as s:
        assert await spend_pusd(s, START, END, user_id=bob) == 3 * big + 3
