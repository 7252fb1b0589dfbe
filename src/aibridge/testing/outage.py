"""Database outages on cue: the real database made unreachable, then restored.

An outage is not a patched function: PostgreSQL refuses connections to the database and
kills its sessions; a SQLite database file is moved away (the recorder's SQLite sink opens
the file with ``mode=rw`` and checks that the path still names the file it has open).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from aibridge.testing.databases import plain_url, postgres_admin_url


@asynccontextmanager
async def pg_outage(db_url: str) -> AsyncIterator[None]:
    """The database refuses new connections and its sessions are killed; restored on exit."""
    name = db_url.rpartition("/")[2]
    admin = await asyncpg.connect(plain_url(postgres_admin_url()))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            yield
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    finally:
        await admin.close()


@asynccontextmanager
async def sqlite_outage(path: Path) -> AsyncIterator[None]:
    """The SQLite database file (and its WAL and shared-memory files) is moved away;
    moved back on exit."""
    moved: list[tuple[Path, Path]] = []
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            dst = src.with_name(src.name + ".away")
            os.rename(src, dst)
            moved.append((src, dst))
    try:
        yield
    finally:
        for src, dst in reversed(moved):
            os.rename(dst, src)
