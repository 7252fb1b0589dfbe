"""The recorder's SQLite sink: one dedicated writer thread, one thread handoff per batch.

Through SQLAlchemy and aiosqlite, one recorder transaction costs five thread handoffs
(cursor, execute, close, commit, rollback-on-return), about 550 µs of CPU, and every
request pays for one (its start record). This sink owns a plain :mod:`sqlite3`
connection on its own thread and runs a whole batch there in a single call:
``BEGIN IMMEDIATE``; multi-row INSERTs per table (``ON CONFLICT (id) DO NOTHING``, so a
replayed record lands once), an end whose start is in the same batch folded into the
start's row; the other end records as UPDATEs; ``COMMIT``.

Values are converted with the bind processors of the application's own SQLAlchemy
dialect and the statements are compiled from the same table definitions, so the rows are
byte-for-byte what :class:`~aibridge.recording.sink.DatabaseSink` writes.

Failures look like the ones the writer already knows: sqlite3 errors are raised as the
matching :mod:`sqlalchemy.exc` classes (``IntegrityError`` is a refusal, an
``OperationalError`` means "unavailable"), and the connection is dropped after any error
that is not a refusal, so the next attempt reopens the file. The connection is also
reopened when the file at the database path is no longer the one it has open (moved away,
deleted, replaced): writing on would go to a file nobody reads. The file is opened with
``mode=rw``, so a missing database is an error, never a new empty one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Table, Update
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from aibridge.recording.records import InterceptionEnded, InterceptionStarted, Record
from aibridge.recording.sink import (
    _ABANDONED_UPDATE,
    _END_UPDATE,
    _INSERTS,
    _ITABLE,
    abandoned_params,
)
from aibridge.store.types import UTCDateTime

_Processor = Callable[[Any], Any] | None

_Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]


def _utc_text(proc: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``proc`` (a :class:`UTCDateTime` column's processor on SQLite) with a shortcut for
    what records hold, an aware UTC datetime: ``isoformat`` with the date and time joined
    by a space and six fractional digits is the dialect's storage format (``%04d-%02d-%02d
    %02d:%02d:%02d.%06d``) followed by ``+00:00``. Anything else goes through ``proc``."""

    def process(value: Any) -> Any:
        if type(value) is datetime and value.tzinfo is UTC:
            return value.isoformat(" ", "microseconds")[:26]
        return proc(value)

    return process


def _json_text(proc: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``proc`` (a JSON column's processor) with the usual value, an empty dict, encoded
    once (by ``proc`` itself, so the text is the same)."""
    empty = proc({})

    def process(value: Any) -> Any:
        if type(value) is dict and not value:
            return empty
        return proc(value)

    return process


def _processor(type_: Any, proc: _Processor) -> _Processor:
    """The bind processor of a column of ``type_``, shortcut where the writer thread spends
    its time (timestamps and empty metadata in every record): the thread holds the GIL
    while it converts values, and the event loop waits for it meanwhile."""
    if proc is None:
        return None
    if isinstance(type_, UTCDateTime):
        return _utc_text(proc)
    if isinstance(type_, JSON):
        return _json_text(proc)
    return proc


def _fold_end(row: dict[str, Any], end: InterceptionEnded) -> None:
    """Write ``end`` into its interception's start row, as :data:`_END_UPDATE` would
    update it (a missing hint keeps the start's)."""
    row["ended_at"] = end.ended_at
    row["error_type"] = end.error_type
    row["error_message"] = end.error_message
    if end.credential_hint is not None:
        row["credential_hint"] = end.credential_hint


# Rows per multi-row INSERT: a batch's rows of one table go in as few statements as
# these sizes allow (45 rows: 32 + 8 + 4 + 1), so each table has at most this many
# distinct statements for sqlite3's statement cache, and no statement nears SQLite's
# bound-parameter limit (999 before 3.32).
_CHUNKS = (32, 16, 8, 4, 2, 1)


class _Insert:
    """The idempotent multi-row INSERT of one table: ``sql(n)`` is the statement for ``n``
    rows (one of :data:`_CHUNKS`), ``params`` the (key, bind processor) of each column
    in a row's placeholder order."""

    __slots__ = ("_head", "_row", "_sql", "params")

    def __init__(self, table: Table, dialect: Dialect) -> None:
        # Compiled once by SQLAlchemy for the column order and the bind processors.
        keys = [c.key for c in table.c]
        stmt = sqlite_dialect.insert(table).on_conflict_do_nothing(index_elements=["id"])
        compiled = stmt.compile(dialect=dialect, column_keys=keys)
        order = list(compiled.positiontup or [])
        self.params: list[tuple[str, _Processor]] = []
        for k in order:
            type_ = table.c[k].type
            self.params.append((k, _processor(type_, type_._cached_bind_processor(dialect))))
        quote = dialect.identifier_preparer.quote
        columns = ", ".join(quote(table.c[k].name) for k in order)
        self._head = f"INSERT INTO {quote(table.name)} ({columns}) VALUES "
        self._row = "(" + ", ".join("?" * len(order)) + ")"
        self._sql = {n: self._statement(n) for n in _CHUNKS}

    def _statement(self, rows: int) -> str:
        return self._head + ", ".join([self._row] * rows) + " ON CONFLICT (id) DO NOTHING"

    def execute(self, conn: sqlite3.Connection, rows: list[list[Any]]) -> int:
        """Insert ``rows`` (parameter lists); return how many were new. One statement per
        chunk: SQLite runs it as one step, where ``executemany`` steps (and the writer
        thread gives up and takes back the GIL) once per row. Alone on a core that is the
        same CPU; beside the event loop on the gateway's one core it is ~5 % less at c=16
        (fewer hand-offs of the GIL and the core: docs/benchmarks.md "Round 12")."""
        inserted, at, total = 0, 0, len(rows)
        while at < total:
            size = next(n for n in _CHUNKS if n <= total - at)
            flat = [value for row in rows[at : at + size] for value in row]
            inserted += conn.execute(self._sql[size], flat).rowcount
            at += size
        return inserted


def _compile_update(stmt: Update, dialect: Dialect) -> tuple[str, list[tuple[str, _Processor]]]:
    """SQL text and (bind name, bind processor) per positional parameter of ``stmt``."""
    compiled = stmt.compile(dialect=dialect)
    procs = compiled._bind_processors
    params: list[tuple[str, _Processor]] = [
        (k, _processor(compiled.binds[k].type, procs.get(k)))  # type: ignore[arg-type]
        for k in compiled.positiontup or []
    ]
    return compiled.string, params


class SqliteSink:
    """A :class:`~aibridge.recording.sink.Sink` for a SQLite database file.

    ``dialect`` is the SQLAlchemy dialect of the application's engine (its bind
    processors format the values). ``busy_timeout`` bounds how long one statement waits
    for another connection's write lock. ``on_connect`` is called (on the writer thread)
    with every new :class:`sqlite3.Connection`; tests use it to trace statements.
    Every write runs on the writer thread, never on the event loop: a disk write on the
    loop would stall every request whenever the disk is slow.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        dialect: Dialect,
        *,
        busy_timeout: float = 5.0,
        on_connect: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        self._path = os.fspath(path)
        self._busy_timeout = busy_timeout
        self._on_connect = on_connect
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._inserts = [(cls, _Insert(table, dialect), to_row) for cls, table, to_row in _INSERTS]
        self._update_sql, self._update_params = _compile_update(_END_UPDATE, dialect)
        self._abandoned_sql, self._abandoned_params = _compile_update(_ABANDONED_UPDATE, dialect)
        id_proc = _ITABLE.c.id.type._cached_bind_processor(dialect)
        self._id_proc: Callable[[Any], Any] = id_proc or (lambda v: v)
        self._exists_sql = f"SELECT 1 FROM {_ITABLE.name} WHERE id = ?"
        # Jobs handed to the thread whose result the loop has not seen yet.
        self._queued = 0
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    # ------------------------------------------------------------------ Sink

    async def write(self, records: Sequence[Record]) -> list[InterceptionEnded]:
        """See :meth:`Sink.write`: the whole batch in one transaction, one thread handoff."""
        if not records:
            return []
        batch = list(records)
        result: list[InterceptionEnded] = await self._call(self._write_sync, batch)
        return result

    async def end_abandoned(
        self, replicas: Sequence[str], before: datetime, ended_at: datetime
    ) -> int:
        """See :meth:`~aibridge.recording.sink.Sink.end_abandoned`: one transaction."""
        ended: int = await self._call(self._end_abandoned_sync, list(replicas), before, ended_at)
        return ended

    async def ping(self) -> None:
        """``SELECT 1`` on the writer's connection (reopened if the file changed)."""
        await self._call(self._ping_sync)

    async def close(self) -> None:
        """Close the connection and stop the thread (after the jobs already queued)."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            return
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued += 1
        self._jobs.put((self._close_sync, (), fut))
        self._jobs.put(None)
        # A statement stuck on a lock ends within busy_timeout; do not wait much longer.
        await asyncio.wait({fut}, timeout=self._busy_timeout + 1)

    # ------------------------------------------------------------------ thread plumbing

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._closed:
            raise DBAPIError.instance(
                None, None, sqlite3.OperationalError("sink closed"), sqlite3.Error
            )
        return await self._submit(fn, *args)

    def _submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="aibridge-sqlite-writer", daemon=True
            )
            self._thread.start()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued += 1
        self._jobs.put((fn, args, fut))
        return fut

    def _finish(self, fut: asyncio.Future[Any], ok: bool | None, result: Any) -> None:
        # Counted out when the thread is done with the job, not when its caller gave up
        # (a cancelled job may still be running).
        self._queued -= 1
        if fut.done():
            return
        if ok:
            fut.set_result(result)
        else:
            fut.set_exception(result)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, fut = job
            ok: bool | None = None
            result: Any = None
            if not fut.cancelled():  # else the caller gave up before we started: skip it
                try:
                    result, ok = fn(*args), True
                except BaseException as exc:  # handed to the caller, never lost here
                    result, ok = exc, False
            try:
                fut.get_loop().call_soon_threadsafe(self._finish, fut, ok, result)
            except RuntimeError:
                return  # the loop is gone

    # ------------------------------------------------------------------ on the thread

    def _connection(self) -> sqlite3.Connection:
        try:
            st = os.stat(self._path)
            identity: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            identity = None
        if self._conn is not None and identity == self._identity and identity is not None:
            return self._conn
        self._drop()
        conn = sqlite3.connect(
            f"file:{self._path}?mode=rw",
            uri=True,
            timeout=self._busy_timeout,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,
            cached_statements=64,  # the inserts' chunk sizes, the updates, the probes
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            if self._on_connect is not None:
                self._on_connect(conn)
        except BaseException:
            conn.close()
            raise
        self._conn, self._identity = conn, identity
        return conn

    def _drop(self) -> None:
        conn, self._conn, self._identity = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _guarded(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn`` in a transaction on a live connection; errors become SQLAlchemy's."""
        try:
            conn = self._connection()
        except sqlite3.Error as exc:
            raise DBAPIError.instance(None, None, exc, sqlite3.Error) from exc
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            if not isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
                # Unavailable (locked, I/O, file gone) or unknown: start afresh next time.
                self._drop()
            raise DBAPIError.instance(None, None, exc, sqlite3.Error) from exc
        return result

    def _write_sync(self, records: list[Record]) -> list[InterceptionEnded]:
        missing: list[InterceptionEnded] = self._guarded(
            lambda conn: self._write_batch(conn, records)
        )
        return missing

    def _write_batch(
        self, conn: sqlite3.Connection, records: list[Record]
    ) -> list[InterceptionEnded]:
        ends: list[InterceptionEnded] = []
        by_type: dict[type[Any], list[Record]] = {}
        for r in records:
            if type(r) is InterceptionEnded:
                ends.append(r)
            else:
                by_type.setdefault(type(r), []).append(r)
        # An end whose start is in this batch is written by the start's INSERT: one row
        # written once instead of inserted then updated (most requests at low load).
        folded: dict[Any, InterceptionEnded] = {}
        starts = by_type.get(InterceptionStarted)
        if ends and starts:
            started = {r.id for r in starts}
            rest: list[InterceptionEnded] = []
            for e in ends:
                if e.id in started and e.id not in folded:
                    folded[e.id] = e
                else:
                    rest.append(e)  # no start here, or a second end (a no-op UPDATE)
            ends = rest
        for cls, insert, to_row in self._inserts:
            batch = by_type.get(cls)
            if batch:
                params = insert.params
                rows = []
                for r in batch:
                    row = to_row(r)
                    if folded and (end := folded.get(row["id"])) is not None:
                        _fold_end(row, end)
                    rows.append([p(row[k]) if p else row[k] for k, p in params])
                inserted = insert.execute(conn, rows)
                if cls is InterceptionStarted and folded and inserted != len(rows):
                    # Some start row was already there (a replay), so its INSERT did
                    # nothing and the end folded into it was not written: UPDATE them all
                    # (a no-op where the insert did write it).
                    ends = [*folded.values(), *ends]
        if not ends:
            return []
        rows = []
        for e in ends:
            values = {
                "b_id": e.id,
                "b_ended_at": e.ended_at,
                "b_error_type": e.error_type,
                "b_error_message": e.error_message,
                "b_hint": e.credential_hint,
            }
            rows.append([p(values[k]) if p else values[k] for k, p in self._update_params])
        # One executemany (its rowcount is the sum): in the usual batch every end changes
        # its row, and a statement per end cost more than all the inserts together.
        if conn.executemany(self._update_sql, rows).rowcount == len(ends):
            return []
        # Some end changed no row: already ended (a replay, a no-op) or not started yet.
        exists, id_proc = self._exists_sql, self._id_proc
        return [e for e in ends if conn.execute(exists, (id_proc(e.id),)).fetchone() is None]

    def _end_abandoned_sync(self, replicas: list[str], before: datetime, ended_at: datetime) -> int:
        def run(conn: sqlite3.Connection) -> int:
            ended = 0
            for replica in replicas:
                values = abandoned_params(replica, before, ended_at)
                args = [p(values[k]) if p else values[k] for k, p in self._abandoned_params]
                ended += conn.execute(self._abandoned_sql, args).rowcount
            return ended

        result: int = self._guarded(run)
        return result

    def _ping_sync(self) -> None:
        try:
            self._connection().execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            self._drop()
            raise DBAPIError.instance(None, None, exc, sqlite3.Error) from exc

    def _close_sync(self) -> None:
        self._drop()
