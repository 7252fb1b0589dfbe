"""Provider key ring: several centralized upstream keys with primary-with-fallback failover.

Semantics follow the reference's newest key ring (``reference/coder-aibridged.md`` §3.7 and
``reference/coder-aibridge-core.md`` §2.7):

* Keys keep configuration order; the first (oldest) key is the **primary**. Every upstream call
  walks the keys from the primary and uses the first one that is not cooling down, so traffic
  returns to the primary as soon as its cooldown ends.
* Two key states: ``valid`` and ``temporary`` (cooling down until a deadline). There is no
  permanent "invalid" state: the newest reference replaced it with a cooldown, so a key that was
  revoked and then fixed upstream recovers without a config reload, and a fresh key added through
  the admin API is picked up by the reload that rebuilds the pool anyway.
* An upstream **429** cools the key for ``Retry-After`` (``retry-after-ms``, delay-seconds or an
  HTTP-date; clamped to ``[1 s, max_cooldown]``) or the default 60 s; reason ``rate_limited``.
* An upstream **401** cools the key for the auth cooldown (default = the default cooldown, 60 s);
  reason ``unauthorized``. 403 is *not* a key failure by default (reference: only 401 and 429
  are), because a 403 is usually about the request (model access, policy), not the key; pass
  ``auth_failure_statuses={401, 403}`` to treat it as one.
* Any other status, 5xx included, is not a key failure: the response goes to the client as-is.
* A new cooldown never shortens a longer existing one.
* Shared across replicas: every cooldown that this ring decides (or lengthens) is reported
  to :attr:`KeyRing.on_cooldown` with its wall-clock end, and a cooldown another replica
  decided comes in through :meth:`KeyRing.apply_cooldown`, which never reports back (no echo).
  Both are synchronous and touch only local state, so key selection never waits on the
  network (``aibridge.providers.shared_cooldowns`` does the Redis side in the background).
* When no usable key is left the walk ends with :class:`KeysExhausted`: ``rate_limited``
  (HTTP 429 + ``Retry-After`` = soonest recovery) if any cooldown is a rate limit or a key
  recovered meanwhile (then Retry-After 0), otherwise ``unauthorized`` (HTTP 502 — the client's
  own credentials are fine, the gateway's are not, so 401 would mislead the client). The
  message and :attr:`KeysExhausted.cause` name the real cause: a walk that ends in a 429
  only because a rejected key is usable again (``key_cooldown_seconds`` 0, or a cooldown that
  ran out mid-walk) says how many keys failed authentication, never "rate-limited".

Failover is only possible before any response byte reached the client: :class:`KeyWalker`
leaves that decision to the caller (``aibridge.intercept.failover.send_with_failover``), which
reports an upstream status only while it still holds the response unrelayed.

Concurrency: one event loop, many tasks. Every state update below is synchronous (no ``await``
between reading and writing a key's state), so tasks cannot interleave inside an update.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from aibridge.clock import SYSTEM_CLOCK, Clock
from aibridge.loop_metrics import LoopHistogram
from aibridge.secrets_mask import mask_secret

logger = logging.getLogger(__name__)

DEFAULT_COOLDOWN = 60.0
"""Seconds a key cools down after a 429 without Retry-After, or after a 401 (reference default)."""

MAX_COOLDOWN = 3600.0
"""Cap for an upstream-supplied Retry-After, so a bogus header cannot park a key for days."""

MIN_RATE_LIMIT_COOLDOWN = 1.0
"""Lower bound for a 429 cooldown: ``Retry-After: 0`` would otherwise let a burst of concurrent
requests keep hammering a key the upstream just told us is over its limit."""

RATE_LIMITED: Literal["rate_limited"] = "rate_limited"
UNAUTHORIZED: Literal["unauthorized"] = "unauthorized"
CooldownReason = Literal["rate_limited", "unauthorized"]
RetryAfter = float | Mapping[str, str] | None
"""Seconds, or upstream response headers to parse (``retry-after-ms`` / ``Retry-After``)."""
CooldownListener = Callable[["PoolKey", float, CooldownReason], None]
"""Told ``(key, until, reason)`` when a key's cooldown starts or lengthens; ``until`` is the
wall-clock end (Unix seconds, from the ring's clock). Called synchronously on the request
path: it must only note the event (e.g. queue it for a background task), never block."""

MSG_RATE_LIMITED = "all configured keys are rate-limited (retry after {})"
MSG_UNAUTHORIZED = "all configured keys failed authentication. Contact your Administrator"
MSG_UNAVAILABLE = "all configured keys are unavailable: {} (retry after {})"
"""A 429 exhaustion where some keys were rejected (401): the causes are counted."""

FAILOVER_ATTEMPT_BUCKETS = (1, 2, 3, 4, 5, 10, 25)


# --------------------------------------------------------------------------------------------
# Keys and errors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolKey:
    """One configured upstream key; ``secret`` is kept out of ``repr`` so logs cannot leak it."""

    key_id: str
    secret: str = field(repr=False)
    index: int
    hint: str
    """Masked secret (``aibridge.secrets_mask.mask_secret``) for logs and interception records."""


class KeysExhausted(Exception):
    """No usable key is left for this upstream call.

    ``kind`` is ``rate_limited`` (answer :attr:`status` 429 with ``Retry-After``) or
    ``unauthorized`` (answer 502). ``retry_after`` is the soonest recovery in seconds
    (0 when a key recovered during the walk). ``cause`` is why the keys are out (the
    interception's error type): ``unauthorized`` when no key was rate-limited, even when
    ``kind`` is ``rate_limited`` because a rejected key is already usable again.
    """

    def __init__(
        self,
        provider: str,
        kind: CooldownReason,
        retry_after: float,
        *,
        message: str | None = None,
        cause: CooldownReason | None = None,
    ) -> None:
        self.provider = provider
        self.kind: CooldownReason = kind
        self.cause: CooldownReason = cause or kind
        self.retry_after = max(0.0, retry_after)
        if message is not None:
            self.message = message
        elif kind == RATE_LIMITED:
            self.message = MSG_RATE_LIMITED.format(format_duration(self.retry_after))
        else:
            self.message = MSG_UNAUTHORIZED
        super().__init__(self.message)

    @property
    def retry_after_seconds(self) -> int:
        """``retry_after`` rounded up to whole seconds, as sent in the ``Retry-After`` header."""
        return math.ceil(self.retry_after)

    @property
    def status(self) -> int:
        """HTTP status for the client: 429 when rate-limited, 502 when every key failed auth."""
        return 429 if self.kind == RATE_LIMITED else 502

    @property
    def outcome(self) -> Literal["rate_limited", "auth_failed"]:
        """The ``outcome`` label of the exhaustion counter."""
        return "rate_limited" if self.kind == RATE_LIMITED else "auth_failed"


# --------------------------------------------------------------------------------------------
# Retry-After parsing and duration formatting
# --------------------------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup that works for plain dicts and aiohttp's CIMultiDict."""
    value = headers.get(name)
    if value is not None:
        return value
    for key, val in headers.items():
        if key.lower() == name:
            return val
    return None


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds the upstream asks us to wait, or None when it gave no usable hint.

    Precedence: ``retry-after-ms`` (OpenAI), then ``Retry-After`` as delay-seconds, then as an
    HTTP-date (relative to ``now``; a date in the past means 0). Not clamped: the pool clamps.
    """
    ms = _header(headers, "retry-after-ms")
    if ms is not None:
        seconds = _non_negative_float(ms)
        if seconds is not None:
            return seconds / 1000.0
    raw = _header(headers, "retry-after")
    if raw is None:
        return None
    seconds = _non_negative_float(raw)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 9110 HTTP-dates are always GMT; "-0000" parses as naive.
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def _non_negative_float(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value


def format_duration(seconds: float) -> str:
    """Render seconds (rounded up) as Go prints a Duration: ``0s``, ``45s``, ``1m30s``, ``1h0m0s``.

    The reference's exhaustion message embeds a Go duration; clients and dashboards that grep
    for it see the same text.
    """
    total = math.ceil(max(0.0, seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


class KeyRingMetrics:
    """Prometheus metrics for all key rings of a process (create once per registry).

    Names follow reference core §6.1 with the ``aibridge_`` prefix; ``failovers_total`` is an
    addition that counts each switch to the next key (the histogram only shows attempts per call).
    """

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.state_transitions = Counter(
            "aibridge_key_pool_state_transitions_total",
            "Keys moved from valid to cooling down, by reason.",
            ["provider", "reason"],
            registry=registry,
        )
        self.exhaustions = Counter(
            "aibridge_key_pool_exhaustions_total",
            "Upstream calls that found no usable key, by outcome.",
            ["provider", "outcome"],
            registry=registry,
        )
        # Observed on every upstream call, on the event loop: lock-free.
        self.failover_attempts = LoopHistogram(
            "aibridge_key_pool_failover_attempts",
            "Keys tried per upstream call that used the key ring.",
            ("provider",),
            registry,
            buckets=FAILOVER_ATTEMPT_BUCKETS,
        )
        self.failovers = Counter(
            "aibridge_key_pool_failovers_total",
            "Times an upstream call moved on to the next key after a key failure.",
            ["provider"],
            registry=registry,
        )


class KeyRingStateCollector(Collector):
    """Scrape-time gauge ``aibridge_key_pool_state{provider,state}`` (number of keys per state).

    ``pools`` is called on every scrape, so it should return the pools of the *live* provider
    snapshot; after a hot reload the new pools show up without re-registration.
    """

    def __init__(self, pools: Callable[[], Iterable[KeyRing]]) -> None:
        self._pools = pools

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """Yield one gauge family with a (valid, temporary) pair of samples per pool."""
        family = GaugeMetricFamily(
            "aibridge_key_pool_state",
            "Keys in each state (valid, temporary) per provider key ring.",
            labels=["provider", "state"],
        )
        for pool in self._pools():
            for state, count in pool.state_counts().items():
                family.add_metric([pool.provider, state], count)
        yield family


# --------------------------------------------------------------------------------------------
# The pool
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _KeyState:
    until: float = 0.0
    """Monotonic deadline of the cooldown; the key is valid when ``now >= until``."""
    reason: CooldownReason | None = None


class KeyRing:
    """Ordered upstream keys for one provider; see the module docstring for the semantics."""

    def __init__(
        self,
        keys: Sequence[tuple[str, str]],
        *,
        provider: str = "",
        cooldown: float = DEFAULT_COOLDOWN,
        auth_cooldown: float | None = None,
        max_cooldown: float = MAX_COOLDOWN,
        auth_failure_statuses: Collection[int] = (401,),
        clock: Clock = SYSTEM_CLOCK,
        metrics: KeyRingMetrics | None = None,
        on_cooldown: CooldownListener | None = None,
    ) -> None:
        """Build a pool from ``(key_id, secret)`` pairs, primary first.

        ``on_cooldown`` (also settable later as :attr:`on_cooldown`) hears of every cooldown
        this ring decides; see :data:`CooldownListener`.

        An empty ``keys`` gives an empty pool (a BYOK-only provider): :attr:`has_keys` is False
        and every walk ends at once with :class:`KeysExhausted` (``no keys provided``), so the
        caller should check :attr:`has_keys` first. Raises ``ValueError`` for an empty secret, a
        repeated key id or secret (``duplicate key`` — a duplicate would make failover retry the
        same credential and double-count its failures), or a negative cooldown.
        """
        if not (cooldown >= 0 and max_cooldown > 0 and (auth_cooldown or 0) >= 0):
            raise ValueError("cooldowns must not be negative")
        seen_ids: set[str] = set()
        seen_secrets: set[str] = set()
        built: list[PoolKey] = []
        for index, (key_id, secret) in enumerate(keys):
            if not secret:
                raise ValueError(f"empty key (id {key_id!r})")
            if key_id in seen_ids or secret in seen_secrets:
                raise ValueError("duplicate key")
            seen_ids.add(key_id)
            seen_secrets.add(secret)
            built.append(PoolKey(key_id, secret, index, mask_secret(secret)))
        self.provider = provider
        self.keys: tuple[PoolKey, ...] = tuple(built)
        self._states = [_KeyState() for _ in built]
        self._cooldown = float(cooldown)
        self._auth_cooldown = float(auth_cooldown if auth_cooldown is not None else cooldown)
        self._max_cooldown = float(max_cooldown)
        self._auth_statuses = frozenset(auth_failure_statuses)
        self._clock = clock
        self._metrics = metrics
        self.on_cooldown: CooldownListener | None = on_cooldown
        # This pool's child of the attempts histogram, observed once per upstream call:
        # ``labels()`` validates and locks on every call.
        # Created on first use, so an idle pool exports no series.
        self._attempts_child: Any = None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def has_keys(self) -> bool:
        """Whether any centralized key is configured."""
        return bool(self.keys)

    # -- queries ---------------------------------------------------------------------------

    def is_usable(self, key: PoolKey) -> bool:
        """Whether ``key`` is not cooling down right now."""
        return self._clock.monotonic() >= self._states[self._own(key).index].until

    def cooldown_remaining(self, key: PoolKey) -> float:
        """Seconds until ``key`` is usable again (0 when it already is)."""
        return max(0.0, self._states[self._own(key).index].until - self._clock.monotonic())

    def cooldown_reason(self, key: PoolKey) -> CooldownReason | None:
        """Why ``key`` is cooling down (None when it is usable)."""
        state = self._states[self._own(key).index]
        return state.reason if self._clock.monotonic() < state.until else None

    def state_counts(self) -> dict[str, int]:
        """``{"valid": n, "temporary": m}`` right now (for the state collector and /readyz)."""
        now = self._clock.monotonic()
        cooling = sum(1 for s in self._states if now < s.until)
        return {"valid": len(self._states) - cooling, "temporary": cooling}

    def classify(self, status: int) -> CooldownReason | None:
        """The cooldown reason an upstream status implies, or None if it is not a key failure."""
        if status == 429:
            return RATE_LIMITED
        if status in self._auth_statuses:
            return UNAUTHORIZED
        return None

    # -- selection ---------------------------------------------------------------------------

    def walker(self) -> KeyWalker:
        """A fresh per-call walk starting at the primary key."""
        return KeyWalker(self)

    def acquire(self) -> PoolKey:
        """The first usable key, primary preferred; raises :class:`KeysExhausted` if none."""
        return self.walker().next_key()

    def _next_usable(self, start: int) -> PoolKey | None:
        now = self._clock.monotonic()
        for index in range(start, len(self.keys)):
            if now >= self._states[index].until:
                return self.keys[index]
        return None

    def _exhausted(self) -> KeysExhausted:
        """Build (and count) the exhaustion error from the current state of every key."""
        if not self._states:
            return KeysExhausted(self.provider, UNAUTHORIZED, 0.0, message="no keys provided")
        now = self._clock.monotonic()
        cooling = [s for s in self._states if now < s.until]
        if len(cooling) < len(self._states):
            # A key recovered while this call was walking the later ones: the client may retry
            # at once (reference: rate-limited with Retry-After 0).
            kind: CooldownReason = RATE_LIMITED
            retry_after = 0.0
        else:
            retry_after = min(s.until for s in cooling) - now
            limited = any(s.reason == RATE_LIMITED for s in cooling)
            kind = RATE_LIMITED if limited else UNAUTHORIZED
        # Every key in this walk failed or is cooling, so each has the reason of its last
        # failure (kept until a success), even one whose cooldown is already over.
        rejected = sum(s.reason == UNAUTHORIZED for s in self._states)
        throttled = sum(s.reason == RATE_LIMITED for s in self._states)
        message = None
        if kind == RATE_LIMITED and rejected:
            causes = f"{rejected} failed authentication"
            if throttled:
                causes += f", {throttled} rate-limited"
            message = MSG_UNAVAILABLE.format(causes, format_duration(retry_after))
        err = KeysExhausted(
            self.provider,
            kind,
            retry_after,
            message=message,
            cause=RATE_LIMITED if throttled else UNAUTHORIZED,
        )
        if self._metrics is not None:
            self._metrics.exhaustions.labels(self.provider, err.outcome).inc()
        return err

    # -- marking -----------------------------------------------------------------------------

    def mark_failed(self, key: PoolKey, status: int, retry_after: float | None = None) -> bool:
        """Record an upstream response for ``key``; returns True if it was a key failure.

        429 → cooldown of ``retry_after`` seconds (clamped to ``[1, max_cooldown]``) or the
        default; auth failure → the auth cooldown (Retry-After is not meaningful there); anything
        else → nothing happens and False is returned. An existing longer cooldown is kept.
        """
        reason = self.classify(status)
        if reason is None:
            return False
        if reason == RATE_LIMITED:
            if retry_after is None or not math.isfinite(retry_after):
                seconds = self._cooldown
            else:
                seconds = min(max(retry_after, MIN_RATE_LIMIT_COOLDOWN), self._max_cooldown)
        else:
            seconds = self._auth_cooldown
        state = self._states[self._own(key).index]
        now = self._clock.monotonic()
        was_valid = now >= state.until
        deadline = now + seconds
        # Never shorten a longer cooldown; the reason follows whichever deadline wins, so an
        # exhaustion answer reports why the key is *still* out. (For a valid key ``until <= now``,
        # so the new deadline always wins.)
        extended = deadline > state.until
        if extended:
            state.until = deadline
            state.reason = reason
        if was_valid and state.until > now:
            # Only the valid→temporary transition is logged and counted, so N concurrent
            # requests that all saw the same 429 produce one log line, not N.
            logger.info(
                "key marked temporary",
                extra={
                    "provider": self.provider,
                    "api_key_hint": key.hint,
                    "status": status,
                    "cooldown": round(state.until - now, 3),
                    "reason": reason,
                },
            )
            if self._metrics is not None:
                self._metrics.state_transitions.labels(self.provider, reason).inc()
        if extended and self.on_cooldown is not None:
            self._notify(key, seconds, reason)
        return True

    def _notify(self, key: PoolKey, seconds: float, reason: CooldownReason) -> None:
        """Tell the listener; its failure is logged, never raised into the request."""
        listener = self.on_cooldown
        if listener is None:
            return
        try:
            listener(key, self._clock.now().timestamp() + seconds, reason)
        except Exception:
            logger.exception("key cooldown listener failed", extra={"provider": self.provider})

    def apply_cooldown(self, key: PoolKey, until: float, reason: CooldownReason) -> bool:
        """Cool ``key`` down until ``until`` (wall-clock Unix seconds), as another replica
        decided; True when that lengthened its cooldown here.

        Never shortens a longer cooldown, never calls :attr:`on_cooldown` (the decision is
        not this ring's to share again) and is not counted as a state transition (the
        deciding replica counted it). The remaining time is capped like a local cooldown,
        so a bogus shared value cannot park a key for longer than this ring would.
        """
        state = self._states[self._own(key).index]
        remaining = until - self._clock.now().timestamp()
        if not math.isfinite(remaining) or remaining <= 0:
            return False
        cap = max(self._max_cooldown, self._cooldown, self._auth_cooldown)
        now = self._clock.monotonic()
        deadline = now + min(remaining, cap)
        if deadline <= state.until:
            return False
        if now >= state.until:
            logger.info(
                "key marked temporary by another replica",
                extra={
                    "provider": self.provider,
                    "api_key_hint": key.hint,
                    "cooldown": round(deadline - now, 3),
                    "reason": reason,
                },
            )
        state.until = deadline
        state.reason = reason
        return True

    def mark_ok(self, key: PoolKey) -> None:
        """Record a successful call with ``key``.

        It deliberately does *not* cancel an active cooldown: a success of a request that
        started before another request's 429 says nothing about the rate limit being over.
        It only forgets the reason of an already expired cooldown, so stale reasons never
        influence a later exhaustion classification or a state snapshot.
        """
        state = self._states[self._own(key).index]
        if self._clock.monotonic() >= state.until:
            state.until = 0.0
            state.reason = None

    def _own(self, key: PoolKey) -> PoolKey:
        # Guard against a key from a previous pool (before a hot reload) indexing this one.
        if key.index >= len(self.keys) or self.keys[key.index] is not key:
            raise ValueError("key does not belong to this pool")
        return key


# --------------------------------------------------------------------------------------------
# Failover
# --------------------------------------------------------------------------------------------


class KeyWalker:
    """One upstream call's walk over the pool: each key is tried at most once, in order.

    Use it directly when the "nothing relayed yet" decision is spread over code (streaming)::

        walker = pool.walker()
        try:
            while True:
                key = walker.next_key()            # raises KeysExhausted
                resp = await open_upstream(key)    # nothing sent to the client yet
                if walker.report(key, resp.status, parse_retry_after(resp.headers, now)):
                    resp.release()
                    continue                       # key failure: try the next key
                break
        finally:
            walker.finish()                        # observes the attempts histogram once
    """

    def __init__(self, pool: KeyRing) -> None:
        self.pool = pool
        self.attempts = 0
        self.current: PoolKey | None = None
        self._position = 0
        self._finished = False

    def next_key(self) -> PoolKey:
        """The next usable key after the ones already tried; raises :class:`KeysExhausted`."""
        key = self.pool._next_usable(self._position)
        if key is None:
            raise self.pool._exhausted()
        if self.attempts and self.pool._metrics is not None:
            self.pool._metrics.failovers.labels(self.pool.provider).inc()
        self._position = key.index + 1
        self.attempts += 1
        self.current = key
        return key

    def report(self, key: PoolKey, status: int, retry_after: RetryAfter = None) -> bool:
        """Report ``key``'s upstream status; True means "key failure — discard and try the next".

        ``retry_after`` is seconds or the upstream response headers (parsed here with the pool's
        clock, so HTTP-dates are read against the same time as the cooldown). Call it only while
        the response is still unrelayed: once bytes went to the client a key failure must not
        trigger a retry (call ``pool.mark_failed`` if you still want the mark).
        """
        if self.mark_failed(key, status, retry_after):
            return True
        if status < 400:
            self.pool.mark_ok(key)
        return False

    def mark_failed(self, key: PoolKey, status: int, retry_after: RetryAfter = None) -> bool:
        """:meth:`KeyRing.mark_failed`, also accepting the response headers for ``retry_after``."""
        if isinstance(retry_after, Mapping):
            retry_after = parse_retry_after(retry_after, self.pool._clock.now())
        return self.pool.mark_failed(key, status, retry_after)

    def mark_ok(self, key: PoolKey) -> None:
        """:meth:`KeyRing.mark_ok` (convenience so callers need only the walker)."""
        self.pool.mark_ok(key)

    def finish(self) -> None:
        """Observe the attempts histogram (once; later calls are no-ops)."""
        if self._finished or self.attempts == 0:
            return
        self._finished = True
        pool = self.pool
        if pool._metrics is not None:
            child = pool._attempts_child
            if child is None:
                child = pool._attempts_child = pool._metrics.failover_attempts.labels(pool.provider)
            child.observe(self.attempts)
