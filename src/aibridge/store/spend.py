"""What was spent since a point in time, from the recorded costs (the durable truth of
every budget: a limiter's counters are rebuilt from here after a restart or a flush)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aibridge.store.models import Interception, TokenUsage


async def spend_pusd(
    session: AsyncSession,
    start: datetime,
    end: datetime,
    *,
    user_id: uuid.UUID | None = None,
    key_id: str | None = None,
) -> int:
    """Pico-USD recorded for interceptions started in ``[start, end)``, of one user, one
    key, or everyone (neither given). Unpriced calls count zero."""
    stmt = (
        select(func.coalesce(func.sum(TokenUsage.cost_pusd), 0))
        .select_from(Interception)
        .join(TokenUsage, TokenUsage.interception_id == Interception.id)
        .where(Interception.started_at >= start, Interception.started_at < end)
    )
    if user_id is not None:
        stmt = stmt.where(Interception.initiator_id == user_id)
    if key_id is not None:
        stmt = stmt.where(Interception.api_key_id == key_id)
    return int((await session.execute(stmt)).scalar_one() or 0)


async def spend_by_user(
    session: AsyncSession, start: datetime, end: datetime
) -> dict[uuid.UUID, int]:
    """Pico-USD per user for interceptions started in ``[start, end)`` (users who spent)."""
    stmt = (
        select(Interception.initiator_id, func.coalesce(func.sum(TokenUsage.cost_pusd), 0))
        .select_from(Interception)
        .join(TokenUsage, TokenUsage.interception_id == Interception.id)
        .where(Interception.started_at >= start, Interception.started_at < end)
        .group_by(Interception.initiator_id)
    )
    return {row[0]: int(row[1] or 0) for row in await session.execute(stmt)}


async def spend_by_key(session: AsyncSession, start: datetime, end: datetime) -> dict[str, int]:
    """Pico-USD per gateway key for interceptions started in ``[start, end)``."""
    stmt = (
        select(Interception.api_key_id, func.coalesce(func.sum(TokenUsage.cost_pusd), 0))
        .select_from(Interception)
        .join(TokenUsage, TokenUsage.interception_id == Interception.id)
        .where(
            Interception.started_at >= start,
            Interception.started_at < end,
            Interception.api_key_id.is_not(None),
        )
        .group_by(Interception.api_key_id)
    )
    return {str(row[0]): int(row[1] or 0) for row in await session.execute(stmt)}
