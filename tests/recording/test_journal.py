"""The recorder's crash journal and replica identity, against real databases and files.

A process kill itself is tested with real subprocesses in tests/system/test_crash_recovery.py; here
the journal's files are checked directly and "what a killed run left" is written as the
files a killed run leaves.
"""

from __future__ import annotations

import asyncio
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from aibridge.recording import (
    InterceptionEnded,
    InterceptionStarted,
    PromptRecord,
    Recorder,
    TokenUsageRecord,
    record_to_json,
)
from aibridge.recording.journal import JOURNAL_DIR_NAME, REPLICA_ID_FILE, Journal
from aibridge.store.db import session_factory
from aibridge.store.models import Interception, TokenUsage, UserPrompt
from aibridge.store.types import utcnow

T = 30  # seconds: upper bound for any await that could hang
FAST: dict[str, Any] = {"flush_interval": 0.01, "replay_interval": 0.2, "retry_initial": 0.02}
USER = uuid.UUID("00000000-0000-4000-8000-000000000001")


def started(**kw: Any) -> InterceptionStarted:
    """A start record of provider "p"."""
    return InterceptionStarted(
        initiator_id=USER, provider="openai", provider_name="p", model="m", **kw
    )


def segments(data_dir: Path, slot: int = 0) -> list[Path]:
    """The journal segments of ``slot``, oldest first."""
    return sorted((data_dir / JOURNAL_DIR_NAME / str(slot)).glob("*.journal"))


def journaled(data_dir: Path, slot: int = 0) -> list[bytes]:
    """Every line in the slot's segments."""
    return [line for p in segments(data_dir, slot) for line in p.read_bytes().splitlines()]


async def open_recorder(
    engine: AsyncEngine,
    data_dir: Path,
    registry: CollectorRegistry | None = None,
    journal: Journal | None = None,
) -> Recorder:
    """A started recorder on the real database, journaling in ``data_dir``."""
    rec = Recorder.for_database(
        session_factory(engine),
        data_dir,
        registry=registry or CollectorRegistry(),
        journal=journal or Journal(data_dir),
        **FAST,
    )
    async with asyncio.timeout(T):
        await rec.start()
    return rec


async def rows(engine: AsyncEngine, model: Any, **where: Any) -> list[Any]:
    """Rows of ``model`` matching ``where``."""
    async with session_factory(engine)() as session:
        stmt = select(model).filter_by(**where)
        return list((await session.scalars(stmt)).all())


async def test_records_are_journaled_before_they_are_batched_and_trimmed_once_written(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    # Trimmed as soon as everything is acknowledged (by default only once it holds 256 KiB).
    rec = await open_recorder(engine, tmp_path, journal=Journal(tmp_path, trim_bytes=1))
    start = started()
    rec.record(start)
    # No await since: the writer has not run, yet the start is on disk (it is written at
    # once: before the upstream call).
    assert journaled(tmp_path) == [record_to_json(start)]
    usage = TokenUsageRecord(interception_id=start.id, input=7, output=3)
    end = InterceptionEnded(id=start.id)
    rec.record(usage)
    rec.record(end)
    # Still no await: the usage is on disk too (an end is written at once, with what was
    # buffered before it).
    assert journaled(tmp_path) == [record_to_json(r) for r in (start, usage, end)]
    [segment] = segments(tmp_path)
    assert stat.S_IMODE(segment.stat().st_mode) == 0o600
    async with asyncio.timeout(T):
        await rec.wait_idle()
    # Acknowledged once committed: the segment is empty again.
    assert journaled(tmp_path) == []
    assert [r.ended_at for r in await rows(engine, Interception, id=start.id)] == [end.ended_at]
    await rec.close()
    assert segments(tmp_path) == []  # a clean shutdown leaves no segment


async def test_what_a_killed_run_left_is_replayed_once_and_a_torn_line_costs_only_itself(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    # What a run killed mid-write leaves: journaled records, the last line torn.
    start = started(started_at=utcnow())
    usage = TokenUsageRecord(interception_id=start.id, input=11, output=5)
    prompt = PromptRecord(interception_id=start.id, prompt="hello")
    end = InterceptionEnded(id=start.id, ended_at=utcnow())
    torn = record_to_json(TokenUsageRecord(interception_id=start.id))[:40]
    lines = [record_to_json(r) for r in (start, usage, prompt, end)] + [torn]
    slot_dir = tmp_path / JOURNAL_DIR_NAME / "0"
    slot_dir.mkdir(parents=True)
    # The same records twice (the segment was written, then the records acknowledged
    # but the segment not yet trimmed): still written once.
    (slot_dir / "000000000003.journal").write_bytes(b"\n".join(lines[:4]) + b"\n")
    (slot_dir / "000000000004.journal").write_bytes(b"\n".join(lines))

    registry = CollectorRegistry()
    rec = await open_recorder(engine, tmp_path, registry)
    async with asyncio.timeout(T):
        await rec.wait_idle()
    [row] = await rows(engine, Interception, id=start.id)
    assert (row.ended_at, row.error_type) == (end.ended_at, None)
    assert [(u.input_tokens, u.output_tokens) for u in await rows(engine, TokenUsage)] == [(11, 5)]
    assert [p.prompt for p in await rows(engine, UserPrompt)] == ["hello"]
    assert registry.get_sample_value("aibridge_recorder_records_dropped_total") == 1
    assert registry.get_sample_value("aibridge_recorder_records_replayed_total") == 8
    await rec.close()
    assert segments(tmp_path) == []


async def test_restart_ends_only_what_this_replicas_previous_run_left_open(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    # Another replica (its own data directory) on the same database, with a live request.
    other = await open_recorder(engine, tmp_path / "other")
    theirs = started()
    other.record(theirs)
    async with asyncio.timeout(T):
        await other.wait_idle()

    first = await open_recorder(engine, tmp_path / "me")
    left_open = started()
    first.record(left_open)
    await first.close()  # the request never ended (a process kill looks the same here)

    second = await open_recorder(engine, tmp_path / "me")
    assert second.replica == first.replica != other.replica
    mine = started()
    second.record(mine)  # after the restart: live
    async with asyncio.timeout(T):
        await second.wait_idle()

    [row] = await rows(engine, Interception, id=left_open.id)
    assert row.replica_id == first.replica
    assert row.ended_at is not None and row.ended_at >= row.started_at
    assert (row.error_type, row.error_message) == (
        "gateway_restart",
        "the gateway stopped before the interception ended",
    )
    for live in (theirs, mine):
        [row] = await rows(engine, Interception, id=live.id)
        assert (row.ended_at, row.error_type) == (None, None)
    await second.close()
    await other.close()


def test_processes_sharing_a_data_directory_never_share_a_replica_identity(
    tmp_path: Path,
) -> None:
    loop = asyncio.new_event_loop()
    try:
        a, b, c = Journal(tmp_path), Journal(tmp_path), Journal(tmp_path, slot=3)
        a.open(loop)
        b.open(loop)  # slot 0 is taken (flock): the next free one
        c.open(loop)
        replica_id = (tmp_path / REPLICA_ID_FILE).read_text().strip()
        assert stat.S_IMODE((tmp_path / REPLICA_ID_FILE).stat().st_mode) == 0o600
        assert (a.slot, b.slot, c.slot) == (0, 1, 3)
        assert (a.replica, b.replica, c.replica) == (
            f"{replica_id}:0",
            f"{replica_id}:1",
            f"{replica_id}:3",
        )
        a.close()
        gone = Journal(tmp_path, slot=2)
        gone.open(loop)
        gone.close()  # a slot a process used and that is free now
        again = Journal(tmp_path)
        recovered = again.open(loop)
        assert again.replica == f"{replica_id}:0"
        # Slot 2 is free: taken over; slots 1 and 3 are live: left alone.
        assert recovered.replicas == [f"{replica_id}:0", f"{replica_id}:2"]
        for journal in (b, c, again):
            journal.close()
    finally:
        loop.close()


@pytest.mark.parametrize("acknowledged", [True, False])
def test_sealed_segments_are_deleted_once_acknowledged(tmp_path: Path, acknowledged: bool) -> None:
    loop = asyncio.new_event_loop()
    try:
        journal = Journal(tmp_path, segment_bytes=600)
        journal.open(loop)
        records = [InterceptionEnded(id=uuid.uuid4()) for _ in range(12)]
        for r in records:
            journal.append(r)  # an end is written at once
        assert len(segments(tmp_path)) >= 3
        assert len(journaled(tmp_path)) == 12
        if acknowledged:
            journal.ack(records)
            assert journaled(tmp_path) == []
            journal.close()
            assert segments(tmp_path) == []
        else:
            journal.ack(records[:-1])
            journal.close()
            # The segment of the unacknowledged record stays for the next start; the
            # others are gone.
            [left] = segments(tmp_path)
            lines = left.read_bytes().splitlines()
            assert record_to_json(records[-1]) in lines
            assert len(lines) < len(records)
    finally:
        loop.close()
