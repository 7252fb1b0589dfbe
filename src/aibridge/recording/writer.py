"""The recorder: a synchronous start record, then a bounded queue drained in batches.

Request path cost:

* :meth:`Recorder.record_interception_start` is the only database wait a request has,
  bounded by ``start_timeout``. On failure (or while the database is known to be down)
  the start record is queued like every other record and the request goes on. Start
  records are group-committed: one writer task writes every start that arrived while the
  previous write was in flight in a single transaction, so N concurrent requests cost one
  transaction, not N (and, on SQLite, never fight each other for the write lock).
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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession

from aibridge.recording.metrics import RecorderMetrics
from aibridge.recording.records import (
    InterceptionEnded,
    InterceptionStarted,
    PromptRecord,
    Record,
    ThoughtRecord,
    TokenUsageRecord,
    ToolUsageRecord,
    record_from_json,
    record_to_json,
)
from aibridge.recording.sink import DatabaseSink, Sink
from aibridge.recording.spill import SpillFile, read_lines
from aibridge.recording.sqlite_sink import SqliteSink

log = logging.getLogger(__name__)

SPILL_FILE_NAME = "recording-spill.jsonl"
"""Name of the spill file inside the data directory."""


def database_sink(sessions: Callable[[], AsyncSession]) -> Sink:
    """The sink for the database behind ``sessions``: a :class:`SqliteSink` (one writer
    thread, one handoff per transaction) for a SQLite file, else a :class:`DatabaseSink`."""
    bind = getattr(sessions, "kw", {}).get("bind")
    dialect = getattr(bind, "dialect", None)
    if dialect is not None and dialect.name == "sqlite":
        path = bind.url.database  # type: ignore[union-attr]
        if path and path != ":memory:" and not path.startswith("file:"):
            return SqliteSink(path, dialect)
    return DatabaseSink(sessions)


class _TransientWriteError(Exception):
    """The database is unreachable or too slow: keep the records and retry later."""


def _refuses_data(exc: BaseException) -> bool:
    """True for errors caused by the records themselves: integrity or data exceptions
    (SQLSTATE classes 22 and 23) and values that could not be bound. Connection errors, lock
    timeouts and cancelled statements (an asyncpg cancel can land on the next statement of
    a connection) are not."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        if orig is None:
            return False
        state = getattr(orig, "sqlstate", None) or getattr(orig.__cause__, "sqlstate", None)
        return isinstance(state, str) and state[:2] in ("22", "23")
    # A StatementError that is not a DBAPIError failed while binding our values.
    return isinstance(exc, StatementError | TypeError | ValueError)


class _StartBatch:
    """Start records written together in one transaction, and one future per waiter.

    Each waiter awaits its own future (so a cancelled waiter never cancels its
    batch-mates' write, without an ``asyncio.shield`` per request), and one timer per
    batch bounds every wait (instead of an ``asyncio.timeout`` per request): it fires
    ``timeout`` seconds after the batch was opened, so no waiter, whenever it joined,
    waits longer than that.
    """

    __slots__ = ("loop", "records", "timer", "waiters")

    def __init__(self, timeout: float, on_expiry: Callable[[_StartBatch], None]) -> None:
        self.loop = asyncio.get_running_loop()
        self.records: list[InterceptionStarted] = []
        self.waiters: list[asyncio.Future[None]] = []
        self.timer = self.loop.call_later(timeout, on_expiry, self)

    def join(self, rec: InterceptionStarted) -> asyncio.Future[None]:
        """Add ``rec``; the returned future resolves when its transaction is over."""
        waiter: asyncio.Future[None] = self.loop.create_future()
        self.records.append(rec)
        self.waiters.append(waiter)
        return waiter

    def finish(self, exc: BaseException | None) -> None:
        """Resolve every waiter still waiting: written (``exc`` None) or failed."""
        self.timer.cancel()
        for waiter in self.waiters:
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)


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
    how often they are retried when no new records arrive.
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
        registry: CollectorRegistry | None = None,
    ) -> None:
        if batch_size < 1 or queue_size < 1 or replay_chunk < 1:
            raise ValueError("batch_size, queue_size and replay_chunk must be positive")
        self._sink = sink
        self._spill_file = SpillFile(spill_path, fsync=fsync)
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
        self._spill_buffer: list[Record] = []
        self._spill_wakeup = asyncio.Event()
        self._spill_lock = asyncio.Lock()
        self._spill_dirty = False
        self._replay_offsets: dict[Path, int] = {}
        self._replay_wakeup = asyncio.Event()
        self._progress = asyncio.Event()
        self._closing = asyncio.Event()
        self._closed = False
        self._give_up = False
        self._healthy = True
        self._tasks: list[asyncio.Task[None]] = []
        # Group commit of start records: the batch being filled and the task writing them.
        self._start_batch: _StartBatch | None = None
        self._start_task: asyncio.Task[None] | None = None
        # SQLite has one writer at a time: two transactions of ours racing for its lock
        # end in the driver's busy-wait (sleeps of 1-100 ms), so take turns here instead.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if serialize_writes else None
        self.metrics.track_queue(lambda: len(self._queue))

    @classmethod
    def for_database(
        cls,
        sessions: Callable[[], AsyncSession],
        data_dir: Path,
        **knobs: Any,
    ) -> Recorder:
        """A recorder writing to the database, spilling to ``data_dir/recording-spill.jsonl``.

        The sink is chosen by :func:`database_sink`. Writes through a :class:`DatabaseSink`
        on SQLite are serialised (see ``serialize_writes``); the SQLite sink's single
        writer thread serialises them by itself."""
        sink = database_sink(sessions)
        bind = getattr(sessions, "kw", {}).get("bind")
        dialect = getattr(getattr(bind, "dialect", None), "name", None)
        knobs.setdefault("serialize_writes", isinstance(sink, DatabaseSink) and dialect == "sqlite")
        return cls(sink, data_dir / SPILL_FILE_NAME, **knobs)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the writer, spiller and replayer; replay anything a previous run spilled."""
        if self._tasks:
            return
        self._spill_dirty = await asyncio.to_thread(self._spill_file.has_data)
        self._tasks = [
            asyncio.create_task(self._writer_loop(), name="recorder-writer"),
            asyncio.create_task(self._spill_loop(), name="recorder-spiller"),
            asyncio.create_task(self._replay_loop(), name="recorder-replayer"),
        ]
        if self._spill_dirty:
            self._replay_wakeup.set()

    # The timeout is part of the contract: shutdown must finish even if the DB hangs.
    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Write everything still in memory to the database, or to the spill file when the
        database is down or ``timeout`` expires. Records arriving afterwards are spilled."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        self._has_items.set()
        start_task = self._start_task
        if start_task is not None:
            # Let start writes in flight finish (bounded by start_timeout) before the sink goes.
            await asyncio.wait({start_task}, timeout=timeout)
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
        await self._spill(leftovers)
        await self._flush_spill_buffer()
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
        if self._closed or not self._healthy:
            self.metrics.start_fallbacks.inc()
            self.record(rec)
            return False
        batch = self._start_batch
        if batch is None:
            batch = self._start_batch = _StartBatch(self._start_timeout, self._expire_starts)
            if self._start_task is None or self._start_task.done():
                self._start_task = asyncio.create_task(
                    self._start_writer(), name="recorder-start-writer"
                )
        try:
            await batch.join(rec)
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

    async def _start_writer(self) -> None:
        """Write pending start batches one transaction at a time until none is left."""
        while (batch := self._start_batch) is not None:
            self._start_batch = None
            try:
                async with asyncio.timeout(self._start_timeout):
                    await self._sink_write(batch.records)
            except BaseException as exc:
                batch.finish(TimeoutError() if isinstance(exc, asyncio.CancelledError) else exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
            else:
                batch.finish(None)

    def _expire_starts(self, batch: _StartBatch) -> None:
        """The batch's timer: its waiters stop waiting (and queue their records). A batch
        still waiting for its turn is dropped, so that later requests open a new one
        (with a timer of its own) instead of joining one whose deadline has passed."""
        if self._start_batch is batch:
            self._start_batch = None
        for waiter in batch.waiters:
            if not waiter.done():
                waiter.set_exception(TimeoutError())

    async def _sink_write(self, records: Sequence[Record]) -> list[InterceptionEnded]:
        if self._write_lock is None:
            return await self._sink.write(records)
        async with self._write_lock:
            return await self._sink.write(records)

    def record(self, rec: Record) -> None:
        """Queue any record without waiting (spilled when the queue is full)."""
        if self._closed:
            self._spill_late(rec)
            return
        queue = self._queue
        if len(queue) >= self._queue_size:
            self._spill_buffer.append(rec)
            self._spill_wakeup.set()
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
        return not (
            self._queue
            or self._inflight
            or self._spill_buffer
            or self._pending_live
            or self._pending_replay
            or self._spill_dirty
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
                    with contextlib.suppress(_TransientWriteError):
                        await self._write_resilient([], replay=False)
                return
            if self._give_up:
                await self._spill(batch)
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
            except _TransientWriteError:
                self._healthy = False
                self._progress.set()
                if self._closing.is_set():
                    # Shutting down with the database unavailable: everything left goes
                    # to the spill file rather than waiting for it.
                    self._give_up = True
                    await self._spill(batch)
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
        if self._spill_dirty:
            self._replay_wakeup.set()

    async def _write_resilient(self, records: list[Record], *, replay: bool) -> None:
        """Write ``records`` (plus pending ends) in one transaction. If the database refuses
        them while healthy, write one by one and reject the refused ones. Raises
        :class:`_TransientWriteError` when the database is unavailable."""
        try:
            await self._attempt(records, replay=replay, with_pending=True)
            return
        except Exception as exc:
            self.metrics.write_errors.inc()
            if await self._is_transient(exc):
                raise _TransientWriteError(str(exc)) from exc
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
                    raise _TransientWriteError(str(exc)) from exc
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
        await self._spill(spill)

    async def _is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` means "database unavailable" (keep and retry) rather than "the
        database refuses this data". Anything not clearly a refusal counts as unavailable:
        retrying too long is cheap, rejecting a good record loses it."""
        if not _refuses_data(exc):
            return True
        try:
            async with asyncio.timeout(self._start_timeout):
                await self._sink.ping()
        except Exception:
            return True
        return False

    async def _reject(self, rec: Record, exc: BaseException) -> None:
        self.metrics.dropped.inc()
        log.error(
            "recorder: the database refused a record; kept in %s",
            self._spill_file.rejected_path,
            extra={"kind": rec.kind, "record_id": str(rec.id), "error": repr(exc)},
        )
        try:
            await asyncio.to_thread(self._spill_file.reject, [record_to_json(rec)])
        except OSError:
            log.exception("recorder: could not keep a refused record; it is lost")

    # ------------------------------------------------------------------ spill

    async def _spill_loop(self) -> None:
        while True:
            await self._spill_wakeup.wait()
            self._spill_wakeup.clear()
            await self._flush_spill_buffer()
            self._progress.set()

    async def _flush_spill_buffer(self) -> None:
        buffer, self._spill_buffer = self._spill_buffer, []
        await self._spill(buffer)

    async def _spill(self, records: list[Record]) -> None:
        """Append ``records`` to the spill file (fsynced); count them, or count them as
        dropped and log loudly if even that fails."""
        if not records:
            return
        async with self._spill_lock:
            try:
                await asyncio.to_thread(self._append, records)
            except Exception:
                self.metrics.dropped.inc(len(records))
                log.critical(
                    "recorder: could not write the spill file %s; %d records are LOST",
                    self._spill_file.path,
                    len(records),
                    exc_info=True,
                )
                return
        self.metrics.spilled.inc(len(records))
        self._spill_dirty = True
        self._progress.set()

    def _append(self, records: list[Record]) -> None:
        # Runs in a worker thread: serialisation and the fsync stay off the event loop.
        self._spill_file.append([record_to_json(r) for r in records])

    def _spill_late(self, rec: Record) -> None:
        """A record after close: one small synchronous append (no loop left to serve it)."""
        try:
            self._append([rec])
        except Exception:
            self.metrics.dropped.inc()
            log.critical("recorder: record after close could not be spilled; LOST", exc_info=True)
            return
        self.metrics.spilled.inc()

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
            if not self._spill_dirty:
                continue
            try:
                await self._replay_once()
            except _TransientWriteError:
                self._healthy = False
            except OSError:
                log.exception("recorder: cannot read the spill file; will retry")
            self._progress.set()

    async def _replay_once(self) -> None:
        """Replay every claimed spill file, oldest first, deleting each once written."""
        for path in await asyncio.to_thread(self._spill_file.claim):
            offset = self._replay_offsets.get(path, 0)
            while True:
                lines, next_offset = await asyncio.to_thread(
                    read_lines, path, offset, self._replay_chunk
                )
                if not lines:
                    break
                records = self._parse(lines, path)
                await self._write_resilient(records, replay=True)
                self._set_healthy()
                offset = self._replay_offsets[path] = next_offset
            await asyncio.to_thread(self._spill_file.discard, path)
            self._replay_offsets.pop(path, None)
            log.info("recorder: replayed spill file", extra={"file": path.name})
        self._spill_dirty = await asyncio.to_thread(self._spill_file.has_data)

    def _parse(self, lines: list[bytes], path: Path) -> list[Record]:
        records: list[Record] = []
        for line in lines:
            try:
                records.append(record_from_json(line))
            except ValueError:
                # A torn line from a crash mid-append; nothing to recover.
                self.metrics.dropped.inc()
                log.error("recorder: unreadable line in spill file %s dropped", path.name)
        return records
