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

A limiter with no limit configured anywhere costs a plan look-up per request (about half
a microsecond): it hands out a shared ticket that does nothing. Everything that depends
only on an actor's limits is worked out once per actor (:class:`_Plan`); what the
benchmark measures and why is in docs/benchmarks.md, "Limiter (issue 14)".
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.actor import Actor
from aibridge.clock import SYSTEM_CLOCK, Clock, SystemClock
from aibridge.governance.budgets import (
    GLOBAL_SUBJECT,
    SpendKey,
    key_subject,
    recorded_spend,
    user_subject,
)
from aibridge.governance.estimate import estimate_cost_pusd, estimate_tokens
from aibridge.governance.limitstore import (
    BUDGET,
    CONCURRENCY,
    REQUESTS,
    TOKENS,
    WINDOW,
    AdmitResult,
    Check,
    LimitStore,
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


class Demand(NamedTuple):
    """What a request asks for, as far as the limits care. (Made for every request, limits
    or not: a named tuple is built in half the time of a frozen dataclass.)"""

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

    counts: ClassVar[bool] = False
    """Whether :meth:`add_usage` does anything (False: the settlement addon skips it)."""

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


class _BudgetSpec(NamedTuple):
    """One budget of a plan (its counter's identity changes with the period)."""

    subject: str
    """``u:<id>``, ``k:<id>`` or ``g`` (the recorded spend's subject)."""
    budget_subject: str
    """The counter's subject: ``<subject>|<period>``."""
    period: BudgetPeriod
    amount: int
    """Pico-USD."""
    scope: str
    budget: Budget


class _Pending(NamedTuple):
    """An admission waiting for the shared store's answer."""

    plan: _Plan
    ticket_id: str
    now: float
    lease_until: float
    checks: tuple[Check, ...]
    tokens: int
    cost: int
    local_slot: bool


MAX_PLANS = 4096
"""Plans kept at most (see :meth:`Limiter._plan`)."""
MAX_MODEL_DECISIONS = 64
"""Model-access decisions kept per plan (a client uses a handful of models)."""


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


class _Plan:
    """What one actor's limits mean for its requests, worked out once per actor object:
    the static checks (concurrency, request rate) ready to pass to the store as they are,
    the token rates and budgets to size per request, where each kind sits in the checks,
    and the model-access decisions taken so far. Built by :meth:`Limiter._plan`; never
    mutated afterwards except for the decision cache."""

    __slots__ = (
        "_decisions",
        "actor",
        "budget_at",
        "budgets",
        "built",
        "built_until",
        "built_version",
        "hold_slot",
        "leased",
        "limits",
        "models",
        "nothing",
        "requests_at",
        "scopes",
        "soft_floor",
        "static",
        "tokens",
        "tokens_at",
    )

    def __init__(
        self,
        actor: Actor,
        user_limits: Limits,
        key_limits: Limits,
        *,
        hold_slot: bool,
        nothing: bool,
        global_budget: Budget | None,
    ) -> None:
        self.actor = actor
        self.hold_slot = hold_slot
        self.nothing = nothing
        user = user_subject(actor.user_id)
        key = key_subject(actor.key_id)
        subjects = (("user", user, user_limits), ("key", key, key_limits))
        static: list[Check] = []
        scopes: list[str] = []
        if hold_slot:
            for scope, subject, limits in subjects:
                if limits.max_concurrent:
                    static.append(Check(CONCURRENCY, subject, limits.max_concurrent))
                    scopes.append(scope)
        requests_from = len(static)
        for scope, subject, limits in subjects:
            if limits.requests_per_minute:
                static.append(Check(REQUESTS, subject, limits.requests_per_minute))
                scopes.append(scope)
        self.requests_at = tuple(range(requests_from, len(static)))
        self.static = tuple(static)
        tokens: list[tuple[str, int]] = []
        for scope, subject, limits in subjects:
            if limits.tokens_per_minute:
                tokens.append((subject, limits.tokens_per_minute))
                scopes.append(scope)
        self.tokens = tuple(tokens)
        self.tokens_at = tuple(range(len(static), len(static) + len(tokens)))
        self.budget_at = len(scopes)
        budgets: list[_BudgetSpec] = []
        for scope, subject, budget in (
            ("user", user, user_limits.budget),
            ("key", key, key_limits.budget),
            ("global", GLOBAL_SUBJECT, global_budget),
        ):
            if budget is not None:
                budgets.append(
                    _BudgetSpec(
                        subject,
                        f"{subject}|{budget.period}",
                        budget.period,
                        _pusd(budget.amount_usd),
                        scope,
                        budget,
                    )
                )
                scopes.append(scope)
        self.budgets = tuple(budgets)
        self.scopes = tuple(scopes)
        self.limits = (
            *(check.limit for check in static),
            *(limit for _, limit in tokens),
            *(spec.amount for spec in budgets),
        )
        """Every check's limit, by index."""
        self.leased = len(scopes) > len(self.requests_at)
        """Holds anything with a lease (everything but request counts)."""
        self.models: tuple[tuple[str, ...] | None, tuple[str, ...] | None] | None = None
        if user_limits.allowed_models is not None or key_limits.allowed_models is not None:
            self.models = (user_limits.allowed_models, key_limits.allowed_models)
        self._decisions: dict[tuple[str, str], Refusal | None] = {}
        self.built: tuple[Check, ...] = ()
        """The checks for the in-process store (see :meth:`Limiter._checks`)."""
        self.built_version = -1
        self.built_until = -math.inf
        self.soft_floor = 0.0
        """The lowest soft threshold of the budgets (pico-USD): below it none is crossed."""

    def model_refusal(self, provider_name: str, model: str) -> Refusal | None:
        """Why ``model`` on ``provider_name`` is refused (None: allowed), decided once."""
        decisions = self._decisions
        try:
            return decisions[(provider_name, model)]
        except KeyError:
            pass
        if len(decisions) >= MAX_MODEL_DECISIONS:
            decisions.clear()
        refusal = decisions[(provider_name, model)] = self._decide(provider_name, model)
        return refusal

    def _decide(self, provider_name: str, model: str) -> Refusal | None:
        assert self.models is not None
        for patterns, scope in zip(self.models, ("user", "key"), strict=True):
            if model_allowed(patterns, provider_name, model):
                continue
            who = _who(scope, self.actor)
            allowed = ", ".join(patterns or ()) or "none"
            if not model:
                message = (
                    f"The request names no model, but {who} may only use these models: "
                    f"{allowed}. Name one of them in the request."
                )
            else:
                message = (
                    f"Model {model!r} on provider {provider_name!r} is not "
                    f"allowed for {who}; allowed models: {allowed}."
                )
            return Refusal(MODEL_NOT_ALLOWED, 403, message, None, _NO_HEADERS)
        return None


_NO_HEADERS: Mapping[str, str] = MappingProxyType({})
_new_tuple = tuple.__new__
_REQUEST_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
)
_TOKEN_HEADERS = (
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)


_SECONDS = tuple(f"{n}s" for n in range(60))


def _duration(seconds: float) -> str:
    """Whole seconds rounded up, as OpenAI's ``x-ratelimit-reset-*`` (``1m30s``)."""
    total = math.ceil(seconds) if seconds > 0 else 0
    if total < 60:
        return _SECONDS[total]
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s"


_RESETS = (*_SECONDS, _duration(60))
"""``_duration`` of 0 to 60 s (a rate window is a minute long)."""


def _usd(pusd: int) -> str:
    """Pico-USD as a short dollar amount for messages (cent precision, more when tiny)."""
    usd = Decimal(pusd).scaleb(-12)
    return f"${usd:.2f}" if usd >= 1 or usd == 0 else f"${usd.normalize():f}"


def _trio(
    headers: dict[str, str],
    names: tuple[str, str, str],
    indexes: tuple[int, ...],
    limits: tuple[int, ...],
    found: AdmitResult,
    now: float,
    taken: int,
) -> None:
    """Add the ``x-ratelimit-*`` trio ``names`` of the stricter of the checks at
    ``indexes`` (those evaluated; ``limits`` by index), counting ``taken`` as used by this
    request. Runs twice per admitted request: kept to plain indexing."""
    used = found.used
    evaluated = len(used)
    best = indexes[0]
    if best >= evaluated:
        return
    remaining = limits[best] - used[best] - taken
    for index in indexes[1:]:
        if index >= evaluated:
            break
        left = limits[index] - used[index] - taken
        if left < remaining:
            best, remaining = index, left
    headers[names[0]] = str(limits[best])
    headers[names[1]] = str(remaining) if remaining > 0 else "0"
    # At most the window (see _check_refusal: a settled second counts up to 61 s).
    reset = min(found.reset_at[best] - now, WINDOW)
    headers[names[2]] = _RESETS[math.ceil(reset)] if 0 < reset <= 60 else _duration(reset)


class _Held(Ticket):
    """A ticket that holds slots or reservations (see :class:`Ticket`)."""

    counts: ClassVar[bool] = True

    __slots__ = (
        "_checks",
        "_cost",
        "_id",
        "_limiter",
        "_local_slot",
        "_plan",
        "_store",
        "_tokens",
        "done",
    )

    def __init__(
        self,
        limiter: Limiter,
        ticket_id: str,
        store: LimitStore | None,
        plan: _Plan,
        checks: tuple[Check, ...],
        local_slot: bool,
        headers: Mapping[str, str],
    ) -> None:
        self.headers = headers
        self._limiter = limiter
        self._id = ticket_id
        self._store = store
        self._plan = plan
        self._checks = checks
        self._local_slot = local_slot
        self._tokens = 0
        self._cost = 0
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
        if self._plan.budgets:
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
        # Synchronous for the in-process store (no second coroutine per request).
        pending = self._limiter._settle(self)
        if pending is not None:
            await pending

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
        # Epoch seconds per admission and settlement: time.time() is 50 ns, the Clock
        # protocol's now().timestamp() 450 (an injected clock still goes through it).
        self._epoch: Callable[[], float] = (
            time.time if type(clock) is SystemClock else lambda: clock.now().timestamp()
        )
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
        self._periods: dict[BudgetPeriod, tuple[int, float, int, datetime]] = {}
        self._plans: dict[tuple[int, int], _Plan] = {}
        self._spend_version = 0
        """Counts rebuilds of the recorded spend (the seeds of the plans' checks)."""
        """(id of an actor, mode) → its plan (see :meth:`_plan`)."""
        # The histogram's one child, looked up once: observing is all the hot path does.
        self._observe = self.metrics.duration.labels().observe
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

    def unlimited(self, actor: Actor) -> bool:
        """Whether no limit applies to ``actor``'s requests (holding a slot): then
        :meth:`admit` would answer :data:`NO_LIMIT_TICKET` at once, so the caller may skip
        it (and the ticket's settlement). Decided from the actor's cached plan, as
        :meth:`admit` decides it: limits set by a reload or the admin come with a new
        actor object, so they apply from the next request on."""
        plan = self._plans.get((id(actor), 0))
        if plan is None or plan.actor is not actor:
            plan = self._plan(actor, 0)
        return plan.nothing

    async def admit(self, demand: Demand) -> Ticket | Refusal:
        """A ticket for ``demand``, or why it is refused (never raises for store outages)."""
        actor = demand.actor
        mode = 0 if demand.hold_slot else 1
        plan = self._plans.get((id(actor), mode))
        if plan is None or plan.actor is not actor:
            plan = self._plan(actor, mode)
        if plan.nothing:
            return NO_LIMIT_TICKET
        started = time.perf_counter()
        try:
            result = self._admit(demand, plan)
            if isinstance(result, _Pending):
                result = await self._admit_shared(result)
        finally:
            self._observe(time.perf_counter() - started)
        if result.__class__ is Refusal:
            self.metrics.refusals.labels(result.error_type).inc()
        return result

    def _plan(self, actor: Actor, mode: int) -> _Plan:
        """The plan of ``actor``'s requests (``mode`` 0: holding a slot, 1: inside an open
        WebSocket, 2: the WebSocket's own slot), cached for the actor object (the auth
        cache hands the same one to every request of a key until its limits change)."""
        user_limits = actor.user_limits
        if self._has_defaults:
            user_limits = _inherit(user_limits, self.config.defaults)
        key_limits = actor.key_limits
        if mode == 2:
            user_limits = Limits(max_concurrent=user_limits.max_concurrent)
            key_limits = Limits(max_concurrent=key_limits.max_concurrent)
        plan = _Plan(
            actor,
            user_limits,
            key_limits,
            hold_slot=mode != 1,
            nothing=self._nothing_global
            and (user_limits is NO_LIMITS or user_limits.empty)
            and (key_limits is NO_LIMITS or key_limits.empty),
            global_budget=None if mode == 2 else self.config.global_budget,
        )
        for spec in plan.budgets:
            known = self._budgets.get(spec.budget_subject)
            if known is None or known[1] != spec.amount:
                label = "global" if spec.scope == "global" else _who(spec.scope, actor)
                self._budgets[spec.budget_subject] = (label, spec.amount, spec.period)
        if len(self._plans) >= MAX_PLANS:
            # Few actors are active at once: dropping every plan now and then is cheaper
            # than an LRU's bookkeeping per request.
            self._plans.clear()
        self._plans[(id(actor), mode)] = plan
        return plan

    def _admit(self, demand: Demand, plan: _Plan) -> Ticket | Refusal | _Pending:
        """Admit on the in-process store without a coroutine, or return what the shared
        store must be asked (:meth:`_admit_shared`)."""
        if plan.models is not None:
            refusal = plan.model_refusal(demand.provider_name, demand.model)
            if refusal is not None:
                return refusal
        now = self._epoch()
        local_slot = False
        max_concurrency = self.config.max_concurrency
        if max_concurrency and plan.hold_slot:
            if self._inflight >= max_concurrency:
                return self._refusal(
                    CONCURRENCY_LIMITED,
                    f"This gateway replica is serving its maximum of {max_concurrency} "
                    f"concurrent requests (max_concurrency); retry shortly.",
                    1,
                )
            self._inflight += 1
            local_slot = True
        try:
            checks, tokens, cost = self._checks(demand, plan, now)
        except BaseException:
            self._inflight -= local_slot
            raise
        ticket_id = f"{self._replica}:{next(self._ids)}"
        if not checks:
            if not local_slot:
                return NO_LIMIT_TICKET
            return _Held(self, ticket_id, None, plan, (), True, _NO_HEADERS)
        lease_until = now + self.config.lease_seconds
        if self.store is not self.local and not self.fallback:
            return _Pending(plan, ticket_id, now, lease_until, checks, tokens, cost, local_slot)
        result = self.local.admit_now(ticket_id, now, lease_until, checks, tokens, cost)
        return self._admitted(plan, ticket_id, now, checks, tokens, local_slot, self.local, result)

    async def _admit_shared(self, pending: _Pending) -> Ticket | Refusal:
        """Admit ``pending`` on the shared store (this replica's own when it fails)."""
        plan, ticket_id, now, lease_until, checks, tokens, cost, local_slot = pending
        store: LimitStore = self.store
        try:
            result = await store.admit(ticket_id, now, lease_until, checks)
        except StoreUnavailable as exc:
            self._enter_fallback(exc)
            store = self.local
            result = self.local.admit_now(ticket_id, now, lease_until, checks, tokens, cost)
        return self._admitted(plan, ticket_id, now, checks, tokens, local_slot, store, result)

    def _admitted(
        self,
        plan: _Plan,
        ticket_id: str,
        now: float,
        checks: tuple[Check, ...],
        tokens: int,
        local_slot: bool,
        store: LimitStore,
        result: AdmitResult,
    ) -> Ticket | Refusal:
        """The ticket or the refusal of what ``store`` found."""
        if plan.budgets and self.store is not self.local:
            # The spend a shared store reported: the floor should it fail. (The
            # in-process store needs no floor; its spend is noted as tickets settle.)
            self._note_spend(plan, checks, result)
        if not result.admitted:
            self._inflight -= local_slot
            index = len(result.used) - 1
            return self._check_refusal(checks, result, index, plan, now, tokens)
        headers: dict[str, str] = {}
        if plan.requests_at:
            _trio(headers, _REQUEST_HEADERS, plan.requests_at, plan.limits, result, now, 1)
        if plan.tokens_at:
            _trio(headers, _TOKEN_HEADERS, plan.tokens_at, plan.limits, result, now, tokens)
        ticket = _Held(self, ticket_id, store, plan, checks, local_slot, headers)
        if plan.leased:
            self._held[ticket_id] = ticket
        return ticket

    async def open_slot(self, actor: Actor) -> Ticket | Refusal:
        """A concurrency slot for something other than one request (an open Responses
        WebSocket holds one for its lifetime): the replica's ``max_concurrency`` and the
        user's and the key's ``max_concurrent`` only; no model check, no request counted,
        nothing reserved (each ``response.create`` on the socket is admitted on its own,
        with ``hold_slot=False``). Settle the ticket when the socket closes."""
        plan = self._plans.get((id(actor), 2))
        if plan is None or plan.actor is not actor:
            plan = self._plan(actor, 2)
        if self.config.max_concurrency == 0 and not plan.static:
            return NO_LIMIT_TICKET
        result = self._admit(Demand(actor, "", "", "", 0, None), plan)
        if isinstance(result, _Pending):
            return await self._admit_shared(result)
        return result

    def _checks(
        self, demand: Demand, plan: _Plan, now: float
    ) -> tuple[tuple[Check, ...], int, int]:
        """The ordered checks of the demand (the plan's static ones, then the token and
        budget reservations) and the tokens and pico-USD it reserves."""
        if not plan.tokens and not plan.budgets:
            return plan.static, 0, 0
        estimate = estimate_tokens(
            demand.body_bytes, demand.max_output_tokens, self.config.default_max_tokens
        )
        tokens = estimate.prompt_tokens + estimate.output_tokens
        cost = 0
        if plan.budgets:
            cost = estimate_cost_pusd(
                self.prices.table, demand.provider_type, demand.model, estimate
            )
        if self.store is self.local:
            # The in-process store takes the amounts apart and holds every spend counted
            # here itself, so its checks need only the recorded spend as the seed: one
            # tuple per actor, rebuilt when a period ends or the spend is rebuilt.
            if plan.built_version == self._spend_version and now < plan.built_until:
                return plan.built, tokens, cost
            plan.built = self._build(plan, now, 0, 0, with_known=False)
            plan.soft_floor = self.config.soft_fraction * min(
                (spec.amount for spec in plan.budgets), default=0
            )
            plan.built_version = self._spend_version
            plan.built_until = min(
                (self._period(spec.period, now)[1] for spec in plan.budgets), default=math.inf
            )
            return plan.built, tokens, cost
        return self._build(plan, now, tokens, cost, with_known=True), tokens, cost

    def _build(
        self, plan: _Plan, now: float, tokens: int, cost: int, *, with_known: bool
    ) -> tuple[Check, ...]:
        """The checks of ``plan`` reserving ``tokens`` and ``cost``, each budget seeded
        with the recorded spend (and, ``with_known``, the spend last seen here: a shared
        store may have lost it)."""
        checks = list(plan.static)
        # tuple.__new__ skips the named tuple's Python-level __new__ (0.2 µs instead of
        # 0.33 per check; up to five are made per request on the shared store).
        for subject, limit in plan.tokens:
            checks.append(_new_tuple(Check, (TOKENS, subject, limit, tokens, 0, 0, 0)))
        db_spend = self._db_spend
        known_spend = self._known_spend
        periods = self._periods
        for spec in plan.budgets:
            period = periods.get(spec.period)
            if period is None or not period[0] <= now < period[1]:
                period = self._period(spec.period, now)
            start = period[0]
            seed = db_spend.get((spec.subject, spec.period, start), 0)
            if with_known:
                known = known_spend.get((spec.budget_subject, start), 0)
                if known > seed:
                    seed = known
            checks.append(
                _new_tuple(
                    Check,
                    (BUDGET, spec.budget_subject, spec.amount, cost, start, period[2], seed),
                )
            )
        return tuple(checks)

    def _period(self, period: BudgetPeriod, now: float) -> tuple[int, float, int, datetime]:
        """(start, end, counter expiry) in epoch seconds and the end as a datetime,
        cached until the period ends (computing it takes time zone arithmetic)."""
        cached = self._periods.get(period)
        if cached is not None and cached[0] <= now < cached[1]:
            return cached
        start_dt, end_dt = period_bounds(period, datetime.fromtimestamp(now, UTC), self.config.tz)
        end = end_dt.timestamp()
        entry = (int(start_dt.timestamp()), end, int(end) + SPEND_KEY_GRACE, end_dt)
        self._periods[period] = entry
        return entry

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
        found: AdmitResult,
        index: int,
        plan: _Plan,
        now: float,
        tokens: int,
    ) -> Refusal:
        check = checks[index]
        used = found.used[index]
        reset_at = found.reset_at[index]
        spend = found.spend[index]
        who = _who(plan.scopes[index], plan.actor)
        trios: dict[str, str] = {}
        if plan.requests_at:
            _trio(trios, _REQUEST_HEADERS, plan.requests_at, plan.limits, found, now, 1)
        if plan.tokens_at:
            taken = tokens if plan.tokens_at[0] <= index else 0
            _trio(trios, _TOKEN_HEADERS, plan.tokens_at, plan.limits, found, now, taken)
        if check.kind == CONCURRENCY:
            return self._refusal(
                CONCURRENCY_LIMITED,
                f"Concurrency limit reached: {who} may have {check.limit} requests in "
                f"flight at once (max_concurrent) and has {used}; retry when one "
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
            retry = max(1, min(WINDOW, math.ceil(reset_at - now)))
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
                f"(tokens_per_minute) and has {used} used or reserved in the last "
                f"minute; it resets in {retry}s (at {resets}).",
                retry,
                trios,
            )
        spec = plan.budgets[index - plan.budget_at]
        period_end = self._period(spec.period, now)[3]
        retry = max(1, math.ceil(period_end.timestamp() - now))
        reserved = used - spend
        in_flight = f" plus {_usd(reserved)} reserved by requests in flight" if reserved else ""
        return self._refusal(
            BUDGET_EXCEEDED,
            f"Budget exceeded: {who} has spent {_usd(spend)}{in_flight} of its "
            f"${usd_number(spec.budget.amount_usd)} {_ADVERB[spec.period]} budget; "
            f"it resets at {period_end.isoformat(timespec='seconds')}.",
            retry,
            trios,
        )

    # -- budgets ---------------------------------------------------------------------------

    def _note_spend(self, plan: _Plan, checks: Sequence[Check], found: AdmitResult) -> None:
        """Remember the spend the store reported (the fallback's floor) and warn once per
        subject and period past the soft threshold."""
        known = self._known_spend
        soft = self.config.soft_fraction
        spends = found.spend
        for index in range(plan.budget_at, len(spends)):
            check = checks[index]
            key = (check.subject, check.period_start)
            spend = spends[index]
            if spend > known.get(key, 0):
                known[key] = spend
            if spend >= check.limit * soft and key not in self._soft_warned:
                spec = plan.budgets[index - plan.budget_at]
                self._soft_warn(key, spend, check.limit, spec.scope, plan.actor)

    def _soft_warn(
        self, key: tuple[str, int], spend: int, amount: int, scope: str, actor: Actor
    ) -> None:
        """Warn once per subject and period that ``spend`` crossed the soft threshold."""
        if key in self._soft_warned:
            return
        self._soft_warned.add(key)
        self.metrics.soft_exceeded.labels(scope).inc()
        log.warning(
            "budget soft threshold crossed: %s has spent %s of %s this period (%.0f%%)",
            _who(scope, actor),
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
        self._spend_version += 1
        now = self.clock.now().timestamp()
        current = {self._period(p, now)[0] for p in ("day", "week", "month")}
        self._known_spend = {k: v for k, v in self._known_spend.items() if k[1] in current}
        self._soft_warned = {k for k in self._soft_warned if k[1] in current}

    def _spent(self, budget_subject: str, subject: str, period: BudgetPeriod, start: int) -> int:
        spent = max(
            self._db_spend.get((subject, period, start), 0),
            self._known_spend.get((budget_subject, start), 0),
        )
        if self.store is self.local:
            # The in-process store counts every settlement itself.
            spent = max(spent, self.local.spend(budget_subject, start))
        return spent

    def _soft_after_settle(
        self, plan: _Plan, checks: Sequence[Check], spends: Sequence[int]
    ) -> None:
        """Warn about the budgets ``spends`` (the in-process counters after a settlement,
        one per budget check) took past the soft threshold."""
        soft = self.config.soft_fraction
        index = plan.budget_at
        for spent in spends:
            check = checks[index]
            if spent >= check.limit * soft:
                key = (check.subject, check.period_start)
                if key not in self._soft_warned:
                    spec = plan.budgets[index - plan.budget_at]
                    self._soft_warn(key, spent, check.limit, spec.scope, plan.actor)
            index += 1

    def budget_status(self, actor: Actor) -> list[BudgetStatus]:
        """The budgets that apply to ``actor`` with the spend this replica knows (the
        recorded spend or what the store last reported, whichever is higher)."""
        now = self.clock.now().timestamp()
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
            start, _, _, end_dt = self._period(budget.period, now)
            budget_subject = f"{subject}|{budget.period}"
            spent = self._spent(budget_subject, subject, budget.period, start)
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
        now = self.clock.now().timestamp()
        for budget_subject, (label, amount, period) in list(self._budgets.items()):
            subject = budget_subject.rpartition("|")[0]
            start = self._period(period, now)[0]
            spent = self._spent(budget_subject, subject, period, start)
            yield label, max(0.0, 1 - spent / amount) if amount else 0.0

    # -- settlement and leases -------------------------------------------------------------

    def _settle(self, ticket: _Held) -> Coroutine[Any, Any, None] | None:
        """Settle ``ticket`` in the in-process store, or return the coroutine that settles
        it in the shared one."""
        if ticket._local_slot:
            self._inflight -= 1
        checks = ticket._checks
        if not checks:
            return None
        self._held.pop(ticket._id, None)
        store = ticket._store
        cost = ticket._cost
        plan = ticket._plan
        primary = self.store is self.local
        if cost and plan.budgets and not primary:
            # This replica's floor of each budget (the fallback's and the status's; the
            # in-process store is its own floor, read by _spent).
            known = self._known_spend
            soft = self.config.soft_fraction
            for index in range(plan.budget_at, len(checks)):
                check = checks[index]
                key = (check.subject, check.period_start)
                spent = known.get(key, 0)
                spent = (spent if spent > check.seed else check.seed) + cost
                known[key] = spent
                if spent >= check.limit * soft and key not in self._soft_warned:
                    spec = plan.budgets[index - plan.budget_at]
                    self._soft_warn(key, spent, check.limit, spec.scope, plan.actor)
        now = self._epoch()
        if store is self.local:
            try:
                # Only the reservations' checks: the store frees the slots and
                # reservations from the ticket's lease record.
                reserved = checks[len(plan.static) :]
                spends = self.local.settle_now(ticket._id, now, reserved, ticket._tokens, cost)
            except Exception:
                log.exception("settling a limiter ticket failed; its lease will expire")
                return None
            if primary and spends and max(spends) >= plan.soft_floor:
                self._soft_after_settle(plan, checks, spends)
            return None
        if store is None or self.fallback:
            # In fallback a shared-store ticket is left to its lease; its spend comes back
            # from the records at the next rebuild.
            return None
        return self._shared_settle(store, ticket, now, checks, cost)

    async def _shared_settle(
        self, store: LimitStore, ticket: _Held, now: float, checks: Sequence[Check], cost: int
    ) -> None:
        try:
            await store.settle(ticket._id, now, checks, ticket._tokens, cost)
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
