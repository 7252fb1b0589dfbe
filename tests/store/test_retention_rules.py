"""Which interceptions a prune deletes: started before the cut-off and ended, or without an
end only a day before it (one still in flight keeps its row for its end and usage records)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from aibridge.store.db import session_factory
from aibridge.store.models import Interception
from aibridge.store.retention import UNENDED_GRACE, count_older, prune_older
from tests.cli.records_data import TABLES, rows_for

CUTOFF = datetime(2026, 6, 1, 12, tzinfo=UTC)


async def _insert(engine: AsyncEngine, i: int, started: datetime, *, ended: bool) -> None:
    rows = rows_for(i, started, all_ended=True)
    if not ended:
        rows["interceptions"][0]["ended_at"] = None
    async with engine.begin() as conn:
        for table in TABLES:
            if rows[table.name]:
                await conn.execute(insert(table), rows[table.name])


async def test_unended_interceptions_get_a_days_grace_and_the_dry_run_agrees(
    engine: AsyncEngine,
) -> None:
    hour = timedelta(hours=1)
    cases = {
        # number: (started, ended, deleted by a prune at CUTOFF)
        1: (CUTOFF - hour, True, True),
        2: (CUTOFF - hour, False, False),  # in flight: kept
        3: (CUTOFF - UNENDED_GRACE + hour, False, False),
        4: (CUTOFF - UNENDED_GRACE - hour, False, True),  # its replica never ended it
        5: (CUTOFF + hour, True, False),
        6: (CUTOFF + hour, False, False),
    }
    for i, (started, ended, _) in cases.items():
        await _insert(engine, i, started, ended=ended)
    sessions = session_factory(engine)
    expected = {
        rows_for(i, started)["interceptions"][0]["id"]
        for i, (started, _, gone) in cases.items()
        if gone
    }

    async with sessions() as session:
        assert await count_older(session, CUTOFF) == len(expected) == 2
    result = await prune_older(sessions, CUTOFF, batch_size=1)

    assert result.interceptions == 2
    async with sessions() as session:
        left = set((await session.scalars(select(Interception.id))).all())
    kept = {
        rows_for(i, started)["interceptions"][0]["id"]
        for i, (started, _, gone) in cases.items()
        if not gone
    }
    assert left == kept
    assert not left & expected
    async with sessions() as session:
        assert await count_older(session, CUTOFF) == 0
