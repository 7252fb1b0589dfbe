"""The recorder's crash journal: every queued record is on disk before it is batched.

A process kill (``kill -9``, OOM) loses whatever the recorder holds in memory. So each
record is appended to a local journal before it joins the in-memory queue, and it is
*acknowledged* once it is in the database (its batch committed) or in the fsynced spill
file. What a run leaves unacknowledged is replayed by the next start of the same replica
slot (through the spill file, so the normal idempotent write path applies).

Cost on the request path: two ``write()`` calls per interception. :meth:`Journal.append`
adds a record to a list; an interception's start and end records write it, with whatever
was buffered before them, at once (so the start is on disk before the upstream call, and
a client that saw its response complete can rely on its records being journaled); other
records not followed by an end in the same loop iteration are written by a ``call_soon``
callback. Records are serialised with
:func:`~aibridge.recording.records.record_to_json`. There is no fsync: the page cache
survives a process kill (not a power cut, which the in-memory queue does not survive
either).

Layout, in ``<data dir>/recording-journal/``:

* ``<slot>/lock`` — ``flock``-ed by the process that owns the slot;
* ``<slot>/<n>.journal`` — segments, one JSON record per line. The active segment is
  truncated when everything in it is acknowledged and it holds at least ``trim_bytes``,
  and sealed once it grows past ``segment_bytes``; a sealed segment is deleted once fully
  acknowledged. A clean shutdown leaves no segment. A torn last line (a crash mid-write)
  costs only itself; acknowledged records replayed again are no-ops (idempotent writes).

Replica identity: ``<data dir>/replica-id`` holds a random id created on first start;
a process is the replica ``<id>:<slot>``. The slot is the worker index under
``serve --workers N`` when its lock is free, else the next free one, so two live
processes never share an identity (and so never end each other's interceptions). At
start-up a process also takes over every other slot whose lock is free: its journal
belongs to a run that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aibridge.files import open_private, private_dir
from aibridge.recording.records import (
    InterceptionEnded,
    InterceptionStarted,
    Record,
    record_to_json,
)
from aibridge.recording.spill import read_lines

log = logging.getLogger(__name__)

JOURNAL_DIR_NAME = "recording-journal"
"""Directory of the journal inside the data directory."""

REPLICA_ID_FILE = "replica-id"
"""File in the data directory holding the replica's persistent random id."""

SEGMENT_SUFFIX = ".journal"
# Records written to the journal as they are appended (see Journal.append).
_WRITE_AT_ONCE = frozenset((InterceptionStarted, InterceptionEnded))
MAX_SLOTS = 1024


def load_replica_id(data_dir: Path) -> str:
    """This data directory's replica id, created (atomically, mode 0600) on first use."""
    path = data_dir / REPLICA_ID_FILE
    with contextlib.suppress(FileNotFoundError):
        existing = path.read_text().strip()
        if existing:
            return existing
    private_dir(data_dir)
    tmp = data_dir / f".{REPLICA_ID_FILE}.{os.getpid()}.{uuid.uuid4().hex}"
    fd = open_private(tmp, os.O_WRONLY | os.O_EXCL)
    try:
        os.write(fd, uuid.uuid4().hex.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # link() fails if another process created the file first: then theirs wins.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


@dataclass(eq=False)
class _Segment:
    """One segment file: its open descriptor while active, and what is unacknowledged."""

    path: Path
    fd: int | None
    size: int = 0
    outstanding: int = 0


@dataclass
class Recovered:
    """What :meth:`Journal.open` found left by previous runs."""

    lines: list[bytes]
    """Every complete or torn line of the segments, oldest first (torn ones are invalid
    JSON; the replay drops and counts them)."""
    replicas: list[str]
    """Replica identities whose previous runs are over: this process's own and those of
    the free slots it took over."""
    segments: list[Path]
    """The segment files the lines came from (delete them once the lines are safe)."""


class Journal:
    """The journal of one replica slot (see the module docstring).

    Call :meth:`open` (blocking file I/O, run it in a thread) before :meth:`append`,
    from the event loop thread; :meth:`ack` records once they are in the database or
    the spill file; :meth:`close` at shutdown.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        slot: int = 0,
        segment_bytes: int = 4 * 1024 * 1024,
        trim_bytes: int = 256 * 1024,
    ) -> None:
        if not 0 <= slot < MAX_SLOTS:
            raise ValueError(f"slot must be in [0, {MAX_SLOTS})")
        self.data_dir = data_dir
        self.directory = data_dir / JOURNAL_DIR_NAME
        self.preferred_slot = slot
        self.slot: int | None = None
        self.replica = ""
        self._segment_bytes = segment_bytes
        self._trim_bytes = trim_bytes
        self._lock_fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buffer: list[Record] = []
        self._active: _Segment | None = None
        self._sealed: list[_Segment] = []
        # id(record) → (its segment, the record): holding the record keeps its id from
        # being reused while it is a key here, and only until it is acknowledged (held
        # per segment instead, every record of a segment lived as long as the segment,
        # ~4,000 requests' worth under load, and the collector paid for them).
        self._where: dict[int, tuple[_Segment, Record]] = {}
        self._next_number = 0
        self._failing = False
        self._closed = False

    # ------------------------------------------------------------------ start-up

    def open(self, loop: asyncio.AbstractEventLoop) -> Recovered:
        """Take a slot, collect what previous runs left (this slot's and every free
        slot's segments) and get ready to append. Blocking file I/O."""
        self._loop = loop
        replica_id = load_replica_id(self.data_dir)
        private_dir(self.directory)
        existing = sorted(
            int(p.name) for p in self.directory.iterdir() if p.name.isdigit() and p.is_dir()
        )
        candidates = [self.preferred_slot, *range(MAX_SLOTS)]
        for slot in dict.fromkeys(candidates):
            fd = self._try_lock(slot)
            if fd is not None:
                self.slot, self._lock_fd = slot, fd
                break
        else:
            raise RuntimeError(f"no free journal slot in {self.directory}")
        self.replica = f"{replica_id}:{self.slot}"
        recovered = Recovered([], [self.replica], [])
        self._collect(self.slot, recovered)
        for slot in existing:
            if slot == self.slot:
                continue
            fd = self._try_lock(slot)
            if fd is None:
                continue  # a live process owns it
            try:
                self._collect(slot, recovered)
                recovered.replicas.append(f"{replica_id}:{slot}")
            finally:
                os.close(fd)  # releases the lock
        numbers = [int(p.stem) for p in recovered.segments if p.parent.name == str(self.slot)]
        self._next_number = max(numbers, default=-1) + 1
        return recovered

    def _try_lock(self, slot: int) -> int | None:
        slot_dir = self.directory / str(slot)
        private_dir(slot_dir)
        fd = open_private(slot_dir / "lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def _collect(self, slot: int, recovered: Recovered) -> None:
        slot_dir = self.directory / str(slot)
        segments = sorted(
            (p for p in slot_dir.glob("*" + SEGMENT_SUFFIX) if p.stem.isdigit()),
            key=lambda p: int(p.stem),
        )
        for path in segments:
            offset = 0
            while True:
                lines, offset = read_lines(path, offset, 10_000)
                if not lines:
                    break
                recovered.lines += lines
            recovered.segments.append(path)

    @staticmethod
    def discard(segments: Iterable[Path]) -> None:
        """Delete recovered segments once their lines are safe elsewhere."""
        for path in segments:
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ hot path

    def append(self, rec: Record) -> None:
        """Journal ``rec``. An interception's start and end are written at once, together
        with the records buffered before them: the start before the upstream call, the end
        (after its usage, prompt…) before the client gets the last byte of its response, so
        once a client has seen a response complete, its records are in the journal. Other
        records are written by one ``write()`` per event-loop iteration, in a callback."""
        buffer = self._buffer
        buffer.append(rec)
        if type(rec) in _WRITE_AT_ONCE:
            self.flush()
        elif len(buffer) == 1 and self._loop is not None:
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the buffered records now (one ``write()``; no fsync)."""
        records = self._buffer
        if not records or self._closed or self.slot is None:
            return  # (not open yet: kept until open() and the next flush)
        self._buffer = []
        data = b"".join([record_to_json(r) + b"\n" for r in records])
        try:
            segment = self._active or self._new_segment()
            assert segment.fd is not None
            view = memoryview(data)
            while view:
                view = view[os.write(segment.fd, view) :]
        except OSError:
            if not self._failing:
                log.exception("recorder: cannot write the journal; records are not crash-safe")
            self._failing = True
            return
        if self._failing:
            log.warning("recorder: journal writes work again")
            self._failing = False
        segment.size += len(data)
        segment.outstanding += len(records)
        where = self._where
        for rec in records:
            where[id(rec)] = (segment, rec)
        if segment.size >= self._segment_bytes:
            self._seal(segment)

    def _new_segment(self) -> _Segment:
        assert self.slot is not None, "Journal.open() first"
        path = self.directory / str(self.slot) / f"{self._next_number:012d}{SEGMENT_SUFFIX}"
        self._next_number += 1
        fd = open_private(path)
        self._active = _Segment(path, fd)
        return self._active

    def _seal(self, segment: _Segment) -> None:
        if segment.fd is not None:
            os.close(segment.fd)
            segment.fd = None
        self._active = None
        self._sealed.append(segment)

    def ack(self, records: Iterable[Record]) -> None:
        """These records are in the database or the spill file: forget them. A segment
        with nothing left unacknowledged is deleted (sealed) or, once it holds
        ``trim_bytes``, truncated (active)."""
        if self._buffer:
            # Never acknowledge a record before it is written (it would stay outstanding).
            self.flush()
        where = self._where
        drained: list[_Segment] = []
        for rec in records:
            entry = where.pop(id(rec), None)
            if entry is not None:
                segment = entry[0]
                segment.outstanding -= 1
                if not segment.outstanding:
                    drained.append(segment)
        for segment in drained:
            # The active segment is trimmed only once it is worth a syscall (ftruncate
            # costs more than the write of a request's records); what a crash then
            # replays again is at most ``trim_bytes`` of idempotent writes.
            if not segment.outstanding and (
                segment is not self._active or segment.size >= self._trim_bytes
            ):
                self._drop(segment)

    def _drop(self, segment: _Segment) -> None:
        try:
            if segment is self._active:
                assert segment.fd is not None
                os.ftruncate(segment.fd, 0)
                segment.size = 0
            else:
                if segment in self._sealed:
                    self._sealed.remove(segment)
                segment.path.unlink(missing_ok=True)
        except OSError:
            log.warning("recorder: could not trim the journal", exc_info=True)

    @property
    def outstanding(self) -> int:
        """Records written to the journal and not acknowledged yet."""
        return len(self._where)

    # ------------------------------------------------------------------ shutdown

    def close(self) -> None:
        """Write what is buffered, delete the active segment if nothing in it is
        outstanding (a clean shutdown leaves no segment), release the slot."""
        self.flush()
        self._closed = True
        active = self._active
        if active is not None:
            self._seal(active)
            if not active.outstanding:
                self._drop(active)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
