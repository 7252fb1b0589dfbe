"""Recorded costs written straight to the database, for tests of budgets and spend."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.store.models import Interception, TokenUsage


async def record_cost(
    sessions: async_sessionmaker[AsyncSession],
    user_id: uuid.UUID,
    started_at: datetime,
    *costs_pusd: int | None,
    key_id: str | None = None,
) -> uuid.UUID:
    """One finished interception of ``user_id`` (through ``key_id``) started at
    ``started_at``, with one token-usage row per cost in ``costs_pusd`` (pico-USD; None
    = an unpriced call), as the recorder would write them; returns its id."""
    interception_id = uuid.uuid4()
    async with sessions() as session, session.begin():
        session.add(
            Interception(
                id=interception_id,
                initiator_id=user_id,
                api_key_id=key_id,
                provider="openai",
                provider_name="openai",
                model="gpt-test",
                started_at=started_at,
                ended_at=started_at,
            )
        )
        for cost in costs_pusd:
            session.add(
                TokenUsage(
                    id=uuid.uuid4(),
                    interception_id=interception_id,
                    input_tokens=10,
                    output_tokens=5,
                    cost_pusd=cost,
                )
            )
    return interception_id
