"""The in-process counter store: one replica's limits with the semantics of the shared
Redis store (:mod:`aibridge.governance.limitstore`), and the limiter's fallback when
Redis is down.

Everything runs on the event loop thread without awaiting, so each admission is atomic
without a lock. Expired leases and old window entries are dropped when their subject is
next checked, and by :meth:`MemoryStore.refresh` (every few seconds) for the others.
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
    Settlement,
    spend_at_least,
)

_NO_STATES: tuple[CheckState, ...] = ()


class _Reservations:
    """Amounts held by tickets, each until its lease expiry."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held: dict[str, tuple[int, float]] = {}

    def total(self, now: float) -> int:
        """The live amounts' sum (expired ones are dropped on the way)."""
        total = 0
        expired = None
        for ticket, (amount, until) in self.held.items():
            if until <= now:
                expired = expired or []
                expired.append(ticket)
            else:
                total += amount
        if expired:
            for ticket in expired:
                del self.held[ticket]
        return total


class MemoryStore:
    """Counters of one process (see the module docstring)."""

    def __init__(self) -> None:
        self._slots: dict[str, _Reservations] = {}
        self._requests: dict[str, deque[float]] = {}
        self._token_buckets: dict[str, dict[int, int]] = {}
        self._token_reserved: dict[str, _Reservations] = {}
        self._spend: dict[tuple[str, int], list[int]] = {}
        """(subject, period start) → [pico-USD, expire_at]."""
        self._cost_reserved: dict[str, _Reservations] = {}

    # -- evaluation --------------------------------------------------------------------

    def _state(self, check: Check, now: float) -> tuple[bool, CheckState]:
        kind = check.kind
        if kind == CONCURRENCY:
            slots = self._slots.get(check.subject)
            used = slots.total(now) if slots is not None else 0
            return used < check.limit, CheckState(used)
        if kind == REQUESTS:
            log = self._requests.get(check.subject)
            if log is None:
                return check.limit > 0, CheckState(0, now + WINDOW)
            edge = now - WINDOW
            while log and log[0] <= edge:
                log.popleft()
            used = len(log)
            if used < check.limit:
                return True, CheckState(used, (log[0] if log else now) + WINDOW)
            return False, CheckState(used, log[used - check.limit] + WINDOW)
        if kind == TOKENS:
            buckets = self._token_buckets.get(check.subject)
            reservations = self._token_reserved.get(check.subject)
            reserved = reservations.total(now) if reservations is not None else 0
            settled = 0
            if buckets:
                edge = now - WINDOW - 1
                for second in [s for s in buckets if s <= edge]:
                    del buckets[second]
                settled = sum(buckets.values())
            used = settled + reserved
            if used < check.limit:
                oldest = min(buckets) + WINDOW + 1 if buckets else now + WINDOW
                return True, CheckState(used, oldest)
            reset_at = now + WINDOW
            for second in sorted(buckets or ()):
                settled -= buckets[second]  # type: ignore[index]
                if settled + reserved < check.limit:
                    reset_at = second + WINDOW + 1
                    break
            return False, CheckState(used, reset_at)
        # BUDGET
        entry = self._spend.get((check.subject, check.period_start))
        spend = spend_at_least(entry[0] if entry is not None else None, check.seed)
        if entry is None:
            if spend:
                self._spend[(check.subject, check.period_start)] = [spend, check.expire_at]
        else:
            entry[0] = spend
        reservations = self._cost_reserved.get(check.subject)
        used = spend + (reservations.total(now) if reservations is not None else 0)
        return used < check.limit, CheckState(used, 0.0, spend)

    def _take(self, ticket: str, check: Check, now: float, lease_until: float) -> None:
        kind = check.kind
        subject = check.subject
        if kind == CONCURRENCY:
            self._reservations(self._slots, subject).held[ticket] = (1, lease_until)
        elif kind == REQUESTS:
            log = self._requests.get(subject)
            if log is None:
                log = self._requests[subject] = deque()
            log.append(now)
        elif kind == TOKENS:
            self._reservations(self._token_reserved, subject).held[ticket] = (
                check.amount,
                lease_until,
            )
        else:
            self._reservations(self._cost_reserved, subject).held[ticket] = (
                check.amount,
                lease_until,
            )

    @staticmethod
    def _reservations(table: dict[str, _Reservations], subject: str) -> _Reservations:
        reservations = table.get(subject)
        if reservations is None:
            reservations = table[subject] = _Reservations()
        return reservations

    # -- the store protocol ------------------------------------------------------------

    def admit_now(
        self, ticket: str, now: float, lease_until: float, checks: Sequence[Check]
    ) -> AdmitResult:
        """:meth:`admit` without the coroutine (the limiter's fast in-process path)."""
        if not checks:
            return AdmitResult(True, _NO_STATES)
        states = []
        for check in checks:
            ok, state = self._state(check, now)
            states.append(state)
            if not ok:
                return AdmitResult(False, tuple(states))
        for check in checks:
            self._take(ticket, check, now, lease_until)
        return AdmitResult(True, tuple(states))

    async def admit(
        self, ticket: str, now: float, lease_until: float, checks: Sequence[Check]
    ) -> AdmitResult:
        """Evaluate ``checks`` in order and take all of them, or none."""
        return self.admit_now(ticket, now, lease_until, checks)

    def settle_now(self, ticket: str, now: float, settlements: Sequence[Settlement]) -> None:
        """:meth:`settle` without the coroutine."""
        for settlement in settlements:
            check = settlement.check
            kind = check.kind
            if kind == CONCURRENCY:
                slots = self._slots.get(check.subject)
                if slots is not None:
                    slots.held.pop(ticket, None)
            elif kind == TOKENS:
                reserved = self._token_reserved.get(check.subject)
                if reserved is not None:
                    reserved.held.pop(ticket, None)
                if settlement.actual > 0:
                    buckets = self._token_buckets.get(check.subject)
                    if buckets is None:
                        buckets = self._token_buckets[check.subject] = {}
                    second = math.floor(now)
                    buckets[second] = buckets.get(second, 0) + settlement.actual
            elif kind == BUDGET:
                reserved = self._cost_reserved.get(check.subject)
                if reserved is not None:
                    reserved.held.pop(ticket, None)
                if settlement.actual > 0:
                    key = (check.subject, check.period_start)
                    entry = self._spend.get(key)
                    if entry is None:
                        entry = self._spend[key] = [0, check.expire_at]
                    entry[0] = spend_at_least(entry[0], check.seed) + settlement.actual

    async def settle(self, ticket: str, now: float, settlements: Sequence[Settlement]) -> None:
        """Replace the ticket's reservations by what it used."""
        self.settle_now(ticket, now, settlements)

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
                held = reservations.held.get(ticket)
                if held is not None and held[1] > now:
                    reservations.held[ticket] = (held[0], lease_until)
        self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Drop subjects with nothing live, so idle users cost no memory."""
        for table in (self._slots, self._token_reserved, self._cost_reserved):
            for subject in [s for s, r in table.items() if r.total(now) == 0 and not r.held]:
                del table[subject]
        edge = now - WINDOW
        for subject in [s for s, log in self._requests.items() if not log or log[-1] <= edge]:
            del self._requests[subject]
        edge -= 1
        for subject in [s for s, b in self._token_buckets.items() if not b or max(b) <= edge]:
            del self._token_buckets[subject]
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
