"""Engine creation and start-up migrations for SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

from aibridge.files import make_private, open_private, private_dir
from aibridge.secrets_mask import mask_url

log = logging.getLogger(__name__)

SQLITE_SIDECARS = ("-wal", "-shm", "-journal")
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Arbitrary constant: serialises migrations of replicas starting together on PostgreSQL.
MIGRATION_LOCK_ID = 0x41_49_42_52  # "AIBR"


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """Create the async engine for ``url`` (already normalised to an async driver)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            _private_sqlite_files(Path(path))
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # WAL lets readers proceed during the recorder's batch writes; foreign
            # keys are off by default in SQLite.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _private_sqlite_files(db: Path) -> None:
    """Make the database file 0600 before SQLite opens it: SQLite gives its ``-wal``,
    ``-shm`` and ``-journal`` files the database file's mode. Sidecars left by an older
    version are tightened too."""
    private_dir(db.parent, tighten=False)
    os.close(open_private(db, os.O_RDWR))
    for suffix in SQLITE_SIDECARS:
        make_private(db.with_name(db.name + suffix))


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Session factory whose objects stay usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
    command.upgrade(_alembic_config(connection), "head")


def _current_and_head(connection: Connection) -> tuple[str | None, str | None]:
    current = MigrationContext.configure(connection).get_current_revision()
    head = ScriptDirectory.from_config(_alembic_config(connection)).get_current_head()
    return current, head


async def migrate(engine: AsyncEngine) -> None:
    """Apply every pending migration. Safe to run from several replicas at once."""
    log.info("applying database migrations", extra={"database": mask_url(str(engine.url))})
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


async def migration_status(engine: AsyncEngine) -> tuple[str | None, str | None]:
    """Return (current revision, head revision)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current_and_head)
