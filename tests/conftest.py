"""Shared fixtures: real databases (SQLite file and, when configured, PostgreSQL)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from aibridge.store.db import create_engine, migrate
from aibridge.store.urls import normalize_database_url

PG_ENV = "AIBRIDGE_TEST_POSTGRES_URL"
REQUIRE_PG_ENV = "AIBRIDGE_TEST_REQUIRE_POSTGRES"


def postgres_admin_url() -> str | None:
    """The PostgreSQL URL tests may use, or None (tests then skip, or fail in CI)."""
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get(REQUIRE_PG_ENV) == "1":
            pytest.fail(f"{REQUIRE_PG_ENV}=1 but {PG_ENV} is not set")
        pytest.skip(f"PostgreSQL tests need {PG_ENV}=postgresql://user@host:port/db")
    return url


def _asyncpg_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def create_pg_database() -> str:
    """Create a throwaway PostgreSQL database and return its plain URL."""
    admin = postgres_admin_url()
    assert admin is not None
    name = f"aibridge_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(_asyncpg_url(admin))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, _ = _asyncpg_url(admin).rpartition("/")
    return f"{base}/{name}"


async def drop_pg_database(url: str) -> None:
    """Drop a database made by :func:`create_pg_database`, kicking its sessions."""
    admin = postgres_admin_url()
    assert admin is not None
    name = url.rpartition("/")[2]
    conn = await asyncpg.connect(_asyncpg_url(admin))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database (plain ``postgresql://`` URL)."""
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file URL in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'aibridge.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Run the test once on a SQLite file and once on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'aibridge.db'}"
        return
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated engine on each backend."""
    eng = create_engine(normalize_database_url(db_url))
    await migrate(eng)
    try:
        yield eng
    finally:
        await eng.dispose()
