"""Classifying database errors: an outage (503, retry) versus a bug (500)."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from aibridge.store.outage import is_database_unavailable

TIMEOUT = 60.0


async def failure(url: str, sql: str, **engine_args: object) -> BaseException:
    """The exception a real engine raises for ``sql`` on ``url``."""
    engine = create_async_engine(url, **engine_args)
    try:
        async with asyncio.timeout(TIMEOUT), engine.begin() as conn:
            await conn.execute(text(sql))
    except Exception as exc:
        return exc
    finally:
        await engine.dispose()
    raise AssertionError(f"{sql!r} did not fail")


async def test_locked_sqlite_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("CREATE TABLE t (x INTEGER)")
        holder.execute("BEGIN EXCLUSIVE")
        exc = await failure(
            f"sqlite+aiosqlite:///{path}", "INSERT INTO t VALUES (1)", connect_args={"timeout": 0}
        )
    finally:
        holder.close()
    assert "locked" in str(exc)
    assert is_database_unavailable(exc)


async def test_refused_postgres_connection_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        exc = await failure(f"postgresql+asyncpg://u@127.0.0.1:{port}/db", "SELECT 1")
    assert is_database_unavailable(exc)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM no_such_table",  # a bug in the query, not an outage
        "INSERT INTO t VALUES (1)",  # primary key taken
    ],
)
async def test_query_bugs_and_constraint_violations_are_not_outages(
    tmp_path: Path, sql: str
) -> None:
    path = tmp_path / "ok.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
        setup.execute("INSERT INTO t VALUES (1)")
    exc = await failure(f"sqlite+aiosqlite:///{path}", sql)
    assert not is_database_unavailable(exc)
