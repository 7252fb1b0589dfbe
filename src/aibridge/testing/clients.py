"""SDK clients that a test suite closes after each test, on the test's own event loop.

An official SDK client left open keeps a connection pool that the garbage collector would
close after the event loop is gone (a warning, and sometimes an error). Helpers that make
clients register them with :func:`closed_after_test`; the suite's fixture calls
:func:`close_clients` when each test ends.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, TypeVar


class _Closeable(Protocol):
    async def close(self) -> None: ...


_C = TypeVar("_C", bound=_Closeable)

_OPEN: list[_Closeable] = []


def closed_after_test(client: _C) -> _C:
    """Register ``client`` to be closed by :func:`close_clients`; returns it."""
    _OPEN.append(client)
    return client


async def close_clients(timeout: float = 15.0) -> None:  # noqa: ASYNC109
    """Close every client registered since the last call (bounded by ``timeout``)."""
    clients = list(_OPEN)
    _OPEN.clear()
    async with asyncio.timeout(timeout):
        for client in clients:
            await client.close()
