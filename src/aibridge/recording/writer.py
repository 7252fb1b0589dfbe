"""The recorder: a synchronous start record, then a bounded queue drained in batches.

Request path cost:

* :meth:`Recorder.record_interception_start` is the only database wait a request has,
  bounded by ``start_timeout``. On failure (or while the database is known to be down)
  the start record is queued like every other record and the request goes on. Start
  records are group-committed (:mod:`aibridge.recording.starts`).
* Every other ``record_*`` method appends to an in-memory deque and bumps a counter; it
  never awaits anything.

Background:

* The writer task takes up to ``batch_size`` records or whatever arrived within
  ``flush_interval`` seconds, whichever comes first, and writes them in one transaction
  through the :class:`~aibridge.recording.sink.Sink`. A batch that fails because the
  database is down or slow is held and retried with exponential back-off, so the queue
  fills up (back-pressure); once it is full, new records go to the spill file. A batch the
  database refuses while it is otherwise healthy (a "poison" record) is retried record by
  record and the refused ones are kept in ``<spill>.rejected`` and counted as dropped.
* End records whose interception row does not exist yet (its start is still in the spill
  file, say) are kept and retried with later batches, so ordering between the live path
  and replay never loses an end.
* The replayer task re-inserts spilled records once the database answers again. Inserts
  are idempotent by primary key, so a crash between a write and the deletion of the
  replayed file causes no duplicates.
* :meth:`Recorder.close` drains the queue to the database, or to the spill file when the
  database is down or the timeout expires.

Crash safety (:mod:`aibridge.recording.journal`): every record queued by :meth:`record`
is appended to the journal first and acknowledged there once it is in the database, the
spill file or the rejected file. At :meth:`Recorder.start` what previous runs left
unacknowledged is moved to the spill file (and so replayed like any spill); once that
first replay is done, the interceptions previous runs of this replica left open are
ended with ``error_type = gateway_restart``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession

from aibridge.recording.failures import TransientWriteError, refuses_data
from aibridge.recording.journal import Journal
from aibridge.recording.metrics import RecorderMetrics
from aibridge.recording.records import (
    InterceptionEnded,
    InterceptionStarted,
    PromptRecord,
    Record,
    ThoughtRecord,
    TokenUsageRecord,
    ToolUsageRecord,
)
from aibridge.recording.sink import DatabaseSink, Sink, database_sink
from aibridge.recording.spill import SpillFile
from aibridge.recording.spiller import Spiller
from aibridge.recording.starts import StartWriter
from aibridge.store.types import utcnow

log = logging.getLogger(__name__)

SPILL_FILE_NAME = "recording-spill.jsonl"
"""Name of the spill file inside the data directory."""


async def _wait(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait for ``event`` at most ``seconds`` (forever when None); True if it was set."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


class Recorder:
    """Records interceptions and their children without putting the database on the
    request path. Start with :meth:`start`, stop with :meth:`close`.

    Knobs (all injectable for tests): ``batch_size`` and ``flush_interval`` (seconds) shape
    batches; ``queue_size`` bounds the in-memory queue; ``start_timeout`` bounds the
    synchronous start write; ``write_timeout`` bounds one batch transaction;
    ``retry_initial``/``retry_max`` the back-off of a failed batch; ``replay_interval`` how
    often the replayer looks at the spill file (it is also woken when the database comes
    back); ``replay_chunk`` records per replay transaction; ``pending_ends_limit`` how many
    early end records are kept in memory (the rest are spilled); ``pending_retry_interval``
    how often they are retried when no new records arrive. ``journal`` makes recording
    crash-safe (see the module docstring); without one, a process kill loses what is in
    memory.
    """

    def __init__(
        self,
        sink: Sink,
        spill_path: Path,
        *,
        batch_size: int = 256,
        flush_interval: float = 0.05,
        queue_size: int = 10_000,
        start_timeout: float = 2.0,
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
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._queue_size = queue_size
        self._start_timeout = start_timeout
        self._write_timeout = write_timeout
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._replay_interval = replay_interval
        self._replay_chunk = replay_chunk
        self._pending_limit = pending_ends_limit
        self._pending_retry = pending_retry_interval
        self._journal = journal
        self.replica: str | None = None
        """This process's replica identity (set by :meth:`start` when journaling)."""
        # Replicas whose earlier runs may have left interceptions open, and when this run
        # started: ended once the first replay is done (None when nothing is left to do).
        self._abandoned: tuple[list[str], datetime] | None = None

        self.metrics = RecorderMetrics.for_registry(registry)
        self._enqueued = self.metrics.enqueued_by_kind
        self._written = self.metrics.written_by_kind

        self._queue: deque[Record] = deque()
        # Set when the queue becomes non-empty or reaches a full batch (not on every put).
        self._has_items = asyncio.Event()
        self._inflight: list[Record] = []
        # Early end records, split by origin so written/replayed counters stay exact.
        self._pending_live: list[InterceptionEnded] = []
        self._pending_replay: list[InterceptionEnded] = []
        self._replay_wakeup = asyncio.Event()
        self._progress = asyncio.Event()
        self._spiller = Spiller(
            SpillFile(spill_path, fsync=fsync),
            metrics=self.metrics,
            journal=journal,
            progress=self._progress,
            replay_chunk=replay_chunk,
        )
        self._closing = asyncio.Event()
        self._closed = False
        self._give_up = False
        self._healthy = True
        self._tasks: list[asyncio.Task[None]] = []
        # Group commit of start records.
        self._starts = StartWriter(self._sink_write, start_timeout)
        # SQLite has one writer at a time: two transactions of ours racing for its lock
        # end in the driver's busy-wait (sleeps of 1-100 ms), so take turns here instead.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if serialize_writes else None
        self.metrics.track_queue(lambda: len(self._queue))

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
            await self._recover_journal(self._journal)
        await self._spiller.check()
        self._tasks = [
            asyncio.create_task(self._writer_loop(), name="recorder-writer"),
            asyncio.create_task(self._spiller.run(), name="recorder-spiller"),
            asyncio.create_task(self._replay_loop(), name="recorder-replayer"),
        ]
        if self._spiller.dirty or self._abandoned is not None:
            self._replay_wakeup.set()

    async def _recover_journal(self, journal: Journal) -> None:
        """Open the journal and move what earlier runs left in it to the spill file."""
        started = utcnow()
        recovered = await asyncio.to_thread(journal.open, asyncio.get_running_loop())
        self.replica = journal.replica
        if recovered.lines:
            log.warning(
                "recorder: replaying records a previous run left unacknowledged",
                extra={"records": len(recovered.lines), "replicas": recovered.replicas},
            )
            # Fsynced before the segments go: a crash in between replays them twice,
            # which the idempotent writes absorb.
            await self._spiller.keep(recovered.lines)
        await asyncio.to_thread(journal.discard, recovered.segments)
        self._abandoned = (recovered.replicas, started)

    # The timeout is part of the contract: shutdown must finish even if the DB hangs.
    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Write everything still in memory to the database, or to the spill file when the
        database is down or ``timeout`` expires. Records arriving afterwards are spilled."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        self._has_items.set()
        # Let start writes in flight finish (bounded by start_timeout) before the sink goes.
        await self._starts.drain(timeout)
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
        leftovers: list[Record] = [*self._inflight, *self._queue]
        leftovers += [*self._pending_live, *self._pending_replay]
        self._inflight, self._pending_live, self._pending_replay = [], [], []
        self._queue.clear()
        await self._spiller.spill(leftovers)
        await self._spiller.flush()
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

    async def record_interception_start(self, rec: InterceptionStarted) -> bool:
        """Write the start record now (bounded by ``start_timeout``). Returns False when it
        was queued instead (database down or slow); the request should carry on either way."""
        if self.replica is not None and rec.replica_id is None:
            rec.replica_id = self.replica
        if self._closed or not self._healthy:
            self.metrics.start_fallbacks.inc()
            self.record(rec)
            return False
        try:
            await self._starts.join(rec)
        except asyncio.CancelledError:
            # The request was cancelled mid-write; the row may or may not be there. Queue
            # it (inserts are idempotent) so that its end record is never orphaned.
            self.record(rec)
            raise
        except Exception as exc:
            self._healthy = False
            self.metrics.write_errors.inc()
            self.metrics.start_fallbacks.inc()
            log.warning(
                "recorder: interception start not written synchronously; queued instead",
                extra={"interception_id": str(rec.id), "error": type(exc).__name__},
            )
            self.record(rec)
            return False
        self._written[rec.kind].inc()
        return True

    async def _sink_write(self, records: Sequence[Record]) -> list[InterceptionEnded]:
        if self._write_lock is None:
            return await self._sink.write(records)
        async with self._write_lock:
            return await self._sink.write(records)

    def record(self, rec: Record) -> None:
        """Queue any record without waiting (spilled when the queue is full)."""
        if self._closed:
            self._spiller.spill_late(rec)
            return
        if self._journal is not None:
            self._journal.append(rec)
        queue = self._queue
        if len(queue) >= self._queue_size:
            self._spiller.add(rec)
            return
        queue.append(rec)
        depth = len(queue)
        if depth == 1 or depth == self._batch_size:
            self._has_items.set()
        self._enqueued[rec.kind].inc()

    def record_ended(self, rec: InterceptionEnded) -> None:
        """Queue the end of an interception."""
        self.record(rec)

    def record_token_usage(self, rec: TokenUsageRecord) -> None:
        """Queue the token usage of one upstream call."""
        self.record(rec)

    def record_prompt(self, rec: PromptRecord) -> None:
        """Queue the user prompt."""
        self.record(rec)

    def record_tool_usage(self, rec: ToolUsageRecord) -> None:
        """Queue one tool call."""
        self.record(rec)

    def record_thought(self, rec: ThoughtRecord) -> None:
        """Queue one model thought."""
        self.record(rec)

    # ------------------------------------------------------------------ introspection

    @property
    def healthy(self) -> bool:
        """False while the last database write failed (start records then skip the DB)."""
        return self._healthy

    @property
    def queue_depth(self) -> int:
        """Records waiting in memory."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Records taken from the queue by the writer and not yet written (held on failure)."""
        return len(self._inflight)

    @property
    def pending_ends(self) -> int:
        """End records waiting for their interception's start row."""
        return len(self._pending_live) + len(self._pending_replay)

    def _idle(self) -> bool:
        return self._abandoned is None and not (
            self._queue
            or self._inflight
            or self._spiller.buffer
            or self._pending_live
            or self._pending_replay
            or self._spiller.dirty
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

    # ------------------------------------------------------------------ writer

    async def _writer_loop(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch is None:
                if self._pending_live or self._pending_replay:
                    # Last chance for early ends whose start arrived meanwhile.
                    with contextlib.suppress(TransientWriteError):
                        await self._write_resilient([], replay=False)
                return
            if self._give_up:
                # Held like a batch in flight: if close() cancels us mid-spill, it
                # spills these itself.
                self._inflight = batch
                await self._spiller.spill(batch)
                self._inflight = []
            else:
                await self._write_held(batch)
            self._progress.set()

    async def _next_batch(self) -> list[Record] | None:
        """Up to ``batch_size`` records, waiting at most ``flush_interval`` after the first.
        ``[]`` means "retry pending ends"; None means closing with nothing left."""
        queue, event = self._queue, self._has_items
        while not queue:
            if self._closing.is_set():
                return None
            event.clear()
            if queue or self._closing.is_set():
                continue
            pending = self._pending_live or self._pending_replay
            if not await _wait(event, self._pending_retry if pending else None):
                return []
        if len(queue) < self._batch_size and not self._closing.is_set():
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._flush_interval
            while len(queue) < self._batch_size and not self._closing.is_set():
                event.clear()
                remaining = deadline - loop.time()
                if len(queue) >= self._batch_size or remaining <= 0:
                    break
                if not await _wait(event, remaining):
                    break
        count = min(self._batch_size, len(queue))
        return [queue.popleft() for _ in range(count)]

    async def _write_held(self, batch: list[Record]) -> None:
        """Write ``batch``, holding it and backing off while the database is unavailable."""
        # Not cleared in a ``finally``: if close() cancels us mid-write, it spills this.
        self._inflight = batch
        delay = self._retry_initial
        while True:
            try:
                await self._write_resilient(batch, replay=False)
            except TransientWriteError:
                self._healthy = False
                self._progress.set()
                if self._closing.is_set():
                    # Shutting down with the database unavailable: everything left goes
                    # to the spill file rather than waiting for it.
                    self._give_up = True
                    await self._spiller.spill(batch)
                    self._inflight = []
                    return
                await _wait(self._closing, delay)
                delay = min(delay * 2, self._retry_max)
                continue
            self._inflight = []
            self._set_healthy()
            return

    def _set_healthy(self) -> None:
        self._healthy = True
        if self._spiller.dirty:
            self._replay_wakeup.set()

    async def _write_resilient(self, records: list[Record], *, replay: bool) -> None:
        """Write ``records`` (plus pending ends) in one transaction. If the database refuses
        them while healthy, write one by one and reject the refused ones. Raises
        :class:`TransientWriteError` when the database is unavailable."""
        try:
            await self._attempt(records, replay=replay, with_pending=True)
            return
        except Exception as exc:
            self.metrics.write_errors.inc()
            if await self._is_transient(exc):
                raise TransientWriteError(str(exc)) from exc
            log.error(
                "recorder: the database refused a batch; retrying its records one by one",
                extra={"records": len(records), "error": repr(exc)},
            )
        for rec in records:
            try:
                await self._attempt([rec], replay=replay, with_pending=False)
            except Exception as exc:
                self.metrics.write_errors.inc()
                if await self._is_transient(exc):
                    raise TransientWriteError(str(exc)) from exc
                await self._reject(rec, exc)

    async def _attempt(self, records: list[Record], *, replay: bool, with_pending: bool) -> None:
        pend_live: list[InterceptionEnded] = []
        pend_replay: list[InterceptionEnded] = []
        if with_pending:
            pend_live, self._pending_live = self._pending_live, []
            pend_replay, self._pending_replay = self._pending_replay, []
        all_records: list[Record] = [*records, *pend_live, *pend_replay]
        if not all_records:
            return
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._write_timeout):
                missing = await self._sink_write(all_records)
        except BaseException:
            self._pending_live[:0] = pend_live
            self._pending_replay[:0] = pend_replay
            raise
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        missing_ids = {id(e) for e in missing}
        if self._journal is not None:
            self._journal.ack(
                [r for r in all_records if id(r) not in missing_ids] if missing else all_records
            )
        replayed = 0
        for rec, from_replay in (
            *((r, replay) for r in records),
            *((r, False) for r in pend_live),
            *((r, True) for r in pend_replay),
        ):
            if id(rec) in missing_ids:
                assert isinstance(rec, InterceptionEnded)
                (self._pending_replay if from_replay else self._pending_live).append(rec)
            elif from_replay:
                replayed += 1
            else:
                self._written[rec.kind].inc()
        if replayed:
            self.metrics.replayed.inc(replayed)
        if missing:
            # Wake the writer if it is waiting without a deadline, so that it retries
            # these (the replayer adds some while the writer is idle).
            self._has_items.set()
        await self._trim_pending()
        self._progress.set()

    async def _trim_pending(self) -> None:
        """Spill the oldest early ends beyond ``pending_ends_limit`` (replayed later)."""
        excess = len(self._pending_live) + len(self._pending_replay) - self._pending_limit
        if excess <= 0:
            return
        spill: list[Record] = []
        for pending in (self._pending_replay, self._pending_live):
            take = min(excess, len(pending))
            spill += pending[:take]
            del pending[:take]
            excess -= take
        await self._spiller.spill(spill)

    async def _is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` means "database unavailable" (keep and retry) rather than "the
        database refuses this data". Anything not clearly a refusal counts as unavailable:
        retrying too long is cheap, rejecting a good record loses it."""
        if not refuses_data(exc):
            return True
        try:
            async with asyncio.timeout(self._start_timeout):
                await self._sink.ping()
        except Exception:
            return True
        return False

    async def _reject(self, rec: Record, exc: BaseException) -> None:
        log.error(
            "recorder: the database refused a record; kept in %s",
            self._spiller.file.rejected_path,
            extra={"kind": rec.kind, "record_id": str(rec.id), "error": repr(exc)},
        )
        await self._spiller.reject(rec)

    # ------------------------------------------------------------------ replay

    async def _replay_loop(self) -> None:
        while True:
            await _wait(self._replay_wakeup, self._replay_interval)
            self._replay_wakeup.clear()
            if not self._healthy:
                # Probe: nothing else may flip health back if the queue is empty.
                try:
                    async with asyncio.timeout(self._start_timeout):
                        await self._sink.ping()
                except Exception:
                    continue
                self._healthy = True
            if not self._spiller.dirty and self._abandoned is None:
                continue
            try:
                if self._spiller.dirty:
                    await self._spiller.replay_once(self._replay_write)
                if self._abandoned is not None:
                    await self._end_abandoned(*self._abandoned)
            except TransientWriteError:
                self._healthy = False
            except OSError:
                log.exception("recorder: cannot read the spill file; will retry")
            self._progress.set()

    async def _replay_write(self, records: list[Record]) -> None:
        await self._write_resilient(records, replay=True)
        self._set_healthy()

    async def _end_abandoned(self, replicas: list[str], before: datetime) -> None:
        """End what earlier runs of ``replicas`` left open. Runs after a complete replay
        pass (which wrote what those runs journaled or spilled) and a retry of the ends
        still waiting for their start: a real end must never lose to ``gateway_restart``."""
        await self._write_resilient([], replay=True)
        try:
            async with asyncio.timeout(self._write_timeout):
                ended = await self._sink.end_abandoned(replicas, before, utcnow())
        except Exception as exc:
            self.metrics.write_errors.inc()
            raise TransientWriteError(str(exc)) from exc
        self._abandoned = None
        if ended:
            log.warning(
                "recorder: ended interceptions a previous run left open (gateway_restart)",
                extra={"interceptions": ended, "replicas": replicas},
            )
