"""How the recorder tells "the database is unavailable" from "the database refuses this",
and the bounded wait its background tasks sleep in."""

from __future__ import annotations

import asyncio

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError


class TransientWriteError(Exception):
    """The database is unreachable or too slow: keep the records and retry later."""


def refuses_data(exc: BaseException) -> bool:
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


async def wait_event(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait for ``event`` at most ``seconds`` (forever when None); True if it was set."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
