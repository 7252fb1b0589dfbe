"""Transaction-long write locks that serialise one kind of writer across processes."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import UpdateBase

__all__ = ["take_write_lock"]


async def take_write_lock(session: AsyncSession, lock_id: int, noop_write: UpdateBase) -> None:
    """Serialise with every other writer that takes the same lock, until the transaction ends.

    PostgreSQL: a transaction-scoped advisory lock on ``lock_id`` (so replicas wait too).
    SQLite: ``noop_write``, a write statement that matches nothing, which still makes this
    the writing transaction *before* anything is read, so the reads that follow cannot be
    made stale by another process (and no "database is locked" upgrade failure).
    """
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
    else:
        await conn.execute(noop_write)
