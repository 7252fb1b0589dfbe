"""The start batcher: group commit of interception start records, the one database wait of
a request.

One writer task writes every start that arrived while the previous write was in flight
in a single transaction, so N concurrent requests cost one transaction, not N (and, on
SQLite, never fight each other for the write lock). Each request waits on its own future,
bounded by one timer per batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from aibridge.recording.records import InterceptionStarted


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


class StartBatcher:
    """Writes start records through ``write`` (one transaction per batch), each caller
    waiting at most ``timeout`` seconds for its own."""

    def __init__(
        self, write: Callable[[Sequence[InterceptionStarted]], Awaitable[object]], timeout: float
    ) -> None:
        self._write = write
        self._timeout = timeout
        self._batch: _StartBatch | None = None
        self._task: asyncio.Task[None] | None = None

    def join(self, rec: InterceptionStarted) -> asyncio.Future[None]:
        """Write ``rec`` with the next batch; the future resolves once it is written, or
        fails with the write's error (``TimeoutError`` after ``timeout``)."""
        batch = self._batch
        if batch is None:
            batch = self._batch = _StartBatch(self._timeout, self._expire)
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._run(), name="recorder-start-writer")
        return batch.join(rec)

    # The timeout is the caller's bound on a shutdown step.
    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109
        """Wait (at most ``timeout``) for the writes in flight to finish."""
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=timeout)

    async def _run(self) -> None:
        """Write pending batches one transaction at a time until none is left."""
        while (batch := self._batch) is not None:
            self._batch = None
            try:
                async with asyncio.timeout(self._timeout):
                    await self._write(batch.records)
            except BaseException as exc:
                batch.finish(TimeoutError() if isinstance(exc, asyncio.CancelledError) else exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
            else:
                batch.finish(None)

    def _expire(self, batch: _StartBatch) -> None:
        """The batch's timer: its waiters stop waiting (and queue their records). A batch
        still waiting for its turn is dropped, so that later requests open a new one
        (with a timer of its own) instead of joining one whose deadline has passed."""
        if self._batch is batch:
            self._batch = None
        for waiter in batch.waiters:
            if not waiter.done():
                waiter.set_exception(TimeoutError())
