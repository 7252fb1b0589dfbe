"""The retention job: every ``retention_interval_seconds``, delete the interceptions older
than ``retention_days`` (with their token usages, prompts, tool usages and thoughts).

One replica at a time does the work: on PostgreSQL the run holds an advisory lock and a
replica that cannot take it skips its turn; on SQLite one process owns the file (the
caller starts the job in one worker only). Failures are logged and counted, never
raised: the gateway serves requests whatever happens to the clean-up.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aibridge.clock import SYSTEM_CLOCK, Clock
from aibridge.store.locks import held_session_lock
from aibridge.store.retention import (
    DEFAULT_BATCH_SIZE,
    RECORD_TABLE_NAMES,
    RETENTION_LOCK_ID,
    PruneResult,
    oldest_started_at,
    prune_older,
)

log = logging.getLogger(__name__)


class RetentionMetrics:
    """``aibridge_retention_*`` series in ``registry`` (None: not exported, for tests)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.deleted = Counter(
            "aibridge_retention_deleted_rows",
            "Recording rows deleted by the retention job, by table.",
            ("table",),
            registry=registry,
        )
        for table in RECORD_TABLE_NAMES:
            # Present at 0 from the start, so rate() and dashboards see the series.
            self.deleted.labels(table)
        self.runs = Counter(
            "aibridge_retention_runs",
            "Retention job runs by result: done, skipped (another replica holds the "
            "lock) or failed.",
            ("result",),
            registry=registry,
        )
        for result in ("done", "skipped", "failed"):
            self.runs.labels(result)
        self.oldest = Gauge(
            "aibridge_retention_oldest_record_timestamp_seconds",
            "Start time (Unix seconds) of the oldest interception kept after the last run; "
            "0 when there is none.",
            registry=registry,
        )


class RetentionJob:
    """Deletes records older than ``days`` every ``interval`` seconds (``days`` 0: never).

    :meth:`run_once` is one pass (tests call it with an injected clock); :meth:`start`
    runs one pass per interval, the first one interval after start, until :meth:`stop`.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        *,
        days: int,
        interval: float,
        metrics: RetentionMetrics,
        clock: Clock = SYSTEM_CLOCK,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self._engine = engine
        self._sessions = sessions
        self.days = days
        self.interval = interval
        self.metrics = metrics
        self._clock = clock
        self._batch_size = batch_size
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        """False when records are kept forever (``retention_days`` 0)."""
        return self.days > 0

    def cutoff(self) -> datetime:
        """Interceptions started before this time are deleted by the next pass."""
        return self._clock.now() - timedelta(days=self.days)

    async def run_once(self) -> PruneResult | None:
        """One pass: the rows deleted, or None when another replica holds the lock."""
        async with held_session_lock(self._engine, RETENTION_LOCK_ID) as taken:
            if not taken:
                self.metrics.runs.labels("skipped").inc()
                return None
            result = await prune_older(
                self._sessions,
                self.cutoff(),
                batch_size=self._batch_size,
                on_batch=self._count,
            )
        async with self._sessions() as session:
            oldest = await oldest_started_at(session)
        self.metrics.oldest.set(oldest.timestamp() if oldest is not None else 0)
        self.metrics.runs.labels("done").inc()
        if result.interceptions:
            log.info(
                "retention: deleted old records",
                extra={"deleted": result.deleted, "retention_days": self.days},
            )
        return result

    def _count(self, batch: PruneResult) -> None:
        for table, count in batch.deleted.items():
            self.metrics.deleted.labels(table).inc(count)

    def start(self) -> None:
        """Run in the background (nothing when records are kept forever)."""
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        """Stop the background task (a pass in progress is cancelled between statements;
        its finished batches stay committed)."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                # A periodic wake-up that stop() cuts short, not a wait for a condition.
                # The first pass comes one interval after start: a start-up (or a
                # crash-looping replica) never begins with a large delete.
                await asyncio.wait_for(self._stopping.wait(), timeout=self.interval)
                return
            except TimeoutError:
                pass
            try:
                await self.run_once()
            except Exception as exc:
                self.metrics.runs.labels("failed").inc()
                log.warning(
                    "retention run failed; retrying next interval",
                    extra={"error": f"{type(exc).__name__}: {exc}"},
                )


__all__ = ["RetentionJob", "RetentionMetrics"]
