"""The in-process counter store: one replica's limits with the semantics of the shared
Redis store (:mod:`aibridge.governance.limitstore`), and the limiter's fallback when
Redis is down.

Everything runs on the event loop thread without awaiting, so each admission is atomic
without a lock. It runs per request, so every operation is O(1) amortised:

- slots and reservations are per-subject running totals; what a ticket holds is one
  lease record (its expiry and the amounts it added to which totals), so settling pops
  one record, and expiry scans the records only once the earliest expiry has passed
  (leases are only ever extended, so a lower bound of it stays valid);
- request windows are deques of admission times trimmed from the left;
- settled tokens are per-second buckets in a deque with a running sum.

Subjects with nothing live are forgotten by :meth:`MemoryStore.refresh` (every few
seconds).
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
)

_NEVER = math.inf
_new_tuple = tuple.__new__
"""Named tuples made without their Python-level ``__new__`` (a third cheaper)."""


class _Total:
    """What the live leases of one subject hold (slots, tokens or pico-USD)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


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


def _tokens_reset(settled: _Tokens, reserved: int, limit: int, now: float) -> float:
    """When enough settled tokens leave the window to admit again (refusals only; the
    reservations' part comes back when they settle, unknown here: a full window)."""
    remaining = settled.total
    for second, tokens in settled.buckets:
        remaining -= tokens
        if remaining + reserved < limit:
            return second + WINDOW + 1
    return now + WINDOW


class MemoryStore:
    """Counters of one process (see the module docstring)."""

    def __init__(self) -> None:
        self._slots: dict[str, _Total] = {}
        self._requests: dict[str, deque[float]] = {}
        self._tokens: dict[str, _Tokens] = {}
        self._token_reserved: dict[str, _Total] = {}
        self._spend: dict[tuple[str, int], list[int]] = {}
        """(subject, period start) → [pico-USD, expire_at]."""
        self._cost_reserved: dict[str, _Total] = {}
        self._leases: dict[str, tuple[list[float], list[tuple[_Total, int]]]] = {}
        """Ticket → ([expiry], [(total, amount it added), ...])."""
        self._next_expiry = _NEVER
        """At most the earliest lease expiry (see the module docstring)."""

    # -- the store protocol ------------------------------------------------------------

    def admit_now(
        self,
        ticket: str,
        now: float,
        lease_until: float,
        checks: Sequence[Check],
        tokens: int,
        cost: int,
    ) -> AdmitResult:
        """:meth:`admit` without the coroutine (the limiter's fast in-process path), with
        the amounts to reserve given apart: ``tokens`` for every ``TOKENS`` check,
        ``cost`` for every ``BUDGET`` check (the checks' own ``amount`` is not read, so
        the limiter reuses one tuple of checks for every request of an actor).

        One pass that takes each check as soon as it passes and gives back what it took
        when a later one fails: admissions are far more common than refusals, and nothing
        else runs in between (no await), so nobody sees the partial take."""
        if now >= self._next_expiry:
            self._expire(now)
        used_at: list[int] = []
        reset_at: list[float] = []
        spend_at: list[int] = []
        held: list[tuple[_Total, int]] = []
        logs: list[deque[float]] = []
        total: _Total
        for kind, subject, limit, amount, period_start, expire_at, seed in checks:
            spend = 0
            reset = 0.0
            if kind == REQUESTS:
                log = self._requests.get(subject)
                if log is None:
                    log = self._requests[subject] = deque()
                edge = now - WINDOW
                while log and log[0] <= edge:
                    log.popleft()
                used = len(log)
                if used < limit:
                    reset = (log[0] if log else now) + WINDOW
                    log.append(now)
                    logs.append(log)
                else:
                    reset = log[used - limit] + WINDOW if limit > 0 else now + WINDOW
            elif kind == CONCURRENCY:
                amount = 1
                totals = self._slots
                known = totals.get(subject)
                total = known if known is not None else totals.setdefault(subject, _Total())
                used = total.value
            elif kind == TOKENS:
                amount = tokens
                totals = self._token_reserved
                known = totals.get(subject)
                total = known if known is not None else totals.setdefault(subject, _Total())
                used = total.value
                settled = self._tokens.get(subject)
                if settled is None or not settled.buckets:
                    reset = now + WINDOW
                else:
                    buckets = settled.buckets
                    if buckets[0][0] <= now - WINDOW - 1:
                        settled.trim(now)
                    used += settled.total
                    if used >= limit:
                        reset = _tokens_reset(settled, total.value, limit, now)
                    elif buckets:
                        reset = buckets[0][0] + WINDOW + 1
                    else:
                        reset = now + WINDOW
            else:
                amount = cost
                key = (subject, period_start)
                entry = self._spend.get(key)
                if entry is None:
                    spend = seed
                    if spend:
                        self._spend[key] = [spend, expire_at]
                else:
                    spend = entry[0]
                    if spend < seed:
                        spend = entry[0] = seed
                totals = self._cost_reserved
                known = totals.get(subject)
                total = known if known is not None else totals.setdefault(subject, _Total())
                used = spend + total.value
            used_at.append(used)
            reset_at.append(reset)
            spend_at.append(spend)
            if used >= limit:
                # Give back what the checks before this one took.
                for log in logs:
                    log.pop()  # this admission's entry: the last, nothing ran since
                for total, taken in held:
                    total.value -= taken
                return _new_tuple(AdmitResult, (False, used_at, reset_at, spend_at))
            if kind != REQUESTS:
                total.value += amount
                held.append((total, amount))
        if held:
            self._leases[ticket] = ([lease_until], held)
            if lease_until < self._next_expiry:
                self._next_expiry = lease_until
        return _new_tuple(AdmitResult, (True, used_at, reset_at, spend_at))

    def _expire(self, now: float) -> None:
        """Give back what expired leases hold; find the next expiry."""
        expired = [ticket for ticket, (until, _) in self._leases.items() if until[0] <= now]
        for ticket in expired:
            for total, amount in self._leases.pop(ticket)[1]:
                total.value -= amount
        self._next_expiry = min((until[0] for until, _ in self._leases.values()), default=_NEVER)

    async def admit(
        self, ticket: str, now: float, lease_until: float, checks: Sequence[Check]
    ) -> AdmitResult:
        """Evaluate ``checks`` in order and take all of them, or none."""
        tokens = next((c.amount for c in checks if c.kind == TOKENS), 0)
        cost = next((c.amount for c in checks if c.kind == BUDGET), 0)
        return self.admit_now(ticket, now, lease_until, checks, tokens, cost)

    def settle_now(
        self, ticket: str, now: float, checks: Sequence[Check], tokens: int, cost: int
    ) -> Sequence[int]:
        """:meth:`settle` without the coroutine (slots and reservations are freed from the
        ticket's lease record: only the ``TOKENS`` and ``BUDGET`` checks matter here).
        Returns each ``BUDGET`` check's spend after adding ``cost`` (nothing when the cost
        is 0), for the limiter's soft threshold."""
        lease = self._leases.pop(ticket, None)
        if lease is not None:
            for total, amount in lease[1]:
                total.value -= amount
        spends: list[int] = []
        if tokens <= 0 and cost <= 0:
            return spends
        second = math.floor(now)
        for kind, subject, _, _, period_start, expire_at, seed in checks:
            if kind == TOKENS:
                if tokens > 0:
                    settled = self._tokens.get(subject)
                    if settled is None:
                        settled = self._tokens[subject] = _Tokens()
                    buckets = settled.buckets
                    if buckets and buckets[-1][0] >= second:
                        # Same second (or a clock that stepped back): the latest bucket
                        # (see _Tokens.add).
                        buckets[-1][1] += tokens
                        settled.total += tokens
                    else:
                        settled.add(now, tokens)
            elif kind == BUDGET and cost > 0:
                key = (subject, period_start)
                entry = self._spend.get(key)
                if entry is None:
                    spent = seed + cost
                    self._spend[key] = [spent, expire_at]
                else:
                    spent = entry[0] = (entry[0] if entry[0] > seed else seed) + cost
                spends.append(spent)
        return spends
        for check in checks:
            kind = check.kind
            if kind == TOKENS and tokens > 0:
                settled = self._tokens.get(check.subject)
                if settled is None:
                    settled = self._tokens[check.subject] = _Tokens()
                settled.add(now, tokens)
            elif kind == BUDGET and cost > 0:
                key = (check.subject, check.period_start)
                entry = self._spend.get(key)
                if entry is None:
                    spent = check.seed + cost
                    self._spend[key] = [spent, check.expire_at]
                else:
                    spent = entry[0] = (entry[0] if entry[0] > check.seed else check.seed) + cost
                spends.append(spent)
        return spends

    async def settle(
        self, ticket: str, now: float, checks: Sequence[Check], tokens: int, cost: int
    ) -> None:
        """Replace the ticket's reservations by what it used."""
        self.settle_now(ticket, now, checks, tokens, cost)

    async def refresh(
        self, now: float, leases: Sequence[tuple[str, Check]], lease_until: float
    ) -> None:
        """Extend held leases and forget what expired or left its window."""
        if now >= self._next_expiry:
            self._expire(now)
        for ticket, _ in leases:
            lease = self._leases.get(ticket)
            if lease is not None:
                # Still held, so not expired (expired ones were dropped just above).
                lease[0][0] = lease_until
        self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Drop subjects with nothing live, so idle users cost no memory."""
        for table in (self._slots, self._token_reserved, self._cost_reserved):
            for subject in [s for s, total in table.items() if not total.value]:
                # A lease of 0 (an unpriced model's cost) may still point at the
                # dropped total: giving 0 back to it later changes nothing.
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
