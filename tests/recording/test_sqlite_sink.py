"""The SQLite sink's rows are the rows the SQLAlchemy sink writes, byte for byte.

The SQLite sink converts values with shortcuts of the dialect's bind processors (aware UTC
timestamps, empty metadata) and writes the end records with one ``executemany``; these
tests compare the stored text of both sinks for the values records hold.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from aibridge.recording.records import (
    InterceptionEnded,
    InterceptionStarted,
    PromptRecord,
    Record,
    ThoughtRecord,
    TokenUsageRecord,
    ToolUsageRecord,
)
from aibridge.recording.sink import DatabaseSink
from aibridge.recording.sqlite_sink import SqliteSink
from aibridge.store.db import session_factory
from aibridge.testing.databases import migrated_engine, sqlite_file_url

T = 30  # seconds: upper bound for any await that could hang

TABLES = ("interceptions", "token_usages", "user_prompts", "tool_usages", "model_thoughts")

# Timestamps whose text is easy to get wrong: no microseconds, a small year, another zone.
TIMES = [
    datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC),
    datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC),
    datetime(5, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5))),
    datetime(2026, 7, 1, 0, 0, tzinfo=timezone.utc),  # noqa: UP017 - the same object as UTC
]


def batch(user: uuid.UUID) -> list[Record]:
    """Every record kind, with empty and non-empty metadata, ended and still open."""
    records: list[Record] = []
    for n, when in enumerate(TIMES):
        meta: dict[str, Any] = {} if n % 2 else {"n": n, "nested": {"a": [1, "x"]}}
        start = InterceptionStarted(
            initiator_id=user,
            provider="openai",
            provider_name="bench-openai",
            model="gpt-5",
            started_at=when,
            client="codex",
            credential_hint="sk-…abcd",
            metadata=meta,
            replica_id="r:0",
        )
        records += [
            start,
            TokenUsageRecord(
                interception_id=start.id, input=n, extra={"web": n} if n else {}, created_at=when
            ),
            PromptRecord(interception_id=start.id, prompt=f"p{n}", metadata=meta, created_at=when),
            ToolUsageRecord(interception_id=start.id, tool="t", created_at=when),
            ThoughtRecord(interception_id=start.id, content="c", created_at=when),
        ]
        if n != 2:  # one interception stays open
            hint = None if n % 2 else "sk-…wxyz"
            records.append(
                InterceptionEnded(
                    id=start.id, ended_at=when + timedelta(seconds=1), credential_hint=hint
                )
            )
    return records


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the recording tables as stored (raw sqlite3, no type conversion)."""
    conn = sqlite3.connect(path)
    try:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in TABLES}
    finally:
        conn.close()


def column(path: Path, name: str) -> list[Any]:
    """One column of the interceptions table, as stored."""
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute(f"SELECT {name} FROM interceptions")]
    finally:
        conn.close()


async def test_sqlite_sink_rows_are_the_database_sinks_rows(tmp_path: Path) -> None:
    user = uuid.uuid4()
    records = batch(user)
    early_end = InterceptionEnded(id=uuid.uuid4(), ended_at=TIMES[0])
    dumps = []
    for name in ("sqlalchemy", "sqlite3"):
        directory = tmp_path / name
        directory.mkdir()
        async with migrated_engine(sqlite_file_url(directory)) as engine:
            sink: DatabaseSink | SqliteSink
            if name == "sqlalchemy":
                sink = DatabaseSink(session_factory(engine))
            else:
                sink = SqliteSink(directory / "aibridge.db", engine.dialect)
            async with asyncio.timeout(T):
                assert await sink.write(records) == []
                # A replayed batch is a no-op; an end without its start is reported.
                assert await sink.write([*records, early_end]) == [early_end]
                if isinstance(sink, SqliteSink):
                    await sink.close()
        dumps.append(dump(directory / "aibridge.db"))
    expected, got = dumps
    assert [len(expected[t]) for t in TABLES] == [5, 5, 5, 5, 5]
    assert got == expected
    # The text itself, for the shortcut: the dialect's format, microseconds always.
    started = set(column(tmp_path / "sqlite3" / "aibridge.db", "started_at"))
    assert "2026-03-04 05:06:07.000000" in started
    assert "0005-01-02 03:04:05.000006" in started
    assert "2027-01-01 04:59:59.999999" in started  # converted to UTC


async def test_an_end_that_changes_no_row_is_missing_only_without_its_start(
    tmp_path: Path,
) -> None:
    """Ends are one ``executemany``; when some change no row, each is looked up."""
    async with migrated_engine(sqlite_file_url(tmp_path)) as engine:
        sink = SqliteSink(tmp_path / "aibridge.db", engine.dialect)
        user = uuid.uuid4()
        first = batch(user)
        starts = [r for r in first if isinstance(r, InterceptionStarted)]
        ends = [r for r in first if isinstance(r, InterceptionEnded)]
        unknown = InterceptionEnded(id=uuid.uuid4())
        async with asyncio.timeout(T):
            assert await sink.write(starts) == []
            # An end twice in one batch: the second changes nothing but its row exists.
            assert await sink.write([ends[0], ends[0], unknown, *ends[1:]]) == [unknown]
            assert await sink.write([unknown]) == [unknown]
            await sink.close()
    ended = column(tmp_path / "aibridge.db", "ended_at")
    assert sum(1 for value in ended if value is not None) == len(ends)


async def test_an_end_replayed_with_a_start_already_written_still_ends_its_row(
    tmp_path: Path,
) -> None:
    """An end in its start's batch is written by the start's INSERT; when that start row
    is already there (the start was written before a crash, the journal replays both),
    the INSERT does nothing and the end must still land."""
    async with migrated_engine(sqlite_file_url(tmp_path)) as engine:
        sink = SqliteSink(tmp_path / "aibridge.db", engine.dialect)
        records = batch(uuid.uuid4())
        starts = [r for r in records if isinstance(r, InterceptionStarted)]
        ends = [r for r in records if isinstance(r, InterceptionEnded)]
        async with asyncio.timeout(T):
            assert await sink.write(starts[:2]) == []
            assert await sink.write(records) == []
            await sink.close()
    ended = column(tmp_path / "aibridge.db", "ended_at")
    assert len(ended) == len(starts)
    assert sum(1 for value in ended if value is not None) == len(ends)
    hints = column(tmp_path / "aibridge.db", "credential_hint")
    assert sorted(hints) == sorted(["sk-…wxyz", "sk-…abcd", "sk-…abcd", "sk-…abcd", "sk-…wxyz"])


async def test_a_batch_larger_than_one_statement_writes_every_row(tmp_path: Path) -> None:
    """Rows go in as multi-row INSERTs of at most 32 rows (32 + 16 + 4 + 1 for 53), each
    table's chunks in order; every row lands once and a replay of the batch adds none."""
    async with migrated_engine(sqlite_file_url(tmp_path)) as engine:
        sink = SqliteSink(tmp_path / "aibridge.db", engine.dialect)
        user = uuid.uuid4()
        records: list[Record] = []
        for _ in range(53):
            start = InterceptionStarted(
                initiator_id=user, provider="openai", provider_name="p", model="m"
            )
            records += [
                start,
                PromptRecord(interception_id=start.id, prompt="p"),
                InterceptionEnded(id=start.id),
            ]
        async with asyncio.timeout(T):
            assert await sink.write(records) == []
            assert await sink.write(records) == []
            await sink.close()
    rows = dump(tmp_path / "aibridge.db")
    assert (len(rows["interceptions"]), len(rows["user_prompts"])) == (53, 53)
    assert all(value is not None for value in column(tmp_path / "aibridge.db", "ended_at"))
