"""The batch writer: a bounded in-memory queue drained in batches into the sink.

* :meth:`BatchWriter.put` appends to a deque and bumps a counter; it never awaits. Once
  the queue is full, records go to the spill file instead.
* The writer task takes up to ``batch_size`` records or whatever arrived within
  ``flush_interval`` seconds, whichever comes first, and writes them in one transaction.
  A batch that fails because the database is down or slow is held and retried with
  exponential back-off, so the queue fills up (back-pressure). A batch the database
  refuses while it is otherwise healthy (a "poison" record) is retried record by record
  and the refused ones are kept in ``<spill>.rejected`` and counted as dropped.
* End records whose interception row does not exist yet (its start is still in the spill
  file, say) are kept and retried with later batches, so ordering between the live path
  and replay never loses an end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from aibridge import tracing
from aibridge.recording.journal import Journal
from aibridge.recording.metrics import RecorderMetrics
from aibridge.recording.recorder._failures import (
    TransientWriteError,
    refuses_data,
    wait_event,
)
from aibridge.recording.recorder._replay import SpillReplayer
from aibridge.recording.records import InterceptionEnded, Record

log = logging.getLogger("aibridge.recording.recorder")


class BatchWriter:
    """Queue → batches → sink, with back-off, poison records and pending ends.

    ``write`` writes records in one transaction and returns the end records whose start
    row is missing; ``ping`` answers whether the database is up (bounded by
    ``ping_timeout``). Records that cannot stay in memory go to ``spill``.
    """

    def __init__(
        self,
        write: Callable[[Sequence[Record]], Awaitable[list[InterceptionEnded]]],
        ping: Callable[[], Awaitable[object]],
        spill: SpillReplayer,
        *,
        metrics: RecorderMetrics,
        journal: Journal | None,
        progress: asyncio.Event,
        batch_size: int,
        flush_interval: float,
        queue_size: int,
        write_timeout: float,
        ping_timeout: float,
        retry_initial: float,
        retry_max: float,
        pending_ends_limit: int,
        pending_retry_interval: float,
    ) -> None:
        self._write = write
        self._ping = ping
        self._spill = spill
        self._metrics = metrics
        self._enqueued = metrics.enqueued_by_kind
        self._written = metrics.written_by_kind
        self._journal = journal
        self._progress = progress
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._queue_size = queue_size
        self._write_timeout = write_timeout
        self._ping_timeout = ping_timeout
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._pending_limit = pending_ends_limit
        self._pending_retry = pending_retry_interval

        self.queue: deque[Record] = deque()
        # Set when the queue becomes non-empty or reaches a full batch (not on every put).
        self._has_items = asyncio.Event()
        self.inflight: list[Record] = []
        """Records taken from the queue and not yet written (held on failure)."""
        # Early end records, split by origin so written/replayed counters stay exact.
        self._pending_live: list[InterceptionEnded] = []
        self._pending_replay: list[InterceptionEnded] = []
        self.healthy = True
        """False while the last database write failed."""
        self.closed = False
        """Set by :meth:`close`: records put afterwards are spilled one by one."""
        self._closing = asyncio.Event()
        self._give_up = False

    # ------------------------------------------------------------------ request path

    def put(self, rec: Record) -> None:
        """Queue ``rec`` without waiting (journaled first; spilled when the queue is full)."""
        if self.closed:
            self._spill.spill_late(rec)
            return
        if self._journal is not None:
            self._journal.append(rec)
        queue = self.queue
        if len(queue) >= self._queue_size:
            self._spill.add(rec)
            return
        queue.append(rec)
        depth = len(queue)
        if depth == 1 or depth == self._batch_size:
            self._has_items.set()
        self._enqueued[rec.kind].inc()

    # ------------------------------------------------------------------ state

    @property
    def pending_ends(self) -> int:
        """End records waiting for their interception's start row."""
        return len(self._pending_live) + len(self._pending_replay)

    def close(self) -> None:
        """Take no more records into the queue; the writer task writes what is left and
        ends (or, with the database down, spills it)."""
        self.closed = True
        self._closing.set()
        self._has_items.set()

    def take_leftovers(self) -> list[Record]:
        """Everything still in memory (after the writer task ended), emptied."""
        leftovers: list[Record] = [*self.inflight, *self.queue]
        leftovers += [*self._pending_live, *self._pending_replay]
        self.inflight, self._pending_live, self._pending_replay = [], [], []
        self.queue.clear()
        return leftovers

    # ------------------------------------------------------------------ writer task

    async def run(self) -> None:
        """The writer task: batches until closed and nothing is left."""
        while True:
            batch = await self._next_batch()
            if batch is None:
                if self._pending_live or self._pending_replay:
                    # Last chance for early ends whose start arrived meanwhile.
                    with contextlib.suppress(TransientWriteError):
                        await self.write_resilient([], replay=False)
                return
            if self._give_up:
                # Held like a batch in flight: if close() cancels us mid-spill, it
                # spills these itself.
                self.inflight = batch
                await self._spill.spill(batch)
                self.inflight = []
            else:
                await self._write_held(batch)
            self._progress.set()

    async def _next_batch(self) -> list[Record] | None:
        """Up to ``batch_size`` records, waiting at most ``flush_interval`` after the first.
        ``[]`` means "retry pending ends"; None means closing with nothing left."""
        queue, event = self.queue, self._has_items
        while not queue:
            if self._closing.is_set():
                return None
            event.clear()
            if queue or self._closing.is_set():
                continue
            pending = self._pending_live or self._pending_replay
            if not await wait_event(event, self._pending_retry if pending else None):
                return []
        if len(queue) < self._batch_size and not self._closing.is_set():
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._flush_interval
            while len(queue) < self._batch_size and not self._closing.is_set():
                event.clear()
                remaining = deadline - loop.time()
                if len(queue) >= self._batch_size or remaining <= 0:
                    break
                if not await wait_event(event, remaining):
                    break
        count = min(self._batch_size, len(queue))
        return [queue.popleft() for _ in range(count)]

    async def _write_held(self, batch: list[Record]) -> None:
        """Write ``batch``, holding it and backing off while the database is unavailable."""
        # Not cleared in a ``finally``: if close() cancels us mid-write, it spills this.
        self.inflight = batch
        delay = self._retry_initial
        while True:
            try:
                await self.write_resilient(batch, replay=False)
            except TransientWriteError:
                self.healthy = False
                self._progress.set()
                if self._closing.is_set():
                    # Shutting down with the database unavailable: everything left goes
                    # to the spill file rather than waiting for it.
                    self._give_up = True
                    await self._spill.spill(batch)
                    self.inflight = []
                    return
                await wait_event(self._closing, delay)
                delay = min(delay * 2, self._retry_max)
                continue
            self.inflight = []
            self.set_healthy()
            return

    def set_healthy(self) -> None:
        """The database answered: mark it healthy and let the replayer catch up."""
        self.healthy = True
        if self._spill.dirty:
            self._spill.wake()

    # ------------------------------------------------------------------ writing

    async def write_resilient(self, records: list[Record], *, replay: bool) -> None:
        """Write ``records`` (plus pending ends) in one transaction. If the database refuses
        them while healthy, write one by one and reject the refused ones. Raises
        :class:`TransientWriteError` when the database is unavailable."""
        try:
            await self._attempt(records, replay=replay, with_pending=True)
            return
        except Exception as exc:
            self._metrics.write_errors.inc()
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
                self._metrics.write_errors.inc()
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
        tracer = tracing.TRACER
        span = None if tracer is None else _batch_span(tracer, all_records, replay)
        try:
            async with asyncio.timeout(self._write_timeout):
                missing = await self._write(all_records)
        except BaseException as exc:
            self._pending_live[:0] = pend_live
            self._pending_replay[:0] = pend_replay
            if tracer is not None and span is not None:
                tracer.fail(span, tracing.describe_error(exc))
            raise
        finally:
            if span is not None:
                span.end()
        self._metrics.batch_seconds.observe(time.perf_counter() - started)
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
            self._metrics.replayed.inc(replayed)
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
        await self._spill.spill(spill)

    async def _is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` means "database unavailable" (keep and retry) rather than "the
        database refuses this data". Anything not clearly a refusal counts as unavailable:
        retrying too long is cheap, rejecting a good record loses it."""
        if not refuses_data(exc):
            return True
        try:
            async with asyncio.timeout(self._ping_timeout):
                await self._ping()
        except Exception:
            return True
        return False

    async def _reject(self, rec: Record, exc: BaseException) -> None:
        log.error(
            "recorder: the database refused a record; kept in %s",
            self._spill.file.rejected_path,
            extra={"kind": rec.kind, "record_id": str(rec.id), "error": repr(exc)},
        )
        await self._spill.reject(rec)


def _batch_span(tracer: tracing.Tracer, records: Sequence[Record], replay: bool) -> tracing.Span:
    """One ``Intercept.RecordBatch`` span per database write, with its record counts.

    A span per batch, not per record: records are queued on the request path (a journal
    append) and written here many interceptions at a time, so a span per record would
    time only the in-memory queueing while multiplying the spans exported per request;
    the batch is where the database time goes. It is a root span (the writer task serves
    no single request).
    """
    attributes: dict[str, tracing.AttributeValue] = {"record_count": len(records), "replay": replay}
    for rec in records:
        key = f"records.{rec.kind}"
        attributes[key] = int(attributes.get(key, 0)) + 1
    return tracer.start(tracing.RECORD_BATCH, attributes)
