"""Telling "the database cannot serve right now" apart from every other database error.

An outage deserves a 503 with ``Retry-After`` (the request was fine; try again), while
anything else is a bug worth a 500. SQLAlchemy wraps driver errors, so the whole cause
chain is inspected.
"""

from __future__ import annotations

import sqlite3

import asyncpg
from sqlalchemy import exc as sa_exc

# PostgreSQL SQLSTATEs (and classes) meaning the server cannot take the request now:
# 08 connection exceptions, 53 insufficient resources (e.g. too many connections),
# 57P operator intervention (shutdown, "cannot connect now" during start-up) and 55000,
# what a database answers while it refuses connections (ALLOW_CONNECTIONS false).
_PG_STATE_PREFIXES = ("08", "53", "57P", "55000")
# SQLite result codes (low byte of the extended code): busy/locked past the busy timeout,
# I/O error, disk full, cannot open the file.
_SQLITE_CODES = frozenset({5, 6, 10, 13, 14})


def _causes(error: BaseException) -> list[BaseException]:
    """``error`` and what it wraps (``__cause__``, ``__context__``, SQLAlchemy's ``orig``)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None or any(current is s for s in seen) or len(seen) > 16:
            continue
        seen.append(current)
        orig = getattr(current, "orig", None)
        todo += [
            current.__cause__,
            current.__context__,
            orig if isinstance(orig, BaseException) else None,
        ]
    return seen


def is_database_unavailable(error: BaseException) -> bool:
    """True when ``error`` means the database is unreachable or refusing work right now."""
    for cause in _causes(error):
        if isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated:
            return True
        # Pool checkout timed out: every connection is busy or none can be made.
        if isinstance(cause, sa_exc.TimeoutError):
            return True
        if isinstance(cause, asyncpg.PostgresError):
            if str(cause.sqlstate).startswith(_PG_STATE_PREFIXES):
                return True
        elif isinstance(cause, OSError | TimeoutError):
            # Connection refused/reset, DNS failure, connect timeout.
            return True
        if isinstance(cause, sqlite3.OperationalError):
            code = getattr(cause, "sqlite_errorcode", None)
            if code is not None and code & 0xFF in _SQLITE_CODES:
                return True
    return False
