"""Config version counters, bumped with every configuration write and polled by replicas:
``providers`` (providers and MCP servers) and ``prices`` (model prices)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from aibridge.store.models import ConfigVersion
from aibridge.store.types import utcnow

PROVIDERS = "providers"
PRICES = "prices"
"""The counter of model price writes (:mod:`aibridge.store.prices`)."""


async def bump(session: AsyncSession, name: str = PROVIDERS) -> None:
    """Increment counter ``name`` inside the caller's transaction."""
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(ConfigVersion).values(name=name, version=1, updated_at=utcnow())
    stmt = stmt.on_conflict_do_update(
        index_elements=[ConfigVersion.name],
        set_={"version": ConfigVersion.version + 1, "updated_at": utcnow()},
    )
    await session.execute(stmt)


async def read(session: AsyncSession, name: str = PROVIDERS) -> int:
    """Current value of counter ``name`` (0 before the first write)."""
    value = await session.scalar(select(ConfigVersion.version).where(ConfigVersion.name == name))
    return int(value or 0)


__all__ = ["PRICES", "PROVIDERS", "bump", "read"]
