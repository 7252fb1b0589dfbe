"""Locks that serialise one kind of writer across processes: transaction-long write
locks, and session-long "one replica at a time" locks for background jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.sql.dml import UpdateBase

__all__ = ["held_session_lock", "take_write_lock"]


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


@asynccontextmanager
async def held_session_lock(engine: AsyncEngine, lock_id: int) -> AsyncIterator[bool]:
    """Try to take a session-level lock on ``lock_id`` for the block; yields whether it
    was taken (never waits: a replica that loses simply skips its turn).

    PostgreSQL: ``pg_try_advisory_lock`` on a connection held for the block, so work done
    on *other* connections (short transactions) stays serialised with other replicas.
    SQLite has no cross-process locks of this kind: True (one gateway owns the file; with
    ``--workers`` the caller picks one worker).
    """
    if engine.dialect.name != "postgresql":
        yield True
        return
    async with engine.connect() as conn:
        taken = bool(await conn.scalar(text("SELECT pg_try_advisory_lock(:id)"), {"id": lock_id}))
        # Never leave the connection inside a transaction while the block runs.
        await conn.commit()
        try:
            yield taken
        finally:
            if taken:
                await conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})
                await conn.commit()
