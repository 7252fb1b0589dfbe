"""An injectable clock, so time-dependent code (cooldowns, breakers, TTLs) is tested without sleeps.

Production code takes a ``Clock`` and defaults to ``SystemClock``; tests pass a ``FakeClock`` and
move time forward explicitly with ``advance``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Source of time.

    ``monotonic()`` is for measuring intervals (never jumps backwards, unaffected by wall-clock
    changes); ``now()`` is the aware UTC wall clock, needed only to interpret absolute times such
    as an HTTP-date ``Retry-After``.
    """

    def monotonic(self) -> float:
        """Seconds on a monotonic scale with an arbitrary origin."""
        ...

    def now(self) -> datetime:
        """The current time as an aware UTC datetime."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``datetime.now(UTC)``."""

    def monotonic(self) -> float:
        """Seconds from ``time.monotonic``."""
        return time.monotonic()

    def now(self) -> datetime:
        """The current aware UTC datetime."""
        return datetime.now(UTC)


SYSTEM_CLOCK = SystemClock()
"""Shared default instance (stateless, so one is enough)."""


class FakeClock:
    """A manually driven clock for tests; both scales move together on ``advance``."""

    def __init__(
        self,
        *,
        monotonic: float = 1000.0,
        now: datetime | None = None,
    ) -> None:
        # A non-zero monotonic origin catches code that wrongly treats 0 as "unset".
        self._monotonic = monotonic
        start = now if now is not None else datetime(2025, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime")
        self._now = start.astimezone(UTC)

    def monotonic(self) -> float:
        """The fake monotonic seconds."""
        return self._monotonic

    def now(self) -> datetime:
        """The fake aware UTC datetime."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (must be >= 0: monotonic time never goes back)."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._monotonic += seconds
        self._now += timedelta(seconds=seconds)
