"""Start-up and shutdown of a gateway's components, as an exit stack.

A :class:`Component` knows how to start and how to stop one part of the gateway (the
database engine, pub/sub, the recorder, the bridge pool, …). :class:`Components`
starts them in order and registers each stop *before* the start runs, so a start that
fails half way is still stopped, and so is everything started before it. Shutdown runs
the stops in reverse order; each one is guarded and time-bounded: a stop that fails or
hangs (the database is down) is logged and the stops after it still run, the
recorder's above all (its queue goes to the database or the spill file).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

log = logging.getLogger(__name__)

SHUTDOWN_STEP_TIMEOUT = 10.0
"""Seconds one component's stop may take (a hung database must not hang the shutdown)."""


@dataclass(frozen=True, slots=True)
class Component:
    """One part of a running gateway: its name (for the log), how it starts and stops.

    ``start`` may be None (the object was ready when made: only its stop is registered)
    and may be a plain function or a coroutine function. ``stop_timeout`` bounds the
    stop; None when the component bounds its own stop (the recorder's close timeout,
    the pool's retirement timeout).
    """

    name: str
    stop: Callable[[], Awaitable[object]]
    start: Callable[[], object] | None = None
    stop_timeout: float | None = SHUTDOWN_STEP_TIMEOUT


class Components:
    """Starts components in order on ``stack``; the stack stops them in reverse order."""

    def __init__(self, stack: AsyncExitStack) -> None:
        self._stack = stack

    async def start(self, component: Component) -> None:
        """Register ``component``'s stop, then start it."""
        self._stack.push_async_callback(_stop, component)
        if component.start is not None:
            started = component.start()
            if inspect.isawaitable(started):
                await started


async def _stop(component: Component) -> None:
    """One guarded shutdown step: a failure (or a stop that hangs past its timeout) is
    logged, and the steps after it still run."""
    try:
        async with asyncio.timeout(component.stop_timeout):
            await component.stop()
    except Exception:
        log.exception("shutdown: closing the %s failed; closing the rest", component.name)
