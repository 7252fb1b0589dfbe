"""The durable side of budgets: each period's spend rebuilt from the recorded costs.

The recorded interceptions are the truth of what was spent; the limiter's counters only
add what settled since the last rebuild (spend that is counted but not yet recorded).
So the limiter raises its counters to at least these values and never lowers them: a
Redis flush or restart, or a replica restart, cannot reset anyone's budget.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.governance.periods import period_bounds
from aibridge.limits import BUDGET_PERIODS, BudgetPeriod
from aibridge.store.spend import spend_by_key, spend_by_user, spend_pusd

GLOBAL_SUBJECT = "g"


@functools.lru_cache(maxsize=65536)
def user_subject(user_id: uuid.UUID) -> str:
    """The counters' name for a user (cached: formatting a UUID costs a microsecond)."""
    return f"u:{user_id}"


@functools.lru_cache(maxsize=65536)
def key_subject(key_id: str) -> str:
    """The counters' name for a gateway key."""
    return f"k:{key_id}"


SpendKey = tuple[str, BudgetPeriod, int]
"""(subject, period, period start in epoch seconds)."""


async def recorded_spend(
    sessions: async_sessionmaker[AsyncSession],
    now: datetime,
    tz: ZoneInfo,
    periods: Iterable[BudgetPeriod] = BUDGET_PERIODS,
) -> dict[SpendKey, int]:
    """Pico-USD recorded per user, key and for everyone in the current ``periods``
    (three grouped queries per period; subjects that spent nothing are absent)."""
    spend: dict[SpendKey, int] = {}
    async with sessions() as session:
        for period in periods:
            start, end = period_bounds(period, now, tz)
            epoch = int(start.timestamp())
            for user_id, pusd in (await spend_by_user(session, start, end)).items():
                spend[(user_subject(user_id), period, epoch)] = pusd
            for key_id, pusd in (await spend_by_key(session, start, end)).items():
                spend[(key_subject(key_id), period, epoch)] = pusd
            total = await spend_pusd(session, start, end)
            if total:
                spend[(GLOBAL_SUBJECT, period, epoch)] = total
    return spend
