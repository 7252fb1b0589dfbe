"""The contract between the limiter and its counter stores (in-process and Redis).

The limiter turns a request into an ordered list of :class:`Check` s; a store evaluates
them all at once, atomically: either every check passes and everything is taken (a
concurrency slot, a request in the window, a token reservation, a cost reservation), or
the first failing check is reported and nothing at all is left behind.

The values passed are named tuples: the limiter builds several per request and tuples
are the cheapest objects to make (the static ones, concurrency and request checks, are
built once per actor and reused).

Times are wall-clock epoch seconds passed in by the caller (the limiter's injectable
clock), never read by the store, so tests move windows and leases without sleeping and
replicas sharing Redis agree on time as far as their clocks do.

Kinds of check and what the store keeps per subject (``u:<user id>``, ``k:<key id>``,
``g`` for the whole gateway):

- ``CONCURRENCY``: slots held by tickets, each with a lease expiry;
- ``REQUESTS``: a sliding window log of admitted requests over :data:`WINDOW` seconds
  (exact: a limit of 10 admits exactly 10 of 30 concurrent requests);
- ``TOKENS``: tokens settled per whole second over the window (a bucket counts until
  its last instant has left the window, so usage is never under-counted) plus the
  reservations of requests in flight, each with a lease expiry;
- ``BUDGET``: the period's spend in pico-USD (one counter per period, so a new period
  starts at zero by itself) plus in-flight cost reservations with lease expiries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

CONCURRENCY = "c"
REQUESTS = "r"
TOKENS = "t"
BUDGET = "b"

WINDOW = 60
"""Seconds of the request and token rate windows (the limits are per minute)."""


class StoreUnavailable(Exception):
    """The shared store cannot be reached; the limiter falls back to its own counters."""


class Check(NamedTuple):
    """One limit to check and take for one subject."""

    kind: str
    subject: str
    limit: int
    amount: int = 0
    """Reserved by the admission: estimated tokens (``TOKENS``) or pico-USD (``BUDGET``)."""
    period_start: int = 0
    """``BUDGET``: the period's start (epoch seconds); part of the counter's identity."""
    expire_at: int = 0
    """``BUDGET``: when the period's counter may be forgotten (epoch seconds)."""
    seed: int = 0
    """``BUDGET``: spend the counter holds at least (the recorded spend, the last seen),
    so a flushed or restarted store never forgets what was spent."""


class AdmitResult(NamedTuple):
    """What an admission found, one entry per check evaluated, in order, in three parallel
    lists (cheaper to fill than one small object per check); when refused, the last entry
    is the failing check's and nothing was taken. Values are from before the admission
    took anything."""

    admitted: bool
    used: list[int]
    """Slots held, requests in the window, tokens settled in the window plus reserved, or
    pico-USD spent in the period plus reserved."""
    reset_at: list[float]
    """Rates: when capacity comes back (refused: enough for one more; admitted: the next
    time anything leaves the window). Others: 0 (unknown to the store)."""
    spend: list[int]
    """``BUDGET``: the period's settled spend alone (others: 0)."""


class LimitStore(Protocol):
    """Counters shared by the requests of one replica (in-process) or of all (Redis)."""

    async def admit(
        self, ticket: str, now: float, lease_until: float, checks: Sequence[Check]
    ) -> AdmitResult:
        """Evaluate ``checks`` in order and take all of them, or none (see module doc)."""
        ...

    async def settle(
        self, ticket: str, now: float, checks: Sequence[Check], tokens: int, cost: int
    ) -> None:
        """End the ticket's ``checks``: free its slots and replace its reservations by
        what it used, timestamped ``now``: ``tokens`` for every ``TOKENS`` check, ``cost``
        pico-USD for every ``BUDGET`` check (requests stay counted in their window)."""
        ...

    async def refresh(
        self, now: float, leases: Sequence[tuple[str, Check]], lease_until: float
    ) -> None:
        """Extend the leases of held slots and reservations to ``lease_until`` (those that
        expired already stay gone) and drop what expired."""
        ...

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` when the store cannot be reached."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
