"""Single-flight builds: one construction per cache key at a time, joined by every caller
that needs it, each holding a lease on the result."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from aibridge.pool._cache import CacheKey

E = TypeVar("E")


class Build(Generic[E]):
    """One in-progress construction that callers join (single flight) and lease."""

    __slots__ = ("ck", "cleanup", "future", "task", "users")

    def __init__(self, ck: CacheKey, future: asyncio.Future[E]) -> None:
        self.ck = ck
        self.future = future
        self.task: asyncio.Task[None] | None = None
        self.users = 0
        # Runs once when the build is done and the last lease is released (an uncached
        # bridge is retired then); None when the result is cached or there is no result.
        self.cleanup: Callable[[], None] | None = None

    def resolve(self, result: E) -> None:
        """Hand ``result`` to every caller that joined."""
        self.future.set_result(result)

    def fail(self, exc: BaseException) -> None:
        """Raise ``exc`` in every caller that joined (a no-op once resolved or failed)."""
        if not self.future.done():
            self.future.set_exception(exc)
            # Mark retrieved: if every waiter was cancelled nobody reads it, and asyncio
            # would otherwise log "exception was never retrieved".
            self.future.exception()

    def maybe_cleanup(self) -> None:
        """Run the cleanup once the build is done and nobody holds a lease any more."""
        if self.users == 0 and self.future.done() and self.cleanup is not None:
            cleanup, self.cleanup = self.cleanup, None
            cleanup()


class Lease:
    """A caller's share of a build; releasing the last share runs the build's cleanup."""

    __slots__ = ("_build", "_released")

    def __init__(self, build: Build[Any] | None) -> None:
        self._build = build
        self._released = build is None

    def release(self) -> None:
        """Give the share back (idempotent)."""
        if self._released or self._build is None:
            return
        self._released = True
        self._build.users -= 1
        self._build.maybe_cleanup()


NO_LEASE = Lease(None)
"""The lease of a cache hit: nothing to release."""


class BuildGroup(Generic[E]):
    """The builds in progress, by cache key.

    ``exited()`` is the error the callers of a build get when its task ends without a
    result (it was cancelled).
    """

    def __init__(self, exited: Callable[[], BaseException]) -> None:
        self._builds: dict[CacheKey, Build[E]] = {}
        self._exited = exited

    def __len__(self) -> int:
        return len(self._builds)

    def in_progress(self) -> list[Build[E]]:
        """The builds still running."""
        return list(self._builds.values())

    def tasks(self) -> set[asyncio.Task[None]]:
        """The tasks of the builds still running."""
        return {b.task for b in self._builds.values() if b.task is not None}

    async def join(
        self, ck: CacheKey, run: Callable[[Build[E]], Coroutine[Any, Any, None]], *, name: str
    ) -> tuple[E, Lease]:
        """The result of the build for ``ck``, starting ``run(build)`` in a task of its own
        when none is in progress; ``run`` must resolve or fail the build."""
        build = self._builds.get(ck)
        if build is None:
            build = Build(ck, asyncio.get_running_loop().create_future())
            self._builds[ck] = build
            # The build runs in its own task so a cancelled leader (client gone) does not
            # strand the callers that joined it; the result is still cached for later.
            build.task = asyncio.create_task(run(build), name=name)
            build.task.add_done_callback(functools.partial(self._on_done, build))
        build.users += 1
        lease = Lease(build)
        try:
            # shield: cancelling this waiter must not cancel the shared future.
            result = await asyncio.shield(build.future)
        except BaseException:
            lease.release()
            raise
        return result, lease

    def _on_done(self, build: Build[E], _task: asyncio.Task[None]) -> None:
        # A done-callback rather than a ``finally``: it also runs when the task was
        # cancelled before its first step, so waiters can never be left hanging.
        if self._builds.get(build.ck) is build:
            del self._builds[build.ck]
        build.fail(self._exited())
        # If every caller went away before the build finished, clean up now.
        build.maybe_cleanup()
