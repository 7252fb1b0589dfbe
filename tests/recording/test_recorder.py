"""The recorder against real databases: exact values, batching, outages, spill and replay.

Outages are real: on PostgreSQL the test database stops accepting connections (and its
backends are terminated) or a table is locked by another session; on SQLite the database
file is moved away and replaced by a directory, so opening it fails.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from aibridge.recording import (
    DatabaseSink,
    InterceptionEnded,
    InterceptionStarted,
    ListSink,
    PromptRecord,
    Record,
    Recorder,
    ThoughtRecord,
    TokenUsageRecord,
    ToolUsageRecord,
    record_from_json,
    record_to_json,
)
from aibridge.recording.sink import database_sink
from aibridge.recording.spill import SpillFile
from aibridge.recording.sqlite_sink import SqliteSink
from aibridge.store.db import session_factory
from aibridge.store.models import Interception, ModelThought, TokenUsage, ToolUsage, UserPrompt
from aibridge.testing.outage import pg_outage

T = 30  # seconds: upper bound for any await that could hang

# Fast knobs: small queue and batches so an outage fills the queue with a few records.
FAST: dict[str, Any] = {
    "batch_size": 5,
    "flush_interval": 0.01,
    "queue_size": 10,
    "ping_timeout": 2.0,
    "write_timeout": 3.0,
    "retry_initial": 0.02,
    "retry_max": 0.2,
    "replay_interval": 0.2,
    "pending_retry_interval": 0.05,
}


def at(seconds: int) -> datetime:
    """A fixed, microsecond-precise UTC time."""
    return datetime(2025, 3, 1, 12, 0, tzinfo=UTC) + timedelta(seconds=seconds, microseconds=7)


def recorder(
    engine: AsyncEngine, tmp_path: Path, registry: CollectorRegistry, **knobs: Any
) -> Recorder:
    return Recorder(
        database_sink(session_factory(engine)),
        tmp_path / "spill" / "recording-spill.jsonl",
        registry=registry,
        **{**FAST, **knobs},
    )


def counter(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(f"aibridge_recorder_{name}_total", labels or None) or 0.0


def start_record(user: uuid.UUID, n: int) -> InterceptionStarted:
    return InterceptionStarted(
        initiator_id=user,
        provider="anthropic",
        provider_name="anthropic",
        model="claude-sonnet-4",
        started_at=at(n),
        client="claude-code",
        client_session_id=f"s-{n}",
    )


def family(user: uuid.UUID, n: int) -> list[Record]:
    """A start, one token usage and the end of interception ``n``, in arrival order."""
    start = start_record(user, n)
    return [
        start,
        TokenUsageRecord(
            interception_id=start.id, provider_response_id=f"msg_{n}", input=n, output=1
        ),
        InterceptionEnded(id=start.id, ended_at=at(n + 1)),
    ]


async def count_ids(engine: AsyncEngine, model: Any, ids: list[uuid.UUID]) -> tuple[int, int]:
    """(rows whose id is in ``ids``, all rows) of a recording table."""
    async with session_factory(engine)() as s:
        matching = await s.scalar(select(func.count()).select_from(model).where(model.id.in_(ids)))
        total = await s.scalar(select(func.count()).select_from(model))
    return int(matching or 0), int(total or 0)


def _hide_sqlite(path: Path) -> list[tuple[Path, Path]]:
    """Move the database files away and put a directory in their place."""
    moved = []
    for suffix in ("", "-wal", "-shm"):
        p = Path(f"{path}{suffix}")
        if p.exists():
            away = p.with_name(p.name + ".away")
            p.rename(away)
            moved.append((away, p))
    path.mkdir()  # "unable to open database file" from now on
    return moved


def _restore_sqlite(path: Path, moved: list[tuple[Path, Path]]) -> None:
    path.rmdir()
    for away, p in moved:
        away.rename(p)


@asynccontextmanager
async def db_outage(db_url: str, engine: AsyncEngine) -> AsyncIterator[None]:
    """Make the database unreachable for new and existing connections, then restore it."""
    if db_url.startswith("sqlite"):
        path = Path(db_url.split("///", 1)[1])
        await engine.dispose()
        moved = _hide_sqlite(path)
        try:
            yield
        finally:
            await engine.dispose()
            _restore_sqlite(path, moved)
        return
    async with pg_outage(db_url):
        yield


def spill_lines_at(path: Path) -> list[Record]:
    """Every record currently in a spill file and the replay files claimed from it."""
    spill = SpillFile(path)
    files = ([spill.path] if spill.path.exists() else []) + spill.replay_files()
    return [record_from_json(line) for f in files for line in f.read_bytes().splitlines() if line]


def spill_lines(tmp_path: Path) -> list[Record]:
    """Every record spilled by :func:`recorder` in ``tmp_path``."""
    return spill_lines_at(tmp_path / "spill" / "recording-spill.jsonl")


# --------------------------------------------------------------------------- unit


def test_every_record_round_trips_through_json_and_bad_lines_are_refused() -> None:
    user = uuid.uuid4()
    start = start_record(user, 1)
    start.metadata = {"tier": "x", "weird": object()}
    records: list[Record] = [
        start,
        InterceptionEnded(id=start.id, error_type="rate_limited", error_message="429"),
        TokenUsageRecord(interception_id=start.id, input=3, extra={"web_search": 2}),
        PromptRecord(interception_id=start.id, prompt="hi"),
        ToolUsageRecord(interception_id=start.id, tool="Read", input='{"a":1}', injected=True),
        ThoughtRecord(interception_id=start.id, content="hmm", metadata={"source": "thinking"}),
    ]
    for rec in records:
        back = record_from_json(record_to_json(rec))
        assert type(back) is type(rec)
        if rec is start:
            assert isinstance(back, InterceptionStarted)
            assert back.metadata["tier"] == "x"
            assert back.metadata["weird"].startswith("<object")
            back.metadata = rec.metadata
        assert back == rec
    with pytest.raises(ValueError):
        record_from_json(b'{"kind": "nope"}')
    with pytest.raises(ValueError):
        record_from_json(b'{"kind": "prompt_usage", "id": "not-a-uuid"}')


async def test_list_sink_and_hot_path_never_waits(tmp_path: Path) -> None:
    """A sink that never answers: record() still returns at once; the queue bounds memory
    and the overflow goes to the spill file; close() spills what is left."""
    registry = CollectorRegistry()
    gate = asyncio.Event()

    class StuckSink(ListSink):
        async def write(self, records: Any) -> list[InterceptionEnded]:
            await gate.wait()
            return await super().write(records)

    rec = Recorder(StuckSink(), tmp_path / "spill.jsonl", registry=registry, **FAST)
    await rec.start()
    user = uuid.uuid4()
    records = [r for n in range(10) for r in family(user, n)]
    for r in records[1:]:
        rec.record(r)  # synchronous: would raise if it tried to await
    async with asyncio.timeout(T):
        await rec.wait_until(
            lambda: (
                counter(registry, "records_spilled") + rec.queue_depth + rec.in_flight
                == len(records) - 1
            )
        )
    assert rec.queue_depth <= 10
    assert counter(registry, "records_spilled") > 0
    async with asyncio.timeout(T):
        await rec.close(timeout=0.5)
    assert sorted(r.id for r in spill_lines_at(tmp_path / "spill.jsonl")) == sorted(
        r.id for r in records[1:]
    )


# --------------------------------------------------------------------------- database


async def test_records_land_with_exact_values(engine: AsyncEngine, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    rec = recorder(engine, tmp_path, registry)
    await rec.start()
    user = uuid.uuid4()
    start = InterceptionStarted(
        initiator_id=user,
        api_key_id="abc123",
        provider="openai",
        provider_name="openai-eu",
        model="gpt-5",
        started_at=at(0),
        client="codex",
        user_agent="codex_cli_rs/0.1",
        client_session_id="sess-1",
        correlating_tool_call_id="call_prev",
        credential_kind="byok",
        credential_hint="sk-…abcd",
        metadata={"k": "v", "n": 1},
    )
    rec.record(start)
    token = TokenUsageRecord(
        interception_id=start.id,
        provider_response_id="resp_1",
        provider_model="gpt-5-2025",
        input=100,
        output=20,
        cache_read=300,
        cache_write=7,
        reasoning=11,
        extra={"web_search": 2},
        metadata={"service_tier": "default"},
        created_at=at(1),
    )
    prompt = PromptRecord(
        interception_id=start.id,
        provider_response_id="resp_1",
        prompt="fix the bug",
        created_at=at(2),
    )
    tool = ToolUsageRecord(
        interception_id=start.id,
        provider_response_id="resp_1",
        tool="mcp_github_search",
        tool_call_id="call_1",
        item_id="fc_1",
        server_url="https://mcp.example/github",
        input='{"q": "x"}',
        injected=True,
        invocation_error="boom",
        metadata={"m": True},
        created_at=at(3),
    )
    thought = ThoughtRecord(
        interception_id=start.id,
        content="thinking…",
        metadata={"source": "thinking"},
        created_at=at(4),
    )
    end = InterceptionEnded(
        id=start.id,
        ended_at=at(5),
        error_type="rate_limited",
        error_message="429 from upstream",
        credential_hint="sk-…wxyz",
    )
    rec.record(token)
    rec.record(prompt)
    rec.record(tool)
    rec.record(thought)
    rec.record(end)
    async with asyncio.timeout(T):
        await rec.wait_idle()
        await rec.close()

    async with session_factory(engine)() as s:
        i = (await s.execute(select(Interception))).scalar_one()
        t = (await s.execute(select(TokenUsage))).scalar_one()
        p = (await s.execute(select(UserPrompt))).scalar_one()
        u = (await s.execute(select(ToolUsage))).scalar_one()
        m = (await s.execute(select(ModelThought))).scalar_one()
    assert (i.id, i.initiator_id, i.api_key_id, i.provider, i.provider_name, i.model) == (
        start.id, user, "abc123", "openai", "openai-eu", "gpt-5"
    )  # fmt: skip
    assert (i.started_at, i.ended_at, i.client, i.user_agent) == (
        at(0),
        at(5),
        "codex",
        "codex_cli_rs/0.1",
    )
    assert (i.client_session_id, i.correlating_tool_call_id) == ("sess-1", "call_prev")
    assert (i.credential_kind, i.credential_hint) == ("byok", "sk-…wxyz")
    assert (i.error_type, i.error_message, i.meta) == (
        "rate_limited",
        "429 from upstream",
        {"k": "v", "n": 1},
    )
    assert (t.id, t.interception_id, t.provider_response_id, t.provider_model) == (
        token.id, start.id, "resp_1", "gpt-5-2025"
    )  # fmt: skip
    assert (t.input_tokens, t.output_tokens, t.cache_read_input_tokens) == (100, 20, 300)
    assert (t.cache_write_input_tokens, t.reasoning_tokens, t.extra_token_types) == (
        7,
        11,
        {"web_search": 2},
    )
    assert (t.meta, t.created_at) == ({"service_tier": "default"}, at(1))
    assert (p.id, p.interception_id, p.provider_response_id, p.prompt, p.created_at) == (
        prompt.id, start.id, "resp_1", "fix the bug", at(2)
    )  # fmt: skip
    assert (u.id, u.tool, u.provider_tool_call_id, u.item_id, u.server_url) == (
        tool.id, "mcp_github_search", "call_1", "fc_1", "https://mcp.example/github"
    )  # fmt: skip
    assert (u.input, u.injected, u.invocation_error, u.meta, u.created_at) == (
        '{"q": "x"}', True, "boom", {"m": True}, at(3)
    )  # fmt: skip
    assert (m.id, m.content, m.meta, m.created_at) == (
        thought.id, "thinking…", {"source": "thinking"}, at(4)
    )  # fmt: skip
    assert counter(registry, "records_written", kind="interception_start") == 1
    assert counter(registry, "records_enqueued", kind="token_usage") == 1
    assert counter(registry, "records_written", kind="interception_end") == 1
    assert counter(registry, "records_spilled") == 0
    assert counter(registry, "write_errors") == 0


async def test_batch_is_one_transaction_and_size_triggers_it(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """A full batch is written at once (not after the long flush interval), in a single
    transaction with one bulk statement per table."""
    registry = CollectorRegistry()
    user = uuid.uuid4()
    records: list[Record] = []
    for n in range(10):
        start = start_record(user, n)
        records += [
            start,
            TokenUsageRecord(interception_id=start.id, input=1),
            PromptRecord(interception_id=start.id, prompt="p"),
            ToolUsageRecord(interception_id=start.id, tool="t"),
            ThoughtRecord(interception_id=start.id, content="c"),
            InterceptionEnded(id=start.id, ended_at=at(n + 1)),
        ]
    knobs: dict[str, Any] = {"batch_size": len(records), "queue_size": 1000}
    rec = recorder(engine, tmp_path, registry, flush_interval=3600, **knobs)
    commits: list[int] = []
    statements: list[str] = []
    if engine.dialect.name == "sqlite":
        # The SQLite sink runs on its own sqlite3 connection: trace that one.
        sink = rec._sink
        assert isinstance(sink, SqliteSink)
        traced: list[str] = []
        sink._on_connect = lambda conn: conn.set_trace_callback(traced.append)
        await rec.start()
        for r in records:
            rec.record(r)
        async with asyncio.timeout(T):
            await rec.wait_idle()
        words = [t.split(None, 1)[0].upper() for t in traced if not t.startswith("PRAGMA")]
        assert words.count("BEGIN") == 1
        assert words.count("COMMIT") == 1
        # Bulk statements per table, never one per row.
        inserts = {t for t in traced if t.startswith("INSERT")}
        tables = {t.split()[2] for t in inserts}
        assert tables == {
            "interceptions", "token_usages", "user_prompts", "tool_usages", "model_thoughts"
        }  # fmt: skip
        # Every end is in its start's batch: written by the start's INSERT, no UPDATE.
        assert words.count("UPDATE") == 0
        # Ten rows a table, as multi-row INSERTs of 8 and 2 rows: two statements a table.
        assert words.count("INSERT") == 10
    else:

        def on_commit(_conn: Any) -> None:
            commits.append(1)

        def on_execute(_conn: Any, _cur: Any, statement: str, *_: Any) -> None:
            statements.append(statement.split(None, 1)[0].upper())

        event.listen(engine.sync_engine, "commit", on_commit)
        event.listen(engine.sync_engine, "before_cursor_execute", on_execute)
        try:
            await rec.start()
            for r in records:
                rec.record(r)
            async with asyncio.timeout(T):
                await rec.wait_idle()
        finally:
            event.remove(engine.sync_engine, "commit", on_commit)
            event.remove(engine.sync_engine, "before_cursor_execute", on_execute)
        assert commits == [1]
        assert statements.count("INSERT") == 5
        assert statements.count("UPDATE") == 1
    for model in (Interception, TokenUsage, UserPrompt, ToolUsage, ModelThought):
        assert (await count_ids(engine, model, [r.id for r in records]))[1] == 10
    async with asyncio.timeout(T):
        await rec.close()


async def test_flush_interval_triggers_a_partial_batch(engine: AsyncEngine, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    rec = recorder(engine, tmp_path, registry, batch_size=1000, flush_interval=0.02)
    await rec.start()
    records = family(uuid.uuid4(), 1)
    for r in records:
        rec.record(r)
    async with asyncio.timeout(T):
        await rec.wait_idle()  # without close(): only the interval can have flushed it
    assert (await count_ids(engine, Interception, [records[0].id]))[0] == 1
    async with asyncio.timeout(T):
        await rec.close()


async def test_an_outage_fills_the_queue_then_spills_and_replays_every_record_once(
    db_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    rec = recorder(engine, tmp_path, registry)
    await rec.start()
    user = uuid.uuid4()
    before = family(user, 0)
    async with asyncio.timeout(T):
        for r in before:
            rec.record(r)
        await rec.wait_idle()

    during: list[Record] = [r for n in range(1, 31) for r in family(user, n)]
    async with db_outage(db_url, engine):
        # The request path never waits, whatever the database does: record() is a plain
        # call, and the starts go the same way as every other record.
        for r in during:
            rec.record(r)
        # Back-pressure: the queue holds queue_size records, the writer holds one failed
        # batch, and everything else is spilled to disk.
        async with asyncio.timeout(T):
            await rec.wait_until(
                lambda: (
                    counter(registry, "records_spilled") + rec.queue_depth + rec.in_flight
                    == len(during)
                    and not rec.healthy
                )
            )
        assert rec.queue_depth <= 10  # the bound
        assert rec.queue_depth + rec.in_flight >= 10  # it filled before anything spilled
        assert not rec.healthy
        spilled = int(counter(registry, "records_spilled"))
        assert spilled == len(during) - rec.queue_depth - rec.in_flight > 0
        assert len(spill_lines(tmp_path)) == spilled
        assert counter(registry, "write_errors") >= 1

    after = family(user, 99)
    async with asyncio.timeout(T):
        await rec.wait_idle()
        for r in after:
            rec.record(r)
        await rec.wait_idle()
        await rec.close()

    everything = before + during + after
    starts = [r.id for r in everything if isinstance(r, InterceptionStarted)]
    tokens = [r.id for r in everything if isinstance(r, TokenUsageRecord)]
    assert await count_ids(engine, Interception, starts) == (32, 32)
    assert await count_ids(engine, TokenUsage, tokens) == (32, 32)
    async with session_factory(engine)() as s:
        ends = dict((await s.execute(select(Interception.id, Interception.ended_at))).all())
    expected = {r.id: r.ended_at for r in everything if isinstance(r, InterceptionEnded)}
    assert ends == expected
    assert counter(registry, "records_replayed") == spilled
    assert counter(registry, "records_dropped") == 0
    assert spill_lines(tmp_path) == []


async def test_close_spills_when_db_down_and_next_start_replays(
    db_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    rec = recorder(engine, tmp_path, registry, queue_size=1000, flush_interval=3600, batch_size=500)
    await rec.start()
    records = [r for n in range(20) for r in family(uuid.uuid4(), n)]
    async with db_outage(db_url, engine):
        for r in records:
            rec.record(r)
        async with asyncio.timeout(T):
            await rec.close(timeout=10)
        assert sorted(r.id for r in spill_lines(tmp_path)) == sorted(r.id for r in records)
        assert counter(registry, "records_spilled") == len(records)
        # Records after close are not lost either.
        late = start_record(uuid.uuid4(), 77)
        rec.record(late)
        assert late.id in {r.id for r in spill_lines(tmp_path)}

    registry2 = CollectorRegistry()
    rec2 = recorder(engine, tmp_path, registry2)
    await rec2.start()
    async with asyncio.timeout(T):
        await rec2.wait_idle()
        await rec2.close()
    starts = [r.id for r in records if isinstance(r, InterceptionStarted)] + [late.id]
    assert await count_ids(engine, Interception, starts) == (21, 21)
    assert counter(registry2, "records_replayed") == len(records) + 1
    assert spill_lines(tmp_path) == []


async def test_close_flushes_queue_to_db(engine: AsyncEngine, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    rec = recorder(
        engine, tmp_path, registry, batch_size=1000, queue_size=1000, flush_interval=3600
    )
    await rec.start()
    records = [r for n in range(50) for r in family(uuid.uuid4(), n)]
    for r in records:
        rec.record(r)
    assert rec.queue_depth == len(records)
    async with asyncio.timeout(T):
        await rec.close(timeout=20)
    tokens = [r.id for r in records if isinstance(r, TokenUsageRecord)]
    assert await count_ids(engine, TokenUsage, tokens) == (50, 50)
    assert counter(registry, "records_spilled") == 0
    assert spill_lines(tmp_path) == []


async def test_end_before_start_is_kept_until_the_start_lands(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    rec = recorder(engine, tmp_path, registry)
    await rec.start()
    start = start_record(uuid.uuid4(), 5)
    end = InterceptionEnded(id=start.id, ended_at=at(9), error_type="timeout")
    rec.record(end)
    async with asyncio.timeout(T):
        await rec.wait_until(lambda: rec.pending_ends == 1 and rec.queue_depth == 0)
        assert await count_ids(engine, Interception, [start.id]) == (0, 0)
        rec.record(start)
        await rec.wait_idle()
    async with session_factory(engine)() as s:
        row = (await s.execute(select(Interception))).scalar_one()
    assert (row.id, row.ended_at, row.error_type) == (start.id, at(9), "timeout")
    assert counter(registry, "records_written", kind="interception_end") == 1
    async with asyncio.timeout(T):
        await rec.close()


async def test_replay_lands_every_record_once_whatever_the_file_order_and_earlier_partial_writes(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """Spill files whose end lines precede their start lines (in an older file), and whose
    records were partly written already (a crash before the file was deleted): after
    replay every record is present exactly once and every end is applied."""
    user = uuid.uuid4()
    fams = [family(user, n) for n in range(6)]
    spill = SpillFile(tmp_path / "spill" / "recording-spill.jsonl")
    # Older claimed file: only the ends. Live file: starts, a line torn by a crash
    # mid-append, then tokens (the next append must start on a fresh line).
    ends = [f[2] for f in fams]
    spill.append([record_to_json(r) for r in ends])
    assert spill.claim()
    spill.append([record_to_json(f[0]) for f in fams])
    with spill.path.open("ab") as fh:
        fh.write(b'{"kind": "token_us')
    spill.append([record_to_json(f[1]) for f in fams])
    # Half of the starts are already in the database.
    await DatabaseSink(session_factory(engine)).write([f[0] for f in fams[:3]])

    registry = CollectorRegistry()
    rec = recorder(engine, tmp_path, registry, replay_chunk=2)
    await rec.start()
    async with asyncio.timeout(T):
        await rec.wait_idle()
        await rec.close()
    starts = [f[0].id for f in fams]
    assert await count_ids(engine, Interception, starts) == (6, 6)
    assert await count_ids(engine, TokenUsage, [f[1].id for f in fams]) == (6, 6)
    async with session_factory(engine)() as s:
        got = dict((await s.execute(select(Interception.id, Interception.ended_at))).all())
    assert got == {e.id: e.ended_at for e in ends}
    assert counter(registry, "records_dropped") == 1  # the torn line
    assert counter(registry, "records_replayed") == 18
    assert spill_lines(tmp_path) == []


async def test_replayed_end_is_retried_when_its_start_lands_later(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """The only spilled record is an end; its start is recorded after the replay. The idle
    writer must still retry the end once the start is written."""
    start = start_record(uuid.uuid4(), 3)
    end = InterceptionEnded(id=start.id, ended_at=at(4), error_type="server_error")
    SpillFile(tmp_path / "spill" / "recording-spill.jsonl").append([record_to_json(end)])
    registry = CollectorRegistry()
    rec = recorder(engine, tmp_path, registry)
    await rec.start()
    async with asyncio.timeout(T):
        await rec.wait_until(lambda: rec.pending_ends == 1 and not spill_lines(tmp_path))
        rec.record(start)
        await rec.wait_idle()
        await rec.close()
    async with session_factory(engine)() as s:
        row = (await s.execute(select(Interception))).scalar_one()
    assert (row.id, row.ended_at, row.error_type) == (start.id, at(4), "server_error")
    assert counter(registry, "records_replayed") == 1


async def test_a_locked_table_spills_records_after_the_write_timeout_and_they_land_later(
    pg_url: str, pg_engine: AsyncEngine, tmp_path: Path
) -> None:
    """PostgreSQL: another session holds an ACCESS EXCLUSIVE lock on interceptions. Batch
    writes give up after write_timeout, records spill, and all land once the lock is
    released."""
    engine = pg_engine
    registry = CollectorRegistry()
    rec = recorder(engine, tmp_path, registry, ping_timeout=0.3, write_timeout=0.5)
    await rec.start()
    user = uuid.uuid4()
    records = [r for n in range(10) for r in family(user, n)]
    locker = await asyncpg.connect(pg_url)
    try:
        tx = locker.transaction()
        await tx.start()
        await locker.execute("LOCK TABLE interceptions IN ACCESS EXCLUSIVE MODE")
        for r in records:
            rec.record(r)
        async with asyncio.timeout(T):
            await rec.wait_until(lambda: counter(registry, "records_spilled") > 0)
        await tx.rollback()
    finally:
        await locker.close()
    async with asyncio.timeout(T):
        await rec.wait_idle()
        await rec.close()
    starts = [r.id for r in records if isinstance(r, InterceptionStarted)]
    assert await count_ids(engine, Interception, starts) == (10, 10)
    assert await count_ids(
        engine, TokenUsage, [r.id for r in records if isinstance(r, TokenUsageRecord)]
    ) == (10, 10)
    assert counter(registry, "records_replayed") == counter(registry, "records_spilled")


async def test_refused_record_is_isolated(pg_engine: AsyncEngine, tmp_path: Path) -> None:
    """PostgreSQL refuses NUL characters in text: that one record is kept aside and
    counted as dropped; the rest of its batch lands."""
    engine = pg_engine
    registry = CollectorRegistry()
    rec = recorder(engine, tmp_path, registry, batch_size=50, flush_interval=0.05)
    await rec.start()
    records = family(uuid.uuid4(), 1)
    bad = PromptRecord(interception_id=records[0].id, prompt="nul \x00 here")
    for r in [records[0], bad, *records[1:]]:
        rec.record(r)
    async with asyncio.timeout(T):
        await rec.wait_idle()
        await rec.close()
    assert await count_ids(engine, Interception, [records[0].id]) == (1, 1)
    assert await count_ids(engine, UserPrompt, [bad.id]) == (0, 0)
    assert counter(registry, "records_dropped") == 1
    rejected = SpillFile(tmp_path / "spill" / "recording-spill.jsonl").rejected_path
    assert [record_from_json(x).id for x in rejected.read_bytes().splitlines()] == [bad.id]
