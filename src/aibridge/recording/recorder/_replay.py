"""The spill replayer: the recorder's way out of memory and back, and its recovery from
a killed run (file format and locking: :mod:`aibridge.recording.spill`).

Records that cannot wait in memory (the queue is full, shutdown with the database down,
end records waiting too long for their start) are appended to the spill file, fsynced,
in a worker thread; the replayer writes them back through the batch writer's normal,
idempotent write path once the database answers. Spilled records are acknowledged in
the journal: they are safe on disk.

At start, what earlier runs left unacknowledged in the journal is moved to the spill file
(and so replayed like any spill); once that first replay is done, the interceptions
earlier runs of this replica left open are ended with ``error_type = gateway_restart``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol

from aibridge.recording.journal import Journal
from aibridge.recording.metrics import RecorderMetrics
from aibridge.recording.recorder._failures import TransientWriteError, wait_event
from aibridge.recording.records import Record, record_from_json, record_to_json
from aibridge.recording.sink import Sink
from aibridge.recording.spill import SpillFile, read_lines
from aibridge.store.types import utcnow

log = logging.getLogger("aibridge.recording.recorder")


class ReplayTarget(Protocol):
    """What the replayer writes through (the batch writer)."""

    healthy: bool
    """False while the database is known to be unavailable."""

    async def write_resilient(self, records: list[Record], *, replay: bool) -> None:
        """Write ``records`` and the waiting end records; raise TransientWriteError while
        the database is unavailable."""
        ...

    def set_healthy(self) -> None:
        """The database answered a write."""
        ...


class SpillReplayer:
    """Spills records to ``spill_file`` and replays them; recovers the journal at start.

    ``progress`` is set whenever something was spilled or replayed (the recorder's
    ``wait_until`` listens to it). ``probe_timeout`` bounds a health probe of the sink,
    ``write_timeout`` the ending of abandoned interceptions; the replay loop looks at the
    spill file every ``replay_interval`` seconds and whenever :meth:`wake` is called.
    """

    def __init__(
        self,
        spill_file: SpillFile,
        sink: Sink,
        *,
        metrics: RecorderMetrics,
        journal: Journal | None,
        progress: asyncio.Event,
        replay_chunk: int,
        replay_interval: float,
        probe_timeout: float,
        write_timeout: float,
    ) -> None:
        self.file = spill_file
        self._sink = sink
        self._metrics = metrics
        self._journal = journal
        self._progress = progress
        self._replay_chunk = replay_chunk
        self._replay_interval = replay_interval
        self._probe_timeout = probe_timeout
        self._write_timeout = write_timeout
        self.buffer: list[Record] = []
        """Records waiting for the spiller task (added when the queue is full)."""
        self.dirty = False
        """Whether the spill file may hold records to replay."""
        self.abandoned: tuple[list[str], datetime] | None = None
        """Replicas whose earlier runs may have left interceptions open, and when this run
        started: ended once the first replay is done (None when nothing is left to do)."""
        self._wakeup = asyncio.Event()
        self._replay_wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._spills = 0
        self._offsets: dict[Path, int] = {}

    def wake(self) -> None:
        """Look at the spill file now rather than at the next interval."""
        self._replay_wakeup.set()

    # ------------------------------------------------------------------ recovery

    async def recover(self, journal: Journal) -> None:
        """Open the journal and move what earlier runs left in it to the spill file."""
        started = utcnow()
        recovered = await asyncio.to_thread(journal.open, asyncio.get_running_loop())
        if recovered.lines:
            log.warning(
                "recorder: replaying records a previous run left unacknowledged",
                extra={"records": len(recovered.lines), "replicas": recovered.replicas},
            )
            # Fsynced before the segments go: a crash in between replays them twice,
            # which the idempotent writes absorb.
            await self.keep(recovered.lines)
        await asyncio.to_thread(journal.discard, recovered.segments)
        self.abandoned = (recovered.replicas, started)

    async def check(self) -> bool:
        """Look at the disk: is there anything to replay? (sets :attr:`dirty`)."""
        self.dirty = await asyncio.to_thread(self.file.has_data)
        return self.dirty

    # ------------------------------------------------------------------ spilling

    def add(self, rec: Record) -> None:
        """Spill ``rec`` soon (from the spiller task); never waits."""
        self.buffer.append(rec)
        self._wakeup.set()

    async def run_spiller(self) -> None:
        """The spiller task: write what :meth:`add` buffered."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self.flush()
            self._progress.set()

    async def flush(self) -> None:
        """Spill what :meth:`add` buffered."""
        # Taken under the lock: a flush cancelled while it waits for the lock (close()
        # cancels the spiller) leaves the buffer in place for the final flush.
        async with self._lock:
            buffer, self.buffer = self.buffer, []
            await self._append_locked(buffer)

    async def spill(self, records: list[Record]) -> None:
        """Append ``records`` to the spill file (fsynced); count them, or count them as
        dropped and log loudly if even that fails (journaled ones then stay in the
        journal, for the next start)."""
        async with self._lock:
            await self._append_locked(records)

    async def _append_locked(self, records: list[Record]) -> None:
        if not records:
            return
        try:
            await asyncio.to_thread(self._append, records)
        except Exception:
            self._metrics.dropped.inc(len(records))
            log.critical(
                "recorder: could not write the spill file %s; %d records are LOST",
                self.file.path,
                len(records),
                exc_info=True,
            )
            return
        self._metrics.spilled.inc(len(records))
        self.dirty = True
        self._spills += 1
        if self._journal is not None:
            self._journal.ack(records)
        self._progress.set()

    def _append(self, records: list[Record]) -> None:
        # Runs in a worker thread: serialisation and the fsync stay off the event loop.
        self.file.append([record_to_json(r) for r in records])

    def spill_late(self, rec: Record) -> None:
        """A record after close: one small synchronous append (no loop left to serve it)."""
        try:
            self._append([rec])
        except Exception:
            self._metrics.dropped.inc()
            log.critical("recorder: record after close could not be spilled; LOST", exc_info=True)
            return
        self._metrics.spilled.inc()

    async def keep(self, lines: list[bytes]) -> None:
        """Append already serialised records (what a killed run left in its journal)."""
        async with self._lock:
            await asyncio.to_thread(self.file.append, lines)
            self.dirty = True
            self._spills += 1

    async def reject(self, rec: Record) -> None:
        """Keep a record the database refused in the rejected file (counted dropped)."""
        self._metrics.dropped.inc()
        try:
            await asyncio.to_thread(self.file.reject, [record_to_json(rec)])
        except OSError:
            log.exception("recorder: could not keep a refused record; it is lost")
        if self._journal is not None:
            self._journal.ack([rec])

    # ------------------------------------------------------------------ replay

    async def run_replayer(self, target: ReplayTarget) -> None:
        """The replayer task: replay the spill file through ``target`` whenever the
        database answers, then end what earlier runs left open."""

        async def write(records: list[Record]) -> None:
            await target.write_resilient(records, replay=True)
            target.set_healthy()

        while True:
            await wait_event(self._replay_wakeup, self._replay_interval)
            self._replay_wakeup.clear()
            if not target.healthy:
                # Probe: nothing else may flip health back if the queue is empty.
                try:
                    async with asyncio.timeout(self._probe_timeout):
                        await self._sink.ping()
                except Exception:
                    continue
                target.healthy = True
            if not self.dirty and self.abandoned is None:
                continue
            try:
                if self.dirty:
                    await self.replay_once(write)
                if self.abandoned is not None:
                    await self._end_abandoned(target, *self.abandoned)
            except TransientWriteError:
                target.healthy = False
            except OSError:
                log.exception("recorder: cannot read the spill file; will retry")
            self._progress.set()

    async def _end_abandoned(
        self, target: ReplayTarget, replicas: list[str], before: datetime
    ) -> None:
        """End what earlier runs of ``replicas`` left open. Runs after a complete replay
        pass (which wrote what those runs journaled or spilled) and a retry of the ends
        still waiting for their start: a real end must never lose to ``gateway_restart``."""
        await target.write_resilient([], replay=True)
        try:
            async with asyncio.timeout(self._write_timeout):
                ended = await self._sink.end_abandoned(replicas, before, utcnow())
        except Exception as exc:
            self._metrics.write_errors.inc()
            raise TransientWriteError(str(exc)) from exc
        self.abandoned = None
        if ended:
            log.warning(
                "recorder: ended interceptions a previous run left open (gateway_restart)",
                extra={"interceptions": ended, "replicas": replicas},
            )

    async def replay_once(self, write: Callable[[list[Record]], Awaitable[None]]) -> None:
        """Replay every claimed spill file through ``write``, oldest first, deleting each
        once written. ``write`` raises to stop (the file is resumed from where it was)."""
        spills = self._spills
        for path in await asyncio.to_thread(self.file.claim):
            offset = self._offsets.get(path, 0)
            while True:
                lines, next_offset = await asyncio.to_thread(
                    read_lines, path, offset, self._replay_chunk
                )
                if not lines:
                    break
                await write(self._parse(lines, path))
                offset = self._offsets[path] = next_offset
            await asyncio.to_thread(self.file.discard, path)
            self._offsets.pop(path, None)
            log.info("recorder: replayed spill file", extra={"file": path.name})
        has_data = await asyncio.to_thread(self.file.has_data)
        # A spill that finished while has_data() looked must not be forgotten.
        self.dirty = has_data or self._spills != spills

    def _parse(self, lines: list[bytes], path: Path) -> list[Record]:
        records: list[Record] = []
        for line in lines:
            try:
                records.append(record_from_json(line))
            except ValueError:
                # A torn line from a crash mid-append; nothing to recover.
                self._metrics.dropped.inc()
                log.error("recorder: unreadable line in spill file %s dropped", path.name)
        return records
