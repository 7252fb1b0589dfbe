"""Retired bridges drain in the background; shutdown waits for that, bounded, then cancels.

Retiring is synchronous (the gate closes at once); the drain that follows is a tracked
task, so :meth:`Retirements.settle` and the pool's shutdown can wait for every one of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from aibridge.pool._admission import AdmissionGate
from aibridge.pool._hooks import PoolHooks

log = logging.getLogger("aibridge.pool")

CANCEL_GRACE_SECONDS = 1.0
"""How long a forced shutdown waits for cancelled tasks to unwind."""
CLOSE_TIMEOUT_SECONDS = 10.0
"""How long a drained bridge's ``aclose()`` (its MCP sessions) may take."""


class Retirements:
    """The background drains of retired bridges (each bounded by ``timeout`` seconds)."""

    def __init__(self, timeout: float, hooks: PoolHooks) -> None:
        self._timeout = timeout
        self._hooks = hooks
        self.tasks: set[asyncio.Task[None]] = set()
        """Drains still running."""

    def drain(self, gate: AdmissionGate, bridge: object, *, name: str) -> None:
        """Drain ``gate`` (already retired) in a tracked task."""
        self._spawn(self._drain(gate, bridge), name=name)

    async def _drain(self, gate: AdmissionGate, bridge: object) -> None:
        """Let the admitted requests finish, cancelling them past the retirement timeout;
        then close what the bridge holds (``aclose()``: its MCP sessions), bounded."""
        try:
            if self._hooks.before_bridge_shutdown is not None:
                await self._hooks.before_bridge_shutdown(bridge)
            await gate.drain(self._timeout)
            close = getattr(bridge, "aclose", None)
            if close is not None:
                async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                    await close()
        except Exception:
            # Reference: evicted-bridge shutdown errors are ignored (logged here).
            log.warning("request bridge shutdown failed", exc_info=True)

    def _spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro, name=name)
        except RuntimeError:
            # No running loop. Unreachable in practice (bridges only exist inside a loop),
            # but a synchronous replace_providers() must not raise because of it.
            log.warning("no running loop; bridge shutdown skipped", extra={"task": name})
            coro.close()
            return
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def settle(self) -> None:
        """Wait until every drain started so far (and since) has finished (unbounded)."""
        while self.tasks:
            await asyncio.wait(set(self.tasks))


async def wait_or_cancel(
    pending: Callable[[], set[asyncio.Task[None]]],
    timeout: float,  # noqa: ASYNC109 (the bound cancels the tasks, not this call)
) -> bool:
    """Wait up to ``timeout`` s until ``pending()`` is empty; past that, cancel what is left
    and return False. True when everything finished on its own."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while tasks := pending():
        remaining = deadline - loop.time()
        if remaining <= 0:
            await _force(pending, len(tasks))
            return False
        await asyncio.wait(tasks, timeout=remaining)
    return True


async def _force(pending: Callable[[], set[asyncio.Task[None]]], count: int) -> None:
    log.warning("bridge pool shutdown timed out; cancelling", extra={"tasks": count})
    # A cancelled build may retire what it built, spawning a retirement: a few rounds.
    for _ in range(3):
        # Let tasks created just now take their first step, so their cleanup handlers
        # (cancel admitted requests) are in place when the cancel lands.
        await asyncio.sleep(0)
        tasks = pending()
        if not tasks:
            return  # (asyncio.wait refuses an empty set)
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=CANCEL_GRACE_SECONDS)
        tasks = pending()
        if not tasks:
            return
    log.error("bridge pool shutdown left tasks running", extra={"tasks": len(tasks)})
