"""The :class:`Recorder` facade: the one object the gateway records through.

It wires a :class:`~aibridge.recording.recorder._batches.BatchWriter` (every record, queued
and written in batches) and a
:class:`~aibridge.recording.recorder._replay.SpillReplayer` (the spill file, its replay and
the journal recovery) to one sink, and runs their background tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession

from aibridge.recording.journal import Journal
from aibridge.recording.metrics import RecorderMetrics
from aibridge.recording.recorder._batches import BatchWriter
from aibridge.recording.recorder._replay import SpillReplayer
from aibridge.recording.records import InterceptionEnded, InterceptionStarted, Record
from aibridge.recording.sink import DatabaseSink, Sink, database_sink
from aibridge.recording.spill import SpillFile

log = logging.getLogger("aibridge.recording.recorder")

SPILL_FILE_NAME = "recording-spill.jsonl"
"""Name of the spill file inside the data directory."""


class Recorder:
    """Records interceptions and their children without putting the database on the
    request path. Start with :meth:`start`, stop with :meth:`close`.

    Knobs (all injectable for tests): ``batch_size`` and ``flush_interval`` (seconds) shape
    batches; ``queue_size`` bounds the in-memory queue; ``ping_timeout`` bounds a
    "database up?" probe; ``write_timeout`` bounds one batch transaction;
    ``retry_initial``/``retry_max`` the back-off of a failed batch; ``replay_interval`` how
    often the replayer looks at the spill file (it is also woken when the database comes
    back); ``replay_chunk`` records per replay transaction; ``pending_ends_limit`` how many
    early end records are kept in memory (the rest are spilled); ``pending_retry_interval``
    how often they are retried when no new records arrive. ``journal`` makes recording
    crash-safe (see the package docstring); without one, a process kill loses what is in
    memory.
    """

    def __init__(
        self,
        sink: Sink,
        spill_path: Path,
        *,
        # Small on purpose: the writer thread shares the gateway's core, and a batch's
        # SQLite work delays whatever request is in flight. With time-ordered ids a
        # request costs ~45 µs there, so 64 records (~16 requests) stay under a
        # millisecond, and each commit (WAL frames for every page the batch touched)
        # is shared by twice as many requests as with 32 (docs/benchmarks.md "Round 12").
        batch_size: int = 64,
        flush_interval: float = 0.05,
        queue_size: int = 10_000,
        ping_timeout: float = 2.0,
        write_timeout: float = 10.0,
        retry_initial: float = 0.1,
        retry_max: float = 5.0,
        replay_interval: float = 5.0,
        replay_chunk: int = 500,
        pending_ends_limit: int = 10_000,
        pending_retry_interval: float = 1.0,
        fsync: bool = True,
        serialize_writes: bool = False,
        journal: Journal | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if batch_size < 1 or queue_size < 1 or replay_chunk < 1:
            raise ValueError("batch_size, queue_size and replay_chunk must be positive")
        self._sink = sink
        self._journal = journal
        self.replica: str | None = None
        """This process's replica identity (set by :meth:`start` when journaling)."""
        self.metrics = RecorderMetrics.for_registry(registry)
        self._written = self.metrics.written_by_kind
        # Set whenever a part makes progress (a batch written or failed, a spill, a
        # replay pass): what wait_until listens to.
        self._progress = asyncio.Event()
        # SQLite has one writer at a time: two transactions of ours racing for its lock
        # end in the driver's busy-wait (sleeps of 1-100 ms), so take turns here instead.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if serialize_writes else None
        self._spill = SpillReplayer(
            SpillFile(spill_path, fsync=fsync),
            sink,
            metrics=self.metrics,
            journal=journal,
            progress=self._progress,
            replay_chunk=replay_chunk,
            replay_interval=replay_interval,
            probe_timeout=ping_timeout,
            write_timeout=write_timeout,
        )
        self._batches = BatchWriter(
            self._sink_write,
            sink.ping,
            self._spill,
            metrics=self.metrics,
            journal=journal,
            progress=self._progress,
            batch_size=batch_size,
            flush_interval=flush_interval,
            queue_size=queue_size,
            write_timeout=write_timeout,
            ping_timeout=ping_timeout,
            retry_initial=retry_initial,
            retry_max=retry_max,
            pending_ends_limit=pending_ends_limit,
            pending_retry_interval=pending_retry_interval,
        )
        # Bound once: every record() call goes straight to the batch writer's queue.
        self._put = self._batches.put
        self._tasks: list[asyncio.Task[None]] = []
        self.metrics.track_queue(lambda: len(self._batches.queue))

    @classmethod
    def for_database(
        cls,
        sessions: Callable[[], AsyncSession],
        data_dir: Path,
        *,
        worker: int = 0,
        **knobs: Any,
    ) -> Recorder:
        """A recorder writing to the database, spilling to ``data_dir/recording-spill.jsonl``
        and journaling in ``data_dir/recording-journal`` (slot ``worker`` when free).

        The sink is chosen by :func:`database_sink`. Writes through a :class:`DatabaseSink`
        on SQLite are serialised (see ``serialize_writes``); the SQLite sink's single
        writer thread serialises them by itself."""
        knobs.setdefault("journal", Journal(data_dir, slot=worker))
        sink = database_sink(sessions)
        bind = getattr(sessions, "kw", {}).get("bind")
        dialect = getattr(getattr(bind, "dialect", None), "name", None)
        knobs.setdefault("serialize_writes", isinstance(sink, DatabaseSink) and dialect == "sqlite")
        return cls(sink, data_dir / SPILL_FILE_NAME, **knobs)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the writer, spiller and replayer; replay anything a previous run spilled
        or left unacknowledged in the journal."""
        if self._tasks:
            return
        if self._journal is not None:
            await self._spill.recover(self._journal)
            self.replica = self._journal.replica
        await self._spill.check()
        self._tasks = [
            asyncio.create_task(self._batches.run(), name="recorder-writer"),
            asyncio.create_task(self._spill.run_spiller(), name="recorder-spiller"),
            asyncio.create_task(self._spill.run_replayer(self._batches), name="recorder-replayer"),
        ]
        if self._spill.dirty or self._spill.abandoned is not None:
            self._spill.wake()

    # The timeout is part of the contract: shutdown must finish even if the DB hangs.
    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Write everything still in memory to the database, or to the spill file when the
        database is down or ``timeout`` expires. Records arriving afterwards are spilled."""
        if self._batches.closed:
            return
        self._batches.close()
        writer, spiller, replayer = self._tasks or (None, None, None)
        if writer is not None:
            try:
                async with asyncio.timeout(timeout):
                    await writer
            except TimeoutError:
                log.warning("recorder: database writes did not finish in time; spilling the rest")
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
        for task in (replayer, spiller):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._spill.spill(self._batches.take_leftovers())
        await self._spill.flush()
        if self._journal is not None:
            # Everything journaled is now in the database or the spill file, unless a
            # spill failed: then it stays in the journal for the next start.
            self._journal.close()
        sink_close = getattr(self._sink, "close", None)
        if sink_close is not None:
            try:
                await sink_close()
            except Exception:
                log.exception("recorder: closing the sink failed")
        self._progress.set()

    # ------------------------------------------------------------------ request path

    async def _sink_write(self, records: Sequence[Record]) -> list[InterceptionEnded]:
        if self._write_lock is None:
            return await self._sink.write(records)
        async with self._write_lock:
            return await self._sink.write(records)

    def record(self, rec: Record) -> None:
        """Queue any record without waiting: journaled first, spilled when the queue is
        full. An interception start is stamped with this replica's identity (which the
        restart sweep uses to end what a killed run left open)."""
        if type(rec) is InterceptionStarted and rec.replica_id is None:
            rec.replica_id = self.replica
        self._put(rec)

    # ------------------------------------------------------------------ introspection

    @property
    def healthy(self) -> bool:
        """False while the last database write failed."""
        return self._batches.healthy

    @property
    def queue_depth(self) -> int:
        """Records waiting in memory."""
        return len(self._batches.queue)

    @property
    def in_flight(self) -> int:
        """Records taken from the queue by the writer and not yet written (held on failure)."""
        return len(self._batches.inflight)

    @property
    def pending_ends(self) -> int:
        """End records waiting for their interception's start row."""
        return self._batches.pending_ends

    def _idle(self) -> bool:
        batches, spill = self._batches, self._spill
        return spill.abandoned is None and not (
            batches.queue or batches.inflight or spill.buffer or batches.pending_ends or spill.dirty
        )

    async def wait_idle(self) -> None:
        """Wait until everything recorded so far is in the database (queue empty, nothing
        held, nothing spilled left to replay). Wrap in ``asyncio.timeout``."""
        await self.wait_until(self._idle)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, re-checking whenever the recorder makes progress
        (a batch written or failed, a spill, a replay pass). Wrap in ``asyncio.timeout``."""
        while not predicate():
            self._progress.clear()
            if predicate():
                break
            await self._progress.wait()
