"""Circuit breakers per (provider, endpoint, model), following reference core §6.3.

* Settings (defaults): failure threshold 5, interval 10 s, open timeout 30 s, half-open max
  requests 3. Off unless ``enabled`` — the reference returns no breaker for a nil config.
* **Closed**: counts reset every ``interval`` (cyclic, 0 = never); the breaker trips when
  *consecutive* failures reach the threshold (a success in between resets the run).
* **Open**: every request is rejected until ``timeout`` has passed, then **half-open**.
* **Half-open**: at most ``max_requests`` probe requests are let through; any failure reopens,
  ``max_requests`` consecutive successes close. Requests beyond the probes are rejected too.
* A **failure** is judged from the HTTP status the gateway wrote to the client (so a mid-stream
  error after a 200 never counts): 503 and 504 by default, plus 529 for Anthropic. 429 is *not*
  a failure (newest reference): rate limits are the key ring's business, and tripping on them
  would punish every model of a provider for one key's quota.
* Extension over the reference: an upstream *transport* failure (connection refused/reset,
  timeout) recorded as an exception also counts, because the gateway then answers 502, a status
  the reference's status rule would otherwise ignore even though the upstream is down. A
  cancelled request (client went away) counts as neither and frees its half-open probe slot.
* Results of requests admitted in an earlier state "generation" are ignored, so a slow request
  started before a trip cannot close or reopen the breaker it no longer describes.
* Rejection: HTTP 503, ``Retry-After`` and a provider-shaped body (rendered by the data plane,
  ``aibridge.intercept.errors.circuit_open_body``).
  ``Retry-After`` is the time left until the breaker half-opens (at least 1 s), a refinement of
  the reference's fixed ``timeout``: a client told the true wait retries neither too early nor
  needlessly late.

All state changes are synchronous (no awaits), so concurrent tasks on one loop cannot interleave
inside an update. Time comes from an injectable :class:`~aibridge.clock.Clock`; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Any, NamedTuple

import aiohttp

from aibridge.clock import SYSTEM_CLOCK, Clock
from aibridge.providers.breaker_metrics import CircuitBreakerMetrics

logger = logging.getLogger(__name__)

DEFAULT_FAILURE_STATUSES: frozenset[int] = frozenset({503, 504})
ANTHROPIC_FAILURE_STATUSES: frozenset[int] = DEFAULT_FAILURE_STATUSES | {529}
CIRCUIT_OPEN_MESSAGE = "circuit breaker is open"
CIRCUIT_OPEN_STATUS = 503


def failure_statuses_for(provider_type: str) -> frozenset[int]:
    """Statuses that count as breaker failures for a provider type (Anthropic adds 529)."""
    return ANTHROPIC_FAILURE_STATUSES if provider_type == "anthropic" else DEFAULT_FAILURE_STATUSES


def is_upstream_unavailable(exc: BaseException) -> bool:
    """Default exception rule: transport failures and timeouts mean the upstream is unwell."""
    return isinstance(exc, TimeoutError | ConnectionError | aiohttp.ClientConnectionError)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CircuitBreakerConfig:
    """Breaker settings; the defaults are the reference's ``DefaultCircuitBreaker()``.

    Parsed from a provider's ``settings.circuit_breaker`` by
    :func:`aibridge.providers.settings.parse_settings`.
    """

    enabled: bool = False
    failure_threshold: int = 5
    interval_seconds: float = 10.0
    timeout_seconds: float = 30.0
    max_requests: int = 3


# --------------------------------------------------------------------------------------------
# States, errors, metrics
# --------------------------------------------------------------------------------------------


class State(Enum):
    """Breaker state; the value is the ``circuit_breaker_state`` gauge value."""

    CLOSED = 0.0
    HALF_OPEN = 0.5
    OPEN = 1.0

    @property
    def label(self) -> str:
        """Lower-case name for logs (``closed``, ``half-open``, ``open``)."""
        return self.name.lower().replace("_", "-")


class BreakerKey(NamedTuple):
    """Identity of one breaker; ``endpoint`` is the route label (e.g. ``/v1/messages``)."""

    provider: str
    endpoint: str
    model: str


StateChangeCallback = Callable[[BreakerKey, State, State], None]


class CircuitOpen(Exception):
    """The breaker rejected the request; answer :data:`CIRCUIT_OPEN_STATUS` with ``Retry-After``."""

    status = CIRCUIT_OPEN_STATUS

    def __init__(self, key: BreakerKey, retry_after: int) -> None:
        self.key = key
        self.retry_after = retry_after
        super().__init__(CIRCUIT_OPEN_MESSAGE)

    @property
    def retry_after_seconds(self) -> int:
        """Alias of ``retry_after`` (whole seconds), named like ``KeysExhausted``'s."""
        return self.retry_after


# --------------------------------------------------------------------------------------------
# Breaker
# --------------------------------------------------------------------------------------------


class Permit:
    """Admission of one request; report its outcome exactly once with :meth:`record`.

    Also a context manager: leaving the block without a recorded outcome records the exception
    that escaped (if any) or otherwise just frees the slot, so a half-open probe slot can never
    leak and wedge the breaker.
    """

    __slots__ = ("_breaker", "_done", "_generation")

    def __init__(self, breaker: CircuitBreaker | None, generation: int) -> None:
        self._breaker = breaker
        self._generation = generation
        self._done = breaker is None

    def record(self, outcome: int | BaseException) -> None:
        """Report the status written to the client, or the exception that ended the request."""
        if self._done:
            return
        self._done = True
        assert self._breaker is not None
        self._breaker._finish(self._generation, self._breaker._judge(outcome))

    def release(self) -> None:
        """Give the slot back without counting a success or failure."""
        if self._done:
            return
        self._done = True
        assert self._breaker is not None
        self._breaker._finish(self._generation, None)

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.record(exc)
        else:
            self.release()


class CircuitBreaker:
    """One breaker (closed / open / half-open). Obtain it from :class:`CircuitBreakerRegistry`."""

    def __init__(
        self,
        key: BreakerKey,
        config: CircuitBreakerConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        failure_statuses: Collection[int] = DEFAULT_FAILURE_STATUSES,
        is_failure_exception: Callable[[BaseException], bool] = is_upstream_unavailable,
        on_state_change: StateChangeCallback | None = None,
        metrics: CircuitBreakerMetrics | None = None,
    ) -> None:
        self.key = key
        self.config = config
        self._clock = clock
        self._failure_statuses = frozenset(failure_statuses)
        self._is_failure_exception = is_failure_exception
        self._on_state_change = on_state_change
        self._state = State.CLOSED
        self._generation = 0
        self._requests = 0  # admitted in this generation (half-open: probes in flight or done)
        self._consecutive_failures = 0
        self._consecutive_successes = 0
        self._expiry = self._closed_expiry(clock.monotonic())
        self._metrics = metrics if config.enabled else None
        self._labels = ("", "", "")
        self._state_series: Any = None
        if self._metrics is not None:
            self._labels, own = self._metrics.labels_for(key)
            if own:  # no state series for breakers counted under model="other"
                self._state_series = self._metrics.state.labels(*self._labels)
                self._state_series.set(State.CLOSED.value)

    @property
    def state(self) -> State:
        """The current state (applies any time-based transition first)."""
        return self._current(self._clock.monotonic())

    @property
    def retry_after_seconds(self) -> int | None:
        """Open: whole seconds until it half-opens (what a rejected caller is told);
        otherwise None. For the providers status API."""
        now = self._clock.monotonic()
        if self._current(now) is not State.OPEN:
            return None
        return max(1, math.ceil(self._expiry - now))

    def allow(self) -> Permit:
        """Admit a request or raise :class:`CircuitOpen`; call before the upstream call.

        The returned :class:`Permit` must get the outcome (``permit.record(status)``) once the
        gateway knows the status it wrote to the client.
        """
        if not self.config.enabled:
            return Permit(None, 0)
        now = self._clock.monotonic()
        state = self._current(now)
        if state is State.OPEN:
            self._reject()
            raise CircuitOpen(self.key, max(1, math.ceil(self._expiry - now)))
        if state is State.HALF_OPEN and self._requests >= self.config.max_requests:
            self._reject()
            # The probes decide soon; their outcome is unknown, so the full timeout is the honest
            # upper bound.
            raise CircuitOpen(self.key, max(1, math.ceil(self.config.timeout_seconds)))
        self._requests += 1
        return Permit(self, self._generation)

    def before_request(self) -> Permit:
        """Alias of :meth:`allow` for callers that pair it with :meth:`record`."""
        return self.allow()

    def record(self, outcome: int | BaseException) -> None:
        """Report an outcome without a :class:`Permit` (against the current state period).

        For callers that keep no permit: each ``allow()``/``before_request()`` must be paired
        with exactly one ``record``, including on error paths, or a half-open probe slot leaks.
        Prefer ``permit.record`` (or ``with breaker.allow():``), which also ignores outcomes of
        requests admitted before a state change.
        """
        if self.config.enabled:
            self._finish(self._generation, self._judge(outcome))

    # -- internals --------------------------------------------------------------------------

    def _judge(self, outcome: int | BaseException) -> bool | None:
        """True = failure, False = success, None = neither (cancelled)."""
        if isinstance(outcome, BaseException):
            if isinstance(outcome, asyncio.CancelledError):
                return None
            return self._is_failure_exception(outcome)
        return outcome in self._failure_statuses

    def _finish(self, generation: int, failed: bool | None) -> None:
        now = self._clock.monotonic()
        state = self._current(now)
        if generation != self._generation:
            return  # admitted under an earlier state; its outcome no longer describes this one
        if failed is None:
            self._requests = max(0, self._requests - 1)
        elif failed:
            self._consecutive_failures += 1
            self._consecutive_successes = 0
            if state is State.HALF_OPEN or (
                state is State.CLOSED
                and self._consecutive_failures >= self.config.failure_threshold
            ):
                self._set_state(State.OPEN, now)
        else:
            self._consecutive_successes += 1
            self._consecutive_failures = 0
            if state is State.HALF_OPEN and self._consecutive_successes >= self.config.max_requests:
                self._set_state(State.CLOSED, now)

    def _current(self, now: float) -> State:
        if self._state is State.CLOSED:
            if now >= self._expiry:
                self._new_generation(now)  # cyclic reset of the closed-state counts
        elif self._state is State.OPEN and now >= self._expiry:
            self._set_state(State.HALF_OPEN, now)
        return self._state

    def _closed_expiry(self, now: float) -> float:
        interval = self.config.interval_seconds
        return now + interval if interval > 0 else math.inf

    def _new_generation(self, now: float) -> None:
        self._generation += 1
        self._requests = 0
        self._consecutive_failures = 0
        self._consecutive_successes = 0
        if self._state is State.CLOSED:
            self._expiry = self._closed_expiry(now)
        elif self._state is State.OPEN:
            self._expiry = now + self.config.timeout_seconds
        else:
            self._expiry = math.inf

    def _set_state(self, new: State, now: float) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        self._new_generation(now)
        logger.info(
            "circuit breaker state changed",
            extra={
                "provider": self.key.provider,
                "endpoint": self.key.endpoint,
                "model": self.key.model,
                "from": old.label,
                "to": new.label,
            },
        )
        if self._state_series is not None:
            self._state_series.set(new.value)
        if new is State.OPEN and self._metrics is not None:
            self._metrics.trips.labels(*self._labels).inc()
        if self._on_state_change is not None:
            try:
                self._on_state_change(self.key, old, new)
            except Exception:
                # A faulty observer must not break request handling or leave the state half-set.
                logger.exception("circuit breaker state-change callback failed")

    def _reject(self) -> None:
        if self._metrics is not None:
            self._metrics.rejects.labels(*self._labels).inc()


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


class CircuitBreakerRegistry:
    """Breakers keyed by (provider, endpoint, model), created lazily on first use.

    The model comes from the client's request body, so the number of breakers is capped
    (``max_breakers``): when full, the least recently used breaker is dropped — a closed one if
    possible, because dropping an open breaker would let traffic through early.
    """

    def __init__(
        self,
        config: CircuitBreakerConfig | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        failure_statuses: Collection[int] = DEFAULT_FAILURE_STATUSES,
        is_failure_exception: Callable[[BaseException], bool] = is_upstream_unavailable,
        on_state_change: StateChangeCallback | None = None,
        metrics: CircuitBreakerMetrics | None = None,
        max_breakers: int = 4096,
        provider: str = "",
    ) -> None:
        """``provider`` is the default provider label for :meth:`get` (one registry per provider,
        as in the reference); ``failure_statuses`` should come from :func:`failure_statuses_for`.
        """
        if max_breakers < 1:
            raise ValueError("max_breakers must be at least 1")
        self._config = config if config is not None else CircuitBreakerConfig()
        self._clock = clock
        self._failure_statuses = frozenset(failure_statuses)
        self._is_failure_exception = is_failure_exception
        self._on_state_change = on_state_change
        self._metrics = metrics
        self._max = max_breakers
        self.provider = provider
        self._breakers: OrderedDict[BreakerKey, CircuitBreaker] = OrderedDict()
        # One shared always-allowing breaker when disabled: no per-model objects or series.
        self._disabled = CircuitBreaker(BreakerKey("", "", ""), CircuitBreakerConfig(enabled=False))

    @property
    def config(self) -> CircuitBreakerConfig:
        """The settings new breakers get."""
        return self._config

    @property
    def enabled(self) -> bool:
        """Whether breakers are active at all."""
        return self._config.enabled

    def get(
        self, endpoint: str, model: str | None, *, provider: str | None = None
    ) -> CircuitBreaker:
        """The breaker for (provider, endpoint, model), created on first use.

        ``provider`` defaults to the registry's; a request without a model (None) shares the
        endpoint's ``""`` breaker. When breakers are disabled this returns one
        shared breaker that admits everything (no per-model objects or metric series).
        """
        if not self._config.enabled:
            return self._disabled
        key = BreakerKey(self.provider if provider is None else provider, endpoint, model or "")
        breaker = self._breakers.get(key)
        if breaker is not None:
            self._breakers.move_to_end(key)
            return breaker
        if len(self._breakers) >= self._max:
            self._evict_one()
        breaker = CircuitBreaker(
            key,
            self._config,
            clock=self._clock,
            failure_statuses=self._failure_statuses,
            is_failure_exception=self._is_failure_exception,
            on_state_change=self._on_state_change,
            metrics=self._metrics,
        )
        self._breakers[key] = breaker
        return breaker

    def reconfigure(self, config: CircuitBreakerConfig | None) -> None:
        """Apply new settings (hot reload): existing breakers are dropped and start closed."""
        new = config if config is not None else CircuitBreakerConfig()
        if new == self._config:
            return
        self._config = new
        for key in list(self._breakers):
            self._drop(key)

    def __len__(self) -> int:
        return len(self._breakers)

    def breakers(self) -> tuple[CircuitBreaker, ...]:
        """The live breakers (for the providers status API)."""
        return tuple(self._breakers.values())

    def snapshot(self) -> dict[BreakerKey, State]:
        """Current state of every live breaker (for diagnostics / readiness output)."""
        return {key: breaker.state for key, breaker in self._breakers.items()}

    def _evict_one(self) -> None:
        victim = next(
            (k for k, b in self._breakers.items() if b.state is State.CLOSED),
            next(iter(self._breakers)),
        )
        self._drop(victim)

    def _drop(self, key: BreakerKey) -> None:
        del self._breakers[key]
        if self._metrics is not None:
            self._metrics.forget(key)


# Short names used by the provider runtime (``providers/base.py``).
BreakerConfig = CircuitBreakerConfig
BreakerRegistry = CircuitBreakerRegistry
