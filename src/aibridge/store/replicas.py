"""The ``replicas`` table: which provider configuration version each gateway process applied.

Every replica upserts its own row at start, after each provider reload and on each
reconcile tick (:class:`ReplicaHeartbeat`), never per request. The same write deletes rows
unseen for :data:`RETENTION`, so replicas that went away do not pile up. The providers
status API lists the rows (:func:`list_replicas`).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.clock import SYSTEM_CLOCK, Clock
from aibridge.store.models import Replica

log = logging.getLogger(__name__)

RETENTION = timedelta(days=1)
"""Rows whose ``last_seen`` is older than this are deleted by the next heartbeat."""


@dataclass(frozen=True, slots=True)
class ReplicaRow:
    """One replica as stored."""

    id: str
    pid: int
    host: str
    config_version: int
    started_at: datetime
    last_seen: datetime


async def upsert(session: AsyncSession, row: ReplicaRow) -> None:
    """Insert or refresh ``row`` (keyed by id) inside the caller's transaction."""
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(Replica).values(
        id=row.id,
        pid=row.pid,
        host=row.host,
        config_version=row.config_version,
        started_at=row.started_at,
        last_seen=row.last_seen,
    )
    # started_at and pid are updated too: a replica id (data dir + slot) reused by a
    # restarted process is that process now.
    stmt = stmt.on_conflict_do_update(
        index_elements=[Replica.id],
        set_={
            "pid": stmt.excluded.pid,
            "host": stmt.excluded.host,
            "config_version": stmt.excluded.config_version,
            "started_at": stmt.excluded.started_at,
            "last_seen": stmt.excluded.last_seen,
        },
    )
    await session.execute(stmt)


async def prune(session: AsyncSession, before: datetime) -> int:
    """Delete rows last seen before ``before``; the number deleted."""
    result = await session.execute(delete(Replica).where(Replica.last_seen < before))
    return int(getattr(result, "rowcount", 0) or 0)


async def list_replicas(session: AsyncSession) -> list[ReplicaRow]:
    """Every stored replica, ordered by id."""
    rows = (await session.scalars(select(Replica).order_by(Replica.id))).all()
    return [
        ReplicaRow(r.id, r.pid, r.host, r.config_version, r.started_at, r.last_seen) for r in rows
    ]


def replica_id_for(journal_replica: str | None) -> str:
    """This process's replica id: the journal's (``<data-dir id>:<slot>``, stable across
    restarts), or ``<host>:<pid>`` when the gateway runs without a journal."""
    return journal_replica or f"{socket.gethostname()}:{os.getpid()}"


def is_stale(row: ReplicaRow, now: datetime, stale_after: float) -> bool:
    """Whether ``row`` missed its heartbeats: last seen more than ``stale_after`` s ago."""
    return (now - row.last_seen).total_seconds() > stale_after


class ReplicaHeartbeat:
    """Writes this process's row; call :meth:`beat` with the config version it applied.

    A failed write is logged and swallowed: the row is diagnostics, the gateway must keep
    serving without it.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        replica_id: str,
        *,
        pid: int,
        host: str,
        started_at: datetime,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._sessions = sessions
        self.replica_id = replica_id
        self._pid = pid
        self._host = host
        self._started_at = started_at
        self._clock = clock

    async def beat(self, config_version: int) -> bool:
        """Upsert the row and prune old ones in one transaction; False when it failed."""
        now = self._clock.now()
        row = ReplicaRow(
            self.replica_id, self._pid, self._host, config_version, self._started_at, now
        )
        try:
            async with self._sessions() as session, session.begin():
                await upsert(session, row)
                await prune(session, now - RETENTION)
        except Exception as exc:
            log.warning(
                "replica heartbeat write failed",
                extra={"replica": self.replica_id, "error": f"{type(exc).__name__}: {exc}"},
            )
            return False
        return True


__all__ = [
    "RETENTION",
    "ReplicaHeartbeat",
    "ReplicaRow",
    "is_stale",
    "list_replicas",
    "prune",
    "replica_id_for",
    "upsert",
]
