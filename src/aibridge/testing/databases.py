"""Real databases for tests: throwaway PostgreSQL databases on the server named by an
environment variable, SQLite files, migrated engines.

Tests skip PostgreSQL when :data:`PG_ENV` is unset (and fail when :data:`REQUIRE_PG_ENV`
is ``1``, as in CI); that decision is the test suite's (see ``tests/conftest.py``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from aibridge.store.db import create_engine, migrate
from aibridge.store.urls import normalize_database_url

PG_ENV = "AIBRIDGE_TEST_POSTGRES_URL"
"""The variable holding the PostgreSQL server tests may use (a URL to any database on it)."""
REQUIRE_PG_ENV = "AIBRIDGE_TEST_REQUIRE_POSTGRES"
"""``1`` makes a missing :data:`PG_ENV` a failure instead of a skip."""


def configured_admin_url() -> str | None:
    """The PostgreSQL URL from :data:`PG_ENV`, or None when it is not set."""
    return os.environ.get(PG_ENV) or None


def postgres_admin_url() -> str:
    """The PostgreSQL URL tests may use; RuntimeError when :data:`PG_ENV` is not set."""
    url = configured_admin_url()
    if url is None:
        raise RuntimeError(f"PostgreSQL tests need {PG_ENV}=postgresql://user@host:port/db")
    return url


def plain_url(url: str) -> str:
    """``url`` with the ``+asyncpg`` driver suffix removed (what asyncpg itself accepts)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database (plain ``postgresql://`` URL) for the block;
    dropped afterwards, its sessions kicked."""
    admin = plain_url(postgres_admin_url())
    name = f"aibridge_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield f"{admin.rpartition('/')[0]}/{name}"
    finally:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def sqlite_file_url(directory: Path) -> str:
    """The URL of a SQLite database file ``aibridge.db`` in ``directory``."""
    return f"sqlite:///{directory / 'aibridge.db'}"


_sqlite_template: Path | None = None
"""This process's migrated SQLite database, made on first use (see :func:`start_from_template`)."""


async def start_from_template(url: str) -> None:
    """When ``url`` names a SQLite file that does not exist yet, make it a copy of a
    database migrated once per process, so that a test starts on the migrated schema
    without running every migration again (the start-up's own migration step then finds
    nothing to do). Any other URL is left alone; the migrations themselves are tested on
    empty databases in tests/store."""
    global _sqlite_template
    normalized = normalize_database_url(url)
    prefix = "sqlite+aiosqlite:///"
    if not normalized.startswith(prefix):
        return
    target = Path(normalized.removeprefix(prefix))
    if not _is_new_file(target):
        return
    if _sqlite_template is None:
        template = Path(tempfile.mkdtemp(prefix="aibridge-template-")) / "aibridge.db"
        eng = create_engine(prefix + str(template))
        try:
            await migrate(eng)
        finally:
            await eng.dispose()  # checkpoints the WAL: the one file is the whole database
        _sqlite_template = template
    _private_copy(_sqlite_template, target)


def _is_new_file(target: Path) -> bool:
    return "?" not in str(target) and not target.exists() and target.parent.is_dir()


def _private_copy(source: Path, target: Path) -> None:
    # A small local file: copied on the loop, as the engine would open it.
    shutil.copyfile(source, target)
    target.chmod(0o600)


@asynccontextmanager
async def migrated_engine(url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on ``url`` with the schema migrated, disposed of afterwards."""
    await start_from_template(url)
    eng = create_engine(normalize_database_url(url))
    await migrate(eng)
    try:
        yield eng
    finally:
        await eng.dispose()
