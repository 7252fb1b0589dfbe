"""The in-process counter store: one replica's limits with the semantics of the shared
Redis store (:mod:`aibridge.governance.limitstore`), and the limiter's fallback when
Redis is down.

Everything runs on the event loop thread without awaiting, so each admission is atomic
without a lock. Every operation of an admission or a settlement is O(1) amortised: lease
tables keep a running total and a lower bound of their earliest expiry (they are only
scanned once that bound has passed), request windows are deques trimmed from the left,
and settled tokens are per-second buckets in a deque with a running sum. Subjects with
nothing live are forgotten by :meth:`MemoryStore.refresh` (every few seconds).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from aibridge.governance.limitstore import (
    BUDGET,
    CONCURRENCY,
    REQUESTS,
    TOKENS,
    WINDOW,
    AdmitResult,
    Check,
    CheckState,
    spend_at_least,
)

_NO_STATES: tuple[CheckState, ...] = ()
_NEVER = math.inf


class _Leases:
    """Amounts held by tickets, each until its lease expiry, with their live sum.

    Invariants: ``total`` is the sum of ``held``'s amounts and ``next_expiry`` is at most
    the earliest expiry in ``held``, so while ``now < next_expiry`` every entry is live and
    the total is read without a scan (leases are only ever extended, which keeps the bound
    valid)."""

    __slots__ = ("held", "next_expiry", "total")

    def __init__(self) -> None:
        self.held: dict[str, tuple[int, float]] = {}
        self.total = 0
        self.next_expiry = _NEVER

    def live(self, now: float) -> int:
        """The live amounts' sum (expired ones are dropped first)."""
        if now >= self.next_expiry:
            self._sweep(now)
        return self.total

    def _sweep(self, now: float) -> None:
        held = self.held
        expired = [ticket for ticket, (_, until) in held.items() if until <= now]
        for ticket in expired:
            del held[ticket]
        self.total = sum(amount for amount, _ in held.values())
        self.next_expiry = min((until for _, until in held.values()), default=_NEVER)

    def put(self, ticket: str, amount: int, until: float) -> None:
        """Hold ``amount`` for ``ticket`` until ``until``."""
        previous = self.held.get(ticket)
        if previous is not None:
            self.total -= previous[0]
        self.held[ticket] = (amount, until)
        self.total += amount
        if until < self.next_expiry:
            self.next_expiry = until

    def drop(self, ticket: str) -> None:
        """Release ``ticket``'s amount (nothing when it expired or was never held)."""
        entry = self.held.pop(ticket, None)
        if entry is not None:
            self.total -= entry[0]

    def extend(self, ticket: str, now: float, until: float) -> None:
        """Move a live lease's expiry to ``until`` (an expired one stays gone)."""
        entry = self.held.get(ticket)
        if entry is not None and entry[1] > now:
            self.held[ticket] = (entry[0], until)


class _Tokens:
    """Tokens settled per whole second over the window: ``[second, tokens]`` buckets in
    ascending order and their sum."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets: deque[list[int]] = deque()
        self.total = 0

    def trim(self, now: float) -> None:
        """Drop the buckets whose last instant has left the window."""
        buckets = self.buckets
        edge = now - WINDOW - 1
        while buckets and buckets[0][0] <= edge:
            self.total -= buckets.popleft()[1]

    def add(self, now: float, tokens: int) -> None:
        """Count ``tokens`` settled at ``now``."""
        second = math.floor(now)
        buckets = self.buckets
        if buckets and buckets[-1][0] >= second:
            # Same second (or a clock that stepped back): the latest bucket, which keeps
            # the deque sorted and counts the tokens a little longer, never shorter.
            buckets[-1][1] += tokens
        else:
            buckets.append([second, tokens])
        self.total += tokens


def _leases(table: dict[str, _Leases], subject: str) -> _Leases:
    leases = table.get(subject)
    if leases is None:
        leases = table[subject] = _Leases()
    return leases


class MemoryStore:
    """Counters of one process (see the module docstring)."""

    def __init__(self) -> None:
        self._slots: dict[str, _Leases] = {}
        self._requests: dict[str, deque[float]] = {}
        self._tokens: dict[str, _Tokens] = {}
        self._token_reserved: dict[str, _Leases] = {}
        self._spend: dict[tuple[str, int], list[int]] = {}
        """(subject, period start) → [pico-USD, expire_at]."""
        self._cost_reserved: dict[str, _Leases] = {}

    # -- evaluation --------------------------------------------------------------------

    def _state(self, check: Check, now: float) -> tuple[bool, CheckState]:
        kind = check.kind
        if kind == CONCURRENCY:
            slots = self._slots.get(check.subject)
            used = slots.live(now) if slots is not None else 0
            return used < check.limit, CheckState(used)
        if kind == REQUESTS:
            log = self._requests.get(check.subject)
            if not log:
                return check.limit > 0, CheckState(0, now + WINDOW)
            edge = now - WINDOW
            while log and log[0] <= edge:
                log.popleft()
            used = len(log)
            if used < check.limit:
                return True, CheckState(used, (log[0] if log else now) + WINDOW)
            return False, CheckState(used, log[used - check.limit] + WINDOW)
        if kind == TOKENS:
            reservations = self._token_reserved.get(check.subject)
            reserved = reservations.live(now) if reservations is not None else 0
            settled = self._tokens.get(check.subject)
            if settled is None or not settled.buckets:
                return reserved < check.limit, CheckState(reserved, now + WINDOW)
            settled.trim(now)
            used = settled.total + reserved
            buckets = settled.buckets
            if used < check.limit:
                oldest = buckets[0][0] + WINDOW + 1 if buckets else now + WINDOW
                return True, CheckState(used, oldest)
            return False, CheckState(used, _tokens_reset(settled, reserved, check.limit, now))
        # BUDGET
        key = (check.subject, check.period_start)
        entry = self._spend.get(key)
        if entry is None:
            spend = check.seed
            if spend:
                self._spend[key] = [spend, check.expire_at]
        else:
            spend = entry[0]
            if spend < check.seed:
                spend = entry[0] = check.seed
        reservations = self._cost_reserved.get(check.subject)
        used = spend + (reservations.live(now) if reservations is not None else 0)
        return used < check.limit, CheckState(used, 0.0, spend)

    # -- the store protocol ------------------------------------------------------------

    def admit_now(
        self, ticket: str, now: float, lease_until: float, checks: Sequence[Check]
    ) -> AdmitResult:
        """:meth:`admit` without the coroutine (the limiter's fast in-process path)."""
        if not checks:
            return AdmitResult(True, _NO_STATES)
        states = []
        state = self._state
        for check in checks:
            ok, found = state(check, now)
            states.append(found)
            if not ok:
                return AdmitResult(False, tuple(states))
        # Everything passed: take it all (no await in between, so nothing changed).
        for check in checks:
            kind = check.kind
            if kind == REQUESTS:
                log = self._requests.get(check.subject)
                if log is None:
                    log = self._requests[check.subject] = deque()
                log.append(now)
            elif kind == CONCURRENCY:
                _leases(self._slots, check.subject).put(ticket, 1, lease_until)
            elif kind == TOKENS:
                _leases(self._token_reserved, check.subject).put(ticket, check.amount, lease_until)
            else:
                _leases(self._cost_reserved, check.subject).put(ticket, check.amount, lease_until)
        return AdmitResult(True, tuple(states))

    async def admit(
        self, ticket: str, now: float, lease_until: float, checks: Sequence[Check]
    ) -> AdmitResult:
        """Evaluate ``checks`` in order and take all of them, or none."""
        return self.admit_now(ticket, now, lease_until, checks)

    def settle_now(
        self, ticket: str, now: float, checks: Sequence[Check], tokens: int, cost: int
    ) -> None:
        """:meth:`settle` without the coroutine."""
        for check in checks:
            kind = check.kind
            if kind == CONCURRENCY:
                slots = self._slots.get(check.subject)
                if slots is not None:
                    slots.drop(ticket)
            elif kind == TOKENS:
                reserved = self._token_reserved.get(check.subject)
                if reserved is not None:
                    reserved.drop(ticket)
                if tokens > 0:
                    settled = self._tokens.get(check.subject)
                    if settled is None:
                        settled = self._tokens[check.subject] = _Tokens()
                    settled.add(now, tokens)
            elif kind == BUDGET:
                reserved = self._cost_reserved.get(check.subject)
                if reserved is not None:
                    reserved.drop(ticket)
                if cost > 0:
                    key = (check.subject, check.period_start)
                    entry = self._spend.get(key)
                    if entry is None:
                        entry = self._spend[key] = [0, check.expire_at]
                    entry[0] = spend_at_least(entry[0], check.seed) + cost

    async def settle(
        self, ticket: str, now: float, checks: Sequence[Check], tokens: int, cost: int
    ) -> None:
        """Replace the ticket's reservations by what it used."""
        self.settle_now(ticket, now, checks, tokens, cost)

    async def refresh(
        self, now: float, leases: Sequence[tuple[str, Check]], lease_until: float
    ) -> None:
        """Extend held leases and forget what expired or left its window."""
        tables = {
            CONCURRENCY: self._slots,
            TOKENS: self._token_reserved,
            BUDGET: self._cost_reserved,
        }
        for ticket, check in leases:
            table = tables.get(check.kind)
            reservations = table.get(check.subject) if table is not None else None
            if reservations is not None:
                reservations.extend(ticket, now, lease_until)
        self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Drop subjects with nothing live, so idle users cost no memory."""
        for table in (self._slots, self._token_reserved, self._cost_reserved):
            for subject in [s for s, r in table.items() if r.live(now) == 0 and not r.held]:
                del table[subject]
        edge = now - WINDOW
        for subject in [s for s, log in self._requests.items() if not log or log[-1] <= edge]:
            del self._requests[subject]
        for subject, settled in list(self._tokens.items()):
            settled.trim(now)
            if not settled.buckets:
                del self._tokens[subject]
        for key in [k for k, entry in self._spend.items() if entry[1] <= now]:
            del self._spend[key]

    def spend(self, subject: str, period_start: int) -> int:
        """The period's settled spend as counted here (tests and the fallback's status)."""
        entry = self._spend.get((subject, period_start))
        return entry[0] if entry is not None else 0

    async def ping(self) -> None:
        """Always reachable."""

    async def aclose(self) -> None:
        """Nothing to release."""


def _tokens_reset(settled: _Tokens, reserved: int, limit: int, now: float) -> float:
    """When enough settled tokens leave the window to admit again (refusals only; the
    reservations' part comes back when they settle, unknown here: a full window)."""
    remaining = settled.total
    for second, tokens in settled.buckets:
        remaining -= tokens
        if remaining + reserved < limit:
            return second + WINDOW + 1
    return now + WINDOW
