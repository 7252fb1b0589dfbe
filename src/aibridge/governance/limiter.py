"""The limiter: admits a request or refuses it with the reason, then settles its usage.

Order of the checks (issue 14): model access (403 ``model_not_allowed``, no counter
touched) → the replica's ``max_concurrency`` (a local counter, never shared) → the
user's and the key's concurrency → request rate → token rate → budgets (user, key,
global). Everything after model access and the replica's slot is one atomic store call
that takes everything or nothing, so a refusal leaves nothing behind.

Token rate and budgets work by reservation: an admission reserves an estimate
(:mod:`aibridge.governance.estimate`) and is admitted while settled usage plus the
reservations in flight stay under the limit; :meth:`Ticket.settle` replaces the
reservation by the exact usage (every upstream call, reported through
:meth:`Ticket.add_usage`). A budget is so overshot by at most the requests already in
flight. The token rate counts uncached input, cache writes and output; cache reads are
not counted (they are cheap, and the providers' own input-token limits exclude them).

Slots and reservations carry a lease (``limit_lease_seconds``) that one task per process
refreshes for the tickets it holds; a killed replica's leak ends when its leases expire.

When the shared store (Redis) fails, the limiter falls back to its own in-process
counters (fail-open for rates and concurrency across replicas, documented) with a gauge
and a warning, probes the store every few seconds and returns to it when it answers.
Budgets keep enforcing in the fallback from the last spend known here (the recorded
spend, or what the shared store last reported, whichever is higher).

A limiter with no limit configured anywhere costs one comparison per request: it hands
out a shared ticket that does nothing.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import os
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.actor import Actor
from aibridge.clock import SYSTEM_CLOCK, Clock
from aibridge.governance.budgets import (
    GLOBAL_SUBJECT,
    SpendKey,
    key_subject,
    recorded_spend,
    user_subject,
)
from aibridge.governance.estimate import Estimate, estimate_cost_pusd, estimate_tokens
from aibridge.governance.limitstore import (
    BUDGET,
    CONCURRENCY,
    REQUESTS,
    TOKENS,
    WINDOW,
    AdmitResult,
    Check,
    CheckState,
    LimitStore,
    Settlement,
    StoreUnavailable,
)
from aibridge.governance.memory_store import MemoryStore
from aibridge.governance.metrics import LimiterMetrics
from aibridge.governance.model_access import model_allowed
from aibridge.governance.periods import period_bounds, time_zone
from aibridge.governance.prices import EMPTY_PRICES, PICO_PER_USD, PriceBook
from aibridge.limits import NO_LIMITS, Budget, BudgetPeriod, Limits, usd_number

log = logging.getLogger(__name__)

MODEL_NOT_ALLOWED = "model_not_allowed"
CONCURRENCY_LIMITED = "concurrency_limited"
REQUEST_RATE_LIMITED = "request_rate_limited"
TOKEN_RATE_LIMITED = "token_rate_limited"
BUDGET_EXCEEDED = "budget_exceeded"
ERROR_TYPES = (
    MODEL_NOT_ALLOWED,
    CONCURRENCY_LIMITED,
    REQUEST_RATE_LIMITED,
    TOKEN_RATE_LIMITED,
    BUDGET_EXCEEDED,
)

PROBE_INTERVAL = 2.0
"""Seconds between attempts to reach the shared store again while in fallback."""
FALLBACK_WARNING_INTERVAL = 60.0
"""At most one "still unreachable" warning per this many seconds."""
_ADVERB = {"day": "daily", "week": "weekly", "month": "monthly"}
SPEND_KEY_GRACE = 86_400
"""Seconds a period's spend counter outlives the period (late settlements still land)."""


class LimiterSettings(Protocol):
    """The settings the limiter reads (:class:`aibridge.config.Settings` has them all)."""

    @property
    def default_limits(self) -> Limits:
        """Every user's unset limits."""
        ...

    @property
    def global_budget_limit(self) -> Budget | None:
        """The whole gateway's budget."""
        ...

    @property
    def max_concurrency(self) -> int:
        """This replica's in-flight limit (0: none)."""
        ...

    @property
    def budget_timezone(self) -> str:
        """IANA zone of the budget periods."""
        ...

    @property
    def budget_soft_fraction(self) -> float:
        """Fraction of a budget past which a warning is logged."""
        ...

    @property
    def budget_reconcile_interval(self) -> float:
        """Seconds between rebuilds of the spend from the records."""
        ...

    @property
    def limit_default_max_tokens(self) -> int:
        """Output tokens reserved by default (and the cap)."""
        ...

    @property
    def limit_lease_seconds(self) -> float:
        """Lease of a slot or reservation."""
        ...

    @property
    def redis_url(self) -> str:
        """The shared store (empty: in-process)."""
        ...

    @property
    def redis_prefix(self) -> str:
        """Prefix of every Redis key."""
        ...


@dataclass(frozen=True, slots=True)
class LimiterConfig:
    """What the limiter needs from the settings, parsed once."""

    defaults: Limits = NO_LIMITS
    global_budget: Budget | None = None
    max_concurrency: int = 0
    tz: ZoneInfo = field(default_factory=lambda: time_zone("UTC"))
    soft_fraction: float = 0.8
    reconcile_interval: float = 60.0
    default_max_tokens: int = 4096
    lease_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: LimiterSettings) -> LimiterConfig:
        """The configuration of ``settings``."""
        return cls(
            defaults=settings.default_limits,
            global_budget=settings.global_budget_limit,
            max_concurrency=settings.max_concurrency,
            tz=time_zone(settings.budget_timezone),
            soft_fraction=settings.budget_soft_fraction,
            reconcile_interval=settings.budget_reconcile_interval,
            default_max_tokens=settings.limit_default_max_tokens,
            lease_seconds=settings.limit_lease_seconds,
        )


# --------------------------------------------------------------------------------------
# The API
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Demand:
    """What a request asks for, as far as the limits care."""

    actor: Actor
    """The request's actor (its limits as of this request)."""
    provider_name: str
    provider_type: str
    model: str
    """"" when the request names no model."""
    body_bytes: int
    max_output_tokens: int | None
    hold_slot: bool = True
    """False for a ``response.create`` inside an already open WebSocket (the socket holds
    the slot)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused, ready to answer in the provider's error shape."""

    error_type: str
    status: int
    message: str
    retry_after: int | None
    """Whole seconds, rounded up (None for 403)."""
    headers: Mapping[str, str]
    """``Retry-After`` and the ``x-ratelimit-*`` trios that apply."""


class Ticket:
    """An admitted request's hold on the limits; settle it when the interception ends.

    This base class is the ticket of requests no limit applies to: it does nothing.
    """

    __slots__ = ("headers",)

    def __init__(self, headers: Mapping[str, str] | None = None) -> None:
        self.headers: Mapping[str, str] = headers if headers is not None else {}
        """``x-ratelimit-*`` headers for the admitted response (may be empty)."""

    def add_usage(
        self,
        provider_type: str,
        models: tuple[str | None, ...],
        input: int,
        output: int,
        cache_read: int,
        cache_write: int,
    ) -> None:
        """Count one upstream call's recorded usage (``input`` uncached; ``models`` the
        response's then the request's model, as the recorder prices them)."""

    async def settle(self) -> None:
        """Replace the reservations by the exact usage and free the slots (idempotent;
        never raises)."""

    def release_nowait(self) -> None:
        """:meth:`settle` in the background (for cancellation paths)."""


NO_LIMIT_TICKET = Ticket()
"""Shared by every request no limit applies to."""


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One budget that applies to an actor, as far as this replica knows."""

    scope: str
    """``user``, ``key`` or ``global``."""
    amount_usd: Decimal
    period: BudgetPeriod
    spent_usd: Decimal
    resets_at: datetime
    soft_exceeded: bool

    @property
    def remaining_ratio(self) -> float:
        """Fraction left (0 when exhausted)."""
        if self.amount_usd <= 0:
            return 0.0
        return max(0.0, float(1 - self.spent_usd / self.amount_usd))


# --------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------


class _BudgetInfo(NamedTuple):
    """What a budget check means, for messages and the soft threshold."""

    scope: str
    budget: Budget
    period_end: datetime


def _who(scope: str, actor: Actor) -> str:
    """The subject of a limit as messages name it (built only when needed)."""
    if scope == "user":
        return f"user {actor.username}"
    if scope == "key":
        return f"key {actor.key_id}"
    return "the gateway (global budget)"


@functools.lru_cache(maxsize=1024)
def _pusd(amount_usd: Decimal) -> int:
    return int(amount_usd * PICO_PER_USD)


def _duration(seconds: float) -> str:
    """Whole seconds rounded up, as OpenAI's ``x-ratelimit-reset-*`` (``1m30s``)."""
    total = max(0, math.ceil(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _usd(pusd: int) -> str:
    """Pico-USD as a short dollar amount for messages (cent precision, more when tiny)."""
    usd = Decimal(pusd).scaleb(-12)
    return f"${usd:.2f}" if usd >= 1 or usd == 0 else f"${usd.normalize():f}"


def _trio(
    kind: str, checks: Sequence[Check], states: Sequence[CheckState], now: float, extra: int
) -> dict[str, str]:
    """The ``x-ratelimit-*-{requests,tokens}`` trio of the stricter subject of ``kind``."""
    best: tuple[int, int, float] | None = None
    for check, state in zip(checks, states, strict=False):
        if check.kind != kind:
            continue
        remaining = max(0, check.limit - state.used - (1 if kind == REQUESTS else extra))
        if best is None or remaining < best[1]:
            best = (check.limit, remaining, state.reset_at)
    if best is None:
        return {}
    name = "requests" if kind == REQUESTS else "tokens"
    return {
        f"x-ratelimit-limit-{name}": str(best[0]),
        f"x-ratelimit-remaining-{name}": str(best[1]),
        f"x-ratelimit-reset-{name}": _duration(min(best[2] - now, WINDOW)),
    }


class _Held(Ticket):
    """A ticket that holds slots or reservations (see :class:`Ticket`)."""

    __slots__ = (
        "_checks",
        "_cost",
        "_id",
        "_limiter",
        "_local_slot",
        "_period_keys",
        "_store",
        "_tokens",
        "_wants_cost",
        "done",
    )

    def __init__(
        self,
        limiter: Limiter,
        ticket_id: str,
        store: LimitStore | None,
        checks: tuple[Check, ...],
        local_slot: bool,
        headers: Mapping[str, str],
        wants_cost: bool = False,
    ) -> None:
        super().__init__(headers)
        self._limiter = limiter
        self._id = ticket_id
        self._store = store
        self._checks = checks
        self._local_slot = local_slot
        self._tokens = 0
        self._cost = 0
        self._wants_cost = wants_cost
        self.done = False

    def add_usage(
        self,
        provider_type: str,
        models: tuple[str | None, ...],
        input: int,
        output: int,
        cache_read: int,
        cache_write: int,
    ) -> None:
        """Count one upstream call's usage (see :meth:`Ticket.add_usage`)."""
        # Cache reads are deliberately left out of the token rate (module docstring).
        self._tokens += input + cache_write + output
        if self._wants_cost:
            cost = self._limiter.prices.table.cost_pusd(
                provider_type,
                models,
                input=input,
                output=output,
                cache_read=cache_read,
                cache_write=cache_write,
            )
            if cost:
                self._cost += cost

    async def settle(self) -> None:
        """Settle once (see :meth:`Ticket.settle`)."""
        if self.done:
            return
        self.done = True
        await self._limiter._settle(self)

    def release_nowait(self) -> None:
        """Settle in the background (see :meth:`Ticket.release_nowait`)."""
        if not self.done:
            self._limiter._background(self.settle())


class Limiter:
    """Admits requests against the configured and per-actor limits (module docstring)."""

    def __init__(
        self,
        config: LimiterConfig,
        *,
        prices: PriceBook | None = None,
        clock: Clock = SYSTEM_CLOCK,
        store: LimitStore | None = None,
        sessions: async_sessionmaker[AsyncSession] | None = None,
        metrics: LimiterMetrics | None = None,
        replica_id: str | None = None,
    ) -> None:
        self.config = config
        self.prices = prices if prices is not None else PriceBook(EMPTY_PRICES)
        self.clock = clock
        self.metrics = metrics if metrics is not None else LimiterMetrics(None)
        self.local = MemoryStore()
        """This replica's counters: the store without Redis, the fallback with it."""
        self.store: LimitStore = store if store is not None else self.local
        self._sessions = sessions
        self._replica = replica_id or os.urandom(6).hex()
        self._ids = itertools.count(1)
        self._inflight = 0
        self._held: dict[str, _Held] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._maintainer: asyncio.Task[None] | None = None
        self.fallback = False
        """True while the shared store is unreachable and the local counters are used."""
        self._fallback_warned = 0.0
        self._db_spend: dict[SpendKey, int] = {}
        self._known_spend: dict[tuple[str, int], int] = {}
        self._budgets: dict[str, tuple[str, int, BudgetPeriod]] = {}
        """Budget subject → (metric label, amount, period), for the remaining-ratio gauge."""
        self._soft_warned: set[tuple[str, int]] = set()
        self._periods: dict[BudgetPeriod, tuple[float, float, int, datetime]] = {}
        self._has_defaults = not config.defaults.empty
        self._nothing_global = config.global_budget is None and config.max_concurrency == 0
        self.metrics.watch_budgets(self._budget_ratios)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild the budgets from the records, then keep leases, budgets and the
        shared store's health up to date in one background task."""
        await self.reconcile()
        if self._maintainer is None:
            self._maintainer = asyncio.create_task(self._maintain(), name="limiter")

    async def aclose(self) -> None:
        """Stop the background task, settle nothing more, close the store."""
        if self._maintainer is not None:
            self._maintainer.cancel()
            await asyncio.gather(self._maintainer, return_exceptions=True)
            self._maintainer = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.store.aclose()

    async def _maintain(self) -> None:
        lease_every = self.config.lease_seconds / 3
        tick = min(lease_every, PROBE_INTERVAL)
        next_lease = next_reconcile = self.clock.monotonic()
        next_reconcile += self.config.reconcile_interval
        while True:
            # The one periodic task of the limiter (not one per request).
            await asyncio.sleep(tick)
            try:
                now = self.clock.monotonic()
                if self.fallback:
                    await self.probe()
                if now >= next_lease:
                    next_lease = now + lease_every
                    await self.refresh_leases()
                if now >= next_reconcile:
                    next_reconcile = now + self.config.reconcile_interval
                    await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("limiter maintenance failed; retrying")

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- admission -------------------------------------------------------------------------

    async def admit(self, demand: Demand) -> Ticket | Refusal:
        """A ticket for ``demand``, or why it is refused (never raises for store outages)."""
        actor = demand.actor
        user_limits = actor.user_limits
        key_limits = actor.key_limits
        if self._has_defaults:
            user_limits = _inherit(user_limits, self.config.defaults)
        if (
            self._nothing_global
            and (user_limits is NO_LIMITS or user_limits.empty)
            and (key_limits is NO_LIMITS or key_limits.empty)
        ):
            return NO_LIMIT_TICKET
        started = time.perf_counter()
        try:
            result = await self._admit(demand, user_limits, key_limits)
        finally:
            self.metrics.duration.labels().observe(time.perf_counter() - started)
        if isinstance(result, Refusal):
            self.metrics.refusals.labels(result.error_type).inc()
        return result

    async def _admit(
        self, demand: Demand, user_limits: Limits, key_limits: Limits
    ) -> Ticket | Refusal:
        refusal = self._model_refusal(demand, user_limits, key_limits)
        if refusal is not None:
            return refusal
        now_dt = self.clock.now()
        now = now_dt.timestamp()
        local_slot = False
        if demand.hold_slot and self.config.max_concurrency:
            if self._inflight >= self.config.max_concurrency:
                return self._refusal(
                    CONCURRENCY_LIMITED,
                    f"This gateway replica is serving its maximum of "
                    f"{self.config.max_concurrency} concurrent requests "
                    f"(max_concurrency); retry shortly.",
                    1,
                )
            self._inflight += 1
            local_slot = True
        try:
            checks, scopes, budgets = self._checks(demand, user_limits, key_limits, now_dt)
        except BaseException:
            self._inflight -= local_slot
            raise
        if not checks:
            if not local_slot:
                return NO_LIMIT_TICKET
            ticket_id = f"{self._replica}:{next(self._ids)}"
            ticket = _Held(self, ticket_id, None, (), True, {})
            return ticket
        ticket_id = f"{self._replica}:{next(self._ids)}"
        lease_until = now + self.config.lease_seconds
        store, result = await self._store_admit(ticket_id, now, lease_until, checks)
        if budgets:
            self._note_spend(checks, result.states, budgets, demand.actor)
        if not result.admitted:
            self._inflight -= local_slot
            index = len(result.states) - 1
            return self._check_refusal(
                checks,
                result.states,
                index,
                _who(scopes[index], demand.actor),
                budgets.get(index),
                now,
            )
        headers: dict[str, str] = {}
        has_requests = has_tokens = leased = False
        for check in checks:
            if check.kind == REQUESTS:
                has_requests = True
            elif check.kind == TOKENS:
                has_tokens = leased = True
            else:
                leased = True
        if has_requests:
            headers.update(_trio(REQUESTS, checks, result.states, now, 0))
        if has_tokens:
            amount = next(c.amount for c in checks if c.kind == TOKENS)
            headers.update(_trio(TOKENS, checks, result.states, now, amount))
        ticket = _Held(self, ticket_id, store, checks, local_slot, headers, bool(budgets))
        if leased:
            self._held[ticket_id] = ticket
        return ticket

    async def open_slot(self, actor: Actor) -> Ticket | Refusal:
        """A concurrency slot for something other than one request (an open Responses
        WebSocket holds one for its lifetime): the replica's ``max_concurrency`` and the
        user's and the key's ``max_concurrent`` only; no model check, no request counted,
        nothing reserved (each ``response.create`` on the socket is admitted on its own,
        with ``hold_slot=False``). Settle the ticket when the socket closes."""
        user_limits = actor.user_limits
        if self._has_defaults:
            user_limits = _inherit(user_limits, self.config.defaults)
        own = Limits(max_concurrent=user_limits.max_concurrent)
        key = Limits(max_concurrent=actor.key_limits.max_concurrent)
        if self.config.max_concurrency == 0 and own.empty and key.empty:
            return NO_LIMIT_TICKET
        return await self._admit(Demand(actor, "", "", "", 0, None), own, key)

    def _model_refusal(
        self, demand: Demand, user_limits: Limits, key_limits: Limits
    ) -> Refusal | None:
        for limits, who in (
            (user_limits, f"user {demand.actor.username}"),
            (key_limits, f"key {demand.actor.key_id}"),
        ):
            patterns = limits.allowed_models
            if model_allowed(patterns, demand.provider_name, demand.model):
                continue
            allowed = ", ".join(patterns or ()) or "none"
            if not demand.model:
                message = (
                    f"The request names no model, but {who} may only use these models: "
                    f"{allowed}. Name one of them in the request."
                )
            else:
                message = (
                    f"Model {demand.model!r} on provider {demand.provider_name!r} is not "
                    f"allowed for {who}; allowed models: {allowed}."
                )
            return Refusal(MODEL_NOT_ALLOWED, 403, message, None, {})
        return None

    def _checks(
        self, demand: Demand, user_limits: Limits, key_limits: Limits, now_dt: datetime
    ) -> tuple[tuple[Check, ...], list[str], dict[int, _BudgetInfo]]:
        """The ordered checks of the demand, the scope of each (``user``, ``key``,
        ``global``), and the budget checks' meaning by index."""
        actor = demand.actor
        user = user_subject(actor.user_id)
        key = key_subject(actor.key_id)
        checks: list[Check] = []
        scopes: list[str] = []
        if demand.hold_slot:
            if user_limits.max_concurrent:
                checks.append(Check(CONCURRENCY, user, user_limits.max_concurrent))
                scopes.append("user")
            if key_limits.max_concurrent:
                checks.append(Check(CONCURRENCY, key, key_limits.max_concurrent))
                scopes.append("key")
        if user_limits.requests_per_minute:
            checks.append(Check(REQUESTS, user, user_limits.requests_per_minute))
            scopes.append("user")
        if key_limits.requests_per_minute:
            checks.append(Check(REQUESTS, key, key_limits.requests_per_minute))
            scopes.append("key")
        estimate: Estimate | None = None
        if user_limits.tokens_per_minute or key_limits.tokens_per_minute:
            estimate = self._estimate(demand)
            if user_limits.tokens_per_minute:
                checks.append(Check(TOKENS, user, user_limits.tokens_per_minute, estimate.tokens))
                scopes.append("user")
            if key_limits.tokens_per_minute:
                checks.append(Check(TOKENS, key, key_limits.tokens_per_minute, estimate.tokens))
                scopes.append("key")
        budgets: dict[int, _BudgetInfo] = {}
        global_budget = self.config.global_budget
        if user_limits.budget is None and key_limits.budget is None and global_budget is None:
            return tuple(checks), scopes, budgets
        if estimate is None:
            estimate = self._estimate(demand)
        cost = estimate_cost_pusd(self.prices.table, demand.provider_type, demand.model, estimate)
        for subject, budget, scope in (
            (user, user_limits.budget, "user"),
            (key, key_limits.budget, "key"),
            (GLOBAL_SUBJECT, global_budget, "global"),
        ):
            if budget is None:
                continue
            start, _, expire_at, end_dt = self._period(budget.period, now_dt)
            period_start = int(start)
            budget_subject = f"{subject}|{budget.period}"
            seed = max(
                self._db_spend.get((subject, budget.period, period_start), 0),
                self._known_spend.get((budget_subject, period_start), 0),
            )
            amount = _pusd(budget.amount_usd)
            budgets[len(checks)] = _BudgetInfo(scope, budget, end_dt)
            checks.append(
                Check(BUDGET, budget_subject, amount, cost, period_start, expire_at, seed)
            )
            scopes.append(scope)
            known = self._budgets.get(budget_subject)
            if known is None or known[1] != amount:
                label = "global" if scope == "global" else _who(scope, actor)
                self._budgets[budget_subject] = (label, amount, budget.period)
        return tuple(checks), scopes, budgets

    def _estimate(self, demand: Demand) -> Estimate:
        return estimate_tokens(
            demand.body_bytes, demand.max_output_tokens, self.config.default_max_tokens
        )

    def _period(self, period: BudgetPeriod, now_dt: datetime) -> tuple[float, float, int, datetime]:
        """(start, end, counter expiry) in epoch seconds and the end as a datetime,
        cached until the period ends (computing it takes time zone arithmetic)."""
        cached = self._periods.get(period)
        now = now_dt.timestamp()
        if cached is not None and cached[0] <= now < cached[1]:
            return cached
        start_dt, end_dt = period_bounds(period, now_dt, self.config.tz)
        end = end_dt.timestamp()
        entry = (start_dt.timestamp(), end, int(end) + SPEND_KEY_GRACE, end_dt)
        self._periods[period] = entry
        return entry

    async def _store_admit(
        self, ticket_id: str, now: float, lease_until: float, checks: Sequence[Check]
    ) -> tuple[LimitStore, AdmitResult]:
        store = self.store
        if store is self.local or self.fallback:
            return self.local, self.local.admit_now(ticket_id, now, lease_until, checks)
        try:
            return store, await store.admit(ticket_id, now, lease_until, checks)
        except StoreUnavailable as exc:
            self._enter_fallback(exc)
            return self.local, self.local.admit_now(ticket_id, now, lease_until, checks)

    def _refusal(
        self,
        error_type: str,
        message: str,
        retry_after: int,
        headers: Mapping[str, str] | None = None,
    ) -> Refusal:
        all_headers = {"retry-after": str(retry_after)}
        if headers:
            all_headers.update(headers)
        return Refusal(error_type, 429, message, retry_after, all_headers)

    def _check_refusal(
        self,
        checks: Sequence[Check],
        states: Sequence[CheckState],
        index: int,
        who: str,
        budget: _BudgetInfo | None,
        now: float,
    ) -> Refusal:
        check = checks[index]
        state = states[index]
        trios: dict[str, str] = {}
        trios.update(_trio(REQUESTS, checks, states, now, 0))
        tokens = [c.amount for c in checks[: index + 1] if c.kind == TOKENS]
        trios.update(_trio(TOKENS, checks, states, now, tokens[0] if tokens else 0))
        if check.kind == CONCURRENCY:
            return self._refusal(
                CONCURRENCY_LIMITED,
                f"Concurrency limit reached: {who} may have {check.limit} requests in "
                f"flight at once (max_concurrent) and has {state.used}; retry when one "
                f"finishes.",
                1,
                trios,
            )
        if check.kind in (REQUESTS, TOKENS):
            # At most the window: tokens settled in the current second count until that
            # whole second has left it (up to 61 s from now), but the official SDKs
            # honour a Retry-After of at most 60 s and beyond it are told not to retry
            # at all (x-should-retry). A retry landing in that last second is refused
            # again with Retry-After: 1.
            retry = max(1, min(WINDOW, math.ceil(state.reset_at - now)))
            resets = datetime.fromtimestamp(now + retry, UTC).isoformat(timespec="seconds")
            if check.kind == REQUESTS:
                return self._refusal(
                    REQUEST_RATE_LIMITED,
                    f"Request rate limit exceeded: {who} may send {check.limit} requests per "
                    f"minute (requests_per_minute); it resets in {retry}s (at {resets}).",
                    retry,
                    trios,
                )
            return self._refusal(
                TOKEN_RATE_LIMITED,
                f"Token rate limit exceeded: {who} may use {check.limit} tokens per minute "
                f"(tokens_per_minute) and has {state.used} used or reserved in the last "
                f"minute; it resets in {retry}s (at {resets}).",
                retry,
                trios,
            )
        assert budget is not None
        retry = max(1, math.ceil(budget.period_end.timestamp() - now))
        reserved = state.used - state.spend
        in_flight = f" plus {_usd(reserved)} reserved by requests in flight" if reserved else ""
        return self._refusal(
            BUDGET_EXCEEDED,
            f"Budget exceeded: {who} has spent {_usd(state.spend)}{in_flight} of its "
            f"${usd_number(budget.budget.amount_usd)} {_ADVERB[budget.budget.period]} budget; "
            f"it resets at {budget.period_end.isoformat(timespec='seconds')}.",
            retry,
            trios,
        )

    # -- budgets ---------------------------------------------------------------------------

    def _note_spend(
        self,
        checks: Sequence[Check],
        states: Sequence[CheckState],
        budgets: Mapping[int, _BudgetInfo],
        actor: Actor,
    ) -> None:
        """Remember the spend the store reported (the fallback's floor) and warn once per
        subject and period past the soft threshold."""
        for index, info in budgets.items():
            if index >= len(states):
                break
            check = checks[index]
            key = (check.subject, check.period_start)
            spend = states[index].spend
            if spend > self._known_spend.get(key, 0):
                self._known_spend[key] = spend
            if key not in self._soft_warned:
                self._soft_check(key, spend, check.limit, info.scope, _who(info.scope, actor))

    def _soft_check(
        self, key: tuple[str, int], spend: int, amount: int, scope: str, who: str
    ) -> None:
        if key in self._soft_warned or spend < amount * self.config.soft_fraction:
            return
        self._soft_warned.add(key)
        self.metrics.soft_exceeded.labels(scope).inc()
        log.warning(
            "budget soft threshold crossed: %s has spent %s of %s this period (%.0f%%)",
            who,
            _usd(spend),
            _usd(amount),
            100 * spend / amount if amount else 100.0,
        )

    async def reconcile(self) -> None:
        """Rebuild the period's spend from the recorded interceptions (the floor of every
        budget counter) and forget the previous periods' bookkeeping."""
        if self._sessions is None:
            return
        try:
            self._db_spend = await recorded_spend(self._sessions, self.clock.now(), self.config.tz)
        except Exception as exc:
            # Budgets keep enforcing from the last values; the next round retries.
            log.warning("could not rebuild budget spend from the database: %s", exc)
            return
        current = {int(self._period(p, self.clock.now())[0]) for p in ("day", "week", "month")}
        self._known_spend = {k: v for k, v in self._known_spend.items() if k[1] in current}
        self._soft_warned = {k for k in self._soft_warned if k[1] in current}

    def _spent(self, budget_subject: str, subject: str, period: BudgetPeriod, start: int) -> int:
        return max(
            self._db_spend.get((subject, period, start), 0),
            self._known_spend.get((budget_subject, start), 0),
        )

    def budget_status(self, actor: Actor) -> list[BudgetStatus]:
        """The budgets that apply to ``actor`` with the spend this replica knows (the
        recorded spend or what the store last reported, whichever is higher)."""
        now_dt = self.clock.now()
        user_limits = _inherit(actor.user_limits, self.config.defaults)
        scoped: list[tuple[str, str, Budget | None]] = [
            ("user", user_subject(actor.user_id), user_limits.budget),
            ("key", key_subject(actor.key_id), actor.key_limits.budget),
            ("global", GLOBAL_SUBJECT, self.config.global_budget),
        ]
        out: list[BudgetStatus] = []
        for scope, subject, budget in scoped:
            if budget is None:
                continue
            start, _, _, end_dt = self._period(budget.period, now_dt)
            budget_subject = f"{subject}|{budget.period}"
            spent = self._spent(budget_subject, subject, budget.period, int(start))
            out.append(
                BudgetStatus(
                    scope=scope,
                    amount_usd=budget.amount_usd,
                    period=budget.period,
                    spent_usd=Decimal(spent).scaleb(-12).normalize() + Decimal(0),
                    resets_at=end_dt,
                    soft_exceeded=spent >= _pusd(budget.amount_usd) * self.config.soft_fraction,
                )
            )
        return out

    def _budget_ratios(self) -> Iterable[tuple[str, float]]:
        now_dt = self.clock.now()
        for budget_subject, (label, amount, period) in list(self._budgets.items()):
            subject = budget_subject.rpartition("|")[0]
            start = int(self._period(period, now_dt)[0])
            spent = self._spent(budget_subject, subject, period, start)
            yield label, max(0.0, 1 - spent / amount) if amount else 0.0

    # -- settlement and leases -------------------------------------------------------------

    async def _settle(self, ticket: _Held) -> None:
        if ticket._local_slot:
            self._inflight -= 1
        self._held.pop(ticket._id, None)
        store = ticket._store
        if store is None or not ticket._checks:
            return
        settlements: list[Settlement] = []
        for check in ticket._checks:
            if check.kind == CONCURRENCY:
                settlements.append(Settlement(check))
            elif check.kind == TOKENS:
                settlements.append(Settlement(check, ticket._tokens))
            elif check.kind == BUDGET:
                settlements.append(Settlement(check, ticket._cost))
                key = (check.subject, check.period_start)
                spent = max(self._known_spend.get(key, 0), check.seed) + ticket._cost
                self._known_spend[key] = spent
                scope, _, _ = check.subject.partition(":")
                self._soft_check(
                    key,
                    spent,
                    check.limit,
                    {"u": "user", "k": "key"}.get(scope, "global"),
                    self._budgets.get(check.subject, (check.subject,))[0],
                )
        now = self.clock.now().timestamp()
        try:
            if store is self.local:
                self.local.settle_now(ticket._id, now, settlements)
            elif not self.fallback:
                await store.settle(ticket._id, now, settlements)
            # In fallback a shared-store ticket is left to its lease; its spend comes back
            # from the records at the next rebuild.
        except StoreUnavailable as exc:
            self._enter_fallback(exc)
        except Exception:
            log.exception("settling a limiter ticket failed; its lease will expire")

    async def refresh_leases(self) -> None:
        """Extend the leases of every slot and reservation this replica holds, one
        batched call per store."""
        now = self.clock.now().timestamp()
        lease_until = now + self.config.lease_seconds
        by_store: dict[int, tuple[LimitStore, list[tuple[str, Check]]]] = {}
        for ticket_id, ticket in list(self._held.items()):
            if ticket._store is None:
                continue
            entry = by_store.setdefault(id(ticket._store), (ticket._store, []))
            entry[1].extend((ticket_id, c) for c in ticket._checks if c.kind != REQUESTS)
        by_store.setdefault(id(self.local), (self.local, []))
        for store, leases in by_store.values():
            if store is not self.local and self.fallback:
                continue
            try:
                await store.refresh(now, leases, lease_until)
            except StoreUnavailable as exc:
                self._enter_fallback(exc)

    # -- fallback --------------------------------------------------------------------------

    def _enter_fallback(self, exc: BaseException) -> None:
        if not self.fallback:
            self.fallback = True
            self.metrics.fallback.labels().value = 1.0
            self._fallback_warned = self.clock.monotonic()
            log.warning(
                "the shared limiter store is unreachable (%s): limits fall back to this "
                "replica's own counters; budgets keep enforcing from the last known spend",
                exc,
            )

    async def probe(self) -> bool:
        """Try the shared store again while in fallback; True when back on it."""
        if not self.fallback or self.store is self.local:
            return not self.fallback
        try:
            await self.store.ping()
        except StoreUnavailable as exc:
            now = self.clock.monotonic()
            if now - self._fallback_warned >= FALLBACK_WARNING_INTERVAL:
                self._fallback_warned = now
                log.warning("the shared limiter store is still unreachable: %s", exc)
            return False
        self.fallback = False
        self.metrics.fallback.labels().value = 0.0
        log.warning("the shared limiter store is reachable again: limits are shared again")
        return True


@functools.lru_cache(maxsize=4096)
def _inherit(limits: Limits, defaults: Limits) -> Limits:
    """``limits`` over ``defaults`` (cached: few distinct limit values exist)."""
    return limits.inherit(defaults)


def build_limiter(
    settings: LimiterSettings,
    *,
    prices: PriceBook | None = None,
    sessions: async_sessionmaker[AsyncSession] | None = None,
    metrics: LimiterMetrics | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Limiter:
    """The limiter of ``settings``: over Redis when ``redis_url`` is set, else in-process."""
    store: LimitStore | None = None
    if settings.redis_url:
        # Imported here: a gateway without Redis never loads the client.
        from aibridge.governance.redis_store import RedisStore

        store = RedisStore.from_url(settings.redis_url, settings.redis_prefix)
    return Limiter(
        LimiterConfig.from_settings(settings),
        prices=prices,
        clock=clock,
        store=store,
        sessions=sessions,
        metrics=metrics,
    )
