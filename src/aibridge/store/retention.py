"""Deleting old records: interceptions started before a cut-off, with their children.

Deletion runs in bounded batches, each its own short transaction, so neither SQLite's
single writer nor PostgreSQL's row locks are held for long while requests keep being
recorded. Rows are picked oldest first through the ``(started_at, id)`` index.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.store.models import Interception, ModelThought, TokenUsage, ToolUsage, UserPrompt

CHILD_TABLES: tuple[Any, ...] = (TokenUsage, UserPrompt, ToolUsage, ModelThought)
"""The tables whose rows belong to one interception (``interception_id``)."""
RECORD_TABLE_NAMES = ("interceptions", *(t.__tablename__ for t in CHILD_TABLES))
"""Every recording table, the parent first."""
DEFAULT_BATCH_SIZE = 500
"""Interceptions deleted per transaction: small enough to keep each write short."""
RETENTION_LOCK_ID = 0x41_49_42_54  # "AIBT": one replica runs the retention job at a time.
UNENDED_GRACE = timedelta(days=1)
"""How much older than the cut-off an interception with no end must be to be deleted: one
still in flight (a prune ``--older-than 0m``) keeps its row, so its end and usage records
still find it; one whose replica died and never ended it goes a day later than the rest."""


@dataclass(slots=True)
class PruneResult:
    """Rows deleted per table (``interceptions`` first)."""

    deleted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECORD_TABLE_NAMES, 0))

    @property
    def interceptions(self) -> int:
        """Interceptions deleted."""
        return self.deleted["interceptions"]

    def add(self, table: str, count: int) -> None:
        """Count ``count`` more rows deleted from ``table``."""
        self.deleted[table] += count


def _prunable(before: datetime) -> ColumnElement[bool]:
    """Started before ``before`` and ended, or started :data:`UNENDED_GRACE` earlier."""
    return (Interception.started_at < before) & or_(
        Interception.ended_at.is_not(None), Interception.started_at < before - UNENDED_GRACE
    )


async def count_older(session: AsyncSession, before: datetime) -> int:
    """Interceptions a prune with cut-off ``before`` would delete."""
    stmt = select(func.count()).select_from(Interception).where(_prunable(before))
    return int(await session.scalar(stmt) or 0)


async def oldest_started_at(session: AsyncSession) -> datetime | None:
    """When the oldest interception kept started; None when there is none."""
    return await session.scalar(select(func.min(Interception.started_at)))


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


async def delete_batch(
    session: AsyncSession, before: datetime, batch_size: int = DEFAULT_BATCH_SIZE
) -> PruneResult:
    """Delete up to ``batch_size`` of the oldest interceptions started before ``before``
    (an unended one only :data:`UNENDED_GRACE` before it), with their children, inside the
    caller's transaction."""
    ids: Sequence[Any] = (
        await session.scalars(
            select(Interception.id)
            .where(_prunable(before))
            .order_by(Interception.started_at, Interception.id)
            .limit(batch_size)
        )
    ).all()
    result = PruneResult()
    if not ids:
        return result
    # Children first: a reader never sees a child whose interception is gone for good.
    for table in CHILD_TABLES:
        done = await session.execute(delete(table).where(table.interception_id.in_(ids)))
        result.add(table.__tablename__, _rowcount(done))
    done = await session.execute(delete(Interception).where(Interception.id.in_(ids)))
    result.add("interceptions", _rowcount(done))
    return result


async def prune_older(
    sessions: async_sessionmaker[AsyncSession],
    before: datetime,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[PruneResult], Awaitable[None] | None] | None = None,
) -> PruneResult:
    """Delete every interception started before ``before`` (an unended one only
    :data:`UNENDED_GRACE` before it) and its children, one batch per transaction;
    ``on_batch`` sees each batch's counts (progress, metrics)."""
    total = PruneResult()
    while True:
        async with sessions() as session, session.begin():
            batch = await delete_batch(session, before, batch_size)
        for table, count in batch.deleted.items():
            total.add(table, count)
        if on_batch is not None and batch.interceptions:
            maybe = on_batch(batch)
            if maybe is not None:
                await maybe
        if batch.interceptions < batch_size:
            return total


__all__ = [
    "CHILD_TABLES",
    "DEFAULT_BATCH_SIZE",
    "RECORD_TABLE_NAMES",
    "RETENTION_LOCK_ID",
    "UNENDED_GRACE",
    "PruneResult",
    "count_older",
    "delete_batch",
    "oldest_started_at",
    "prune_older",
]
