"""Provider-key cooldowns shared across replicas through Redis, off the request path.

A key ring (:mod:`aibridge.providers.keyring`) cools a key down after an upstream 401 or
429. Without sharing, every other replica keeps sending on that key and earns its own 429.
With ``AIBRIDGE_REDIS_URL`` set, :class:`SharedCooldowns` spreads each decision:

* **Publishing.** A ring's :attr:`~aibridge.providers.keyring.KeyRing.on_cooldown` only
  notes the cooldown in a dict (coalescing a burst of 429s on one key into one entry) and
  wakes a background task, which runs one script per key: ``SET
  <prefix>cooldown:<provider id>:<fingerprint> "<until ms> <reason>" PXAT <until ms>`` (the
  key expires with the cooldown) and ``PUBLISH <prefix>cooldowns …`` — skipped when Redis
  already holds a cooldown at least as long, so nothing is re-announced.
* **Applying.** Every replica subscribes to ``<prefix>cooldowns`` and applies what others
  publish to its live rings with :meth:`~aibridge.providers.keyring.KeyRing.apply_cooldown`
  (never shortening, never re-publishing: no echo storms). After subscribing — at start
  and after every reconnect — it SCANs ``<prefix>cooldown:*`` to catch up on what it
  missed. A provider reload that rebuilds a ring gets the still-live cooldowns this
  replica knows of (its own and the others') before the new snapshot serves a request.
* **Key identity** is a fingerprint: a truncated SHA-256 of the provider id and the
  secret, so neither the secret nor its masked hint ever reaches Redis, and a key that
  moves to another position in the ring (a key added or removed) is still matched.
* **Redis down.** Local cooldowns work exactly as without Redis. The gauge
  ``aibridge_key_pool_cooldowns_shared`` drops to 0, a warning is logged (then at most one
  per :data:`WARNING_INTERVAL`), and the task reconnects in the background; cooldowns
  decided meanwhile are kept (until they end) and published once Redis answers.

Until times are wall-clock milliseconds, so replicas' clocks are assumed to be in sync
(NTP), as for the limiter. Redis Cluster is not targeted (the channel is not a key).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.exceptions import RedisError

from aibridge.clock import SYSTEM_CLOCK, Clock
from aibridge.providers.base import Provider
from aibridge.providers.keyring import (
    RATE_LIMITED,
    UNAUTHORIZED,
    CooldownListener,
    CooldownReason,
    KeyRing,
    PoolKey,
)
from aibridge.providers.snapshot import ProviderSnapshot

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 1.0
"""Seconds one Redis call may take. Nothing on the request path waits for it; the bound
only keeps a dead Redis from holding the background task (and shutdown) up."""
RETRY_INTERVAL = 1.0
"""Seconds between attempts to reach Redis again after it failed."""
WARNING_INTERVAL = 60.0
"""At most one "still unreachable" warning per this many seconds."""
POLL_INTERVAL = 1.0
"""Seconds one wait for a pub/sub message may take (the connection's health check and a
stop are noticed between waits)."""
START_TIMEOUT = 1.0
"""Seconds start-up waits for the first catch-up: a Redis that is down must not delay
the gateway (it catches up in the background later)."""
FINGERPRINT_CHARS = 32
"""Hex characters of the SHA-256 kept as a key's fingerprint (128 bits)."""

_REASONS: frozenset[str] = frozenset((RATE_LIMITED, UNAUTHORIZED))

# KEYS[1]: the cooldown key. ARGV: until (ms), the value, the channel, the message.
# Only a longer cooldown is written and announced: a replica that saw the same 429 a
# moment later (or a shorter one) changes nothing and publishes nothing.
PUBLISH = """
local current = redis.call('GET', KEYS[1])
if current then
  local ends = tonumber(string.match(current, '^(%d+)'))
  if ends and ends >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""

Target = tuple[str, str]
"""``(provider id, key fingerprint)``: a key's identity across replicas."""
Cooldown = tuple[float, CooldownReason]
"""``(until, reason)``: the wall-clock end (Unix seconds) and why."""


def fingerprint(provider_id: str, secret: str) -> str:
    """A key's identity in Redis: not the secret, nor anything it can be read back from.

    The provider id is hashed in so that two providers sharing a credential (Bedrock's
    one "key" is the same placeholder everywhere) are cooled down independently.
    """
    digest = hashlib.sha256(f"aibridge-key-cooldown\0{provider_id}\0{secret}".encode())
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis ``MATCH`` pattern (a prefix may hold ``*`` or ``[``)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class SharedCooldownMetrics:
    """The sharing's series: whether it is live, and how many cooldowns crossed Redis."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.registry = registry
        self.shared = Gauge(
            "aibridge_key_pool_cooldowns_shared",
            "1 while provider-key cooldowns are shared through Redis; 0 while Redis is "
            "unreachable (cooldowns are then per replica).",
            registry=registry,
        )
        self.cooldowns = Counter(
            "aibridge_key_pool_shared_cooldowns",
            "Key cooldowns published to the other replicas (published) and taken from them "
            "(applied: a local key's cooldown started or lengthened).",
            ["direction"],
            registry=registry,
        )


class SharedCooldowns:
    """Shares key-ring cooldowns with the other replicas (see the module docstring).

    ``snapshot`` returns the live provider snapshot (whose rings remote cooldowns go to);
    wrap the reloader's snapshot callback with :meth:`watch` so rebuilt rings are hooked
    up and get the live cooldowns before they serve. :meth:`start` and :meth:`aclose`
    bracket the background work and the Redis connections.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "aibridge:",
        *,
        snapshot: Callable[[], ProviderSnapshot | None],
        clock: Clock = SYSTEM_CLOCK,
        registry: CollectorRegistry | None = None,
        retry_interval: float = RETRY_INTERVAL,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._channel = f"{prefix}cooldowns"
        self._snapshot = snapshot
        self._clock = clock
        self._retry_interval = retry_interval
        self.metrics = SharedCooldownMetrics(registry)
        self.origin = uuid.uuid4().hex
        """This replica's identity in messages: its own announcements are skipped."""
        self.connected = False
        """Whether the subscription is live (the last catch-up succeeded)."""
        # Cooldowns to publish, coalesced per key (the longest wins).
        self._pending: dict[Target, Cooldown] = {}
        # Every live cooldown known here (own and others'), for rings a reload rebuilds.
        self._known: dict[Target, Cooldown] = {}
        # (provider id, fingerprint) → the live snapshot's keys, rebuilt per snapshot.
        self._index: dict[Target, list[tuple[KeyRing, PoolKey]]] = {}
        self._indexed: ProviderSnapshot | None = None
        self._wake = asyncio.Event()
        self._synced = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._client: aioredis.Redis | None = None
        self._listener: aioredis.Redis | None = None
        self._publish: Any = None
        self._warned_at: float | None = None
        self._subscribed = False

    # -- the rings' side (synchronous, local) -----------------------------------------------

    def watch(
        self, install: Callable[[ProviderSnapshot], None]
    ) -> Callable[[ProviderSnapshot], None]:
        """``install`` (the pool's ``replace_providers``), first hooking every ring of the
        new snapshot up and applying the live cooldowns to it."""

        def hooked(snapshot: ProviderSnapshot) -> None:
            self.attach(snapshot)
            install(snapshot)

        return hooked

    def attach(self, snapshot: ProviderSnapshot) -> None:
        """Hook ``snapshot``'s rings up (idempotent: a ring kept from the previous
        snapshot is hooked again) and apply every still-live known cooldown to them."""
        self._forget_expired()
        for provider_id, ring, fingerprints in _rings(snapshot):
            ring.on_cooldown = self._listener_for(provider_id, fingerprints)
            for key, fp in zip(ring.keys, fingerprints, strict=True):
                known = self._known.get((provider_id, fp))
                if known is not None:
                    ring.apply_cooldown(key, *known)

    def _listener_for(self, provider_id: str, fingerprints: list[str]) -> CooldownListener:
        def on_cooldown(key: PoolKey, until: float, reason: CooldownReason) -> None:
            target = (provider_id, fingerprints[key.index])
            _keep_longest(self._known, target, (until, reason))
            _keep_longest(self._pending, target, (until, reason))
            self._wake.set()

        return on_cooldown

    def apply(self, provider_id: str, fp: str, until: float, reason: CooldownReason) -> int:
        """Apply another replica's cooldown to the live snapshot's matching keys; returns
        how many keys it started or lengthened a cooldown on."""
        if until <= self._clock.now().timestamp():
            return 0
        _keep_longest(self._known, (provider_id, fp), (until, reason))
        applied = 0
        for ring, key in self._keys().get((provider_id, fp), ()):
            applied += ring.apply_cooldown(key, until, reason)
        if applied:
            self.metrics.cooldowns.labels("applied").inc(applied)
        return applied

    def _keys(self) -> dict[Target, list[tuple[KeyRing, PoolKey]]]:
        snapshot = self._snapshot()
        if snapshot is not self._indexed:
            index: dict[Target, list[tuple[KeyRing, PoolKey]]] = {}
            if snapshot is not None:
                for provider_id, ring, fingerprints in _rings(snapshot):
                    for key, fp in zip(ring.keys, fingerprints, strict=True):
                        index.setdefault((provider_id, fp), []).append((ring, key))
            self._index, self._indexed = index, snapshot
        return self._index

    def _forget_expired(self) -> None:
        now = self._clock.now().timestamp()
        for table in (self._known, self._pending):
            for target in [t for t, (until, _) in table.items() if until <= now]:
                del table[target]

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Hook up the live snapshot, then connect, subscribe and catch up in the
        background; waits at most :data:`START_TIMEOUT` for the first catch-up."""
        snapshot = self._snapshot()
        if snapshot is not None:
            self.attach(snapshot)
        self._client = aioredis.Redis.from_url(
            self._url, socket_timeout=COMMAND_TIMEOUT, socket_connect_timeout=COMMAND_TIMEOUT
        )
        # The subscription waits for messages for as long as none come: no read timeout
        # (a dead server is noticed by the health check's PING or the closed socket).
        self._listener = aioredis.Redis.from_url(
            self._url, socket_connect_timeout=COMMAND_TIMEOUT, health_check_interval=10
        )
        self._publish = self._client.register_script(PUBLISH)
        self._tasks = [
            asyncio.create_task(self._subscribe_loop(), name="key-cooldowns-subscribe"),
            asyncio.create_task(self._publish_loop(), name="key-cooldowns-publish"),
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(START_TIMEOUT):
                await self._synced.wait()

    async def aclose(self) -> None:
        """Stop the background tasks and close the Redis connections."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for client in (self._client, self._listener):
            if client is not None:
                with contextlib.suppress(RedisError, OSError):
                    await client.aclose()
        self._client = self._listener = None

    # -- Redis side (background) ------------------------------------------------------------

    async def _subscribe_loop(self) -> None:
        assert self._listener is not None
        while True:
            pubsub = self._listener.pubsub(ignore_subscribe_messages=True)
            try:
                # Subscribed before the scan: a cooldown published in between is in one
                # or the other (or both: applying twice changes nothing).
                await pubsub.subscribe(self._channel)
                await self._catch_up()
                self._subscribed = True
                self._set_connected(None)
                self._wake.set()  # publish what queued up while Redis was away
                while True:
                    message = await pubsub.get_message(timeout=POLL_INTERVAL)
                    if message is not None and message.get("type") == "message":
                        self._on_message(message["data"])
            except (RedisError, OSError) as exc:
                self._set_connected(exc)
            except Exception as exc:
                # A bug must not end the sharing for good: log it and start over.
                log.exception("key cooldown subscription failed")
                self._set_connected(exc)
            finally:
                self._subscribed = False
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            # A background reconnect interval, not a wait for an event in a test.
            await asyncio.sleep(self._retry_interval)

    async def _catch_up(self) -> None:
        """Apply every cooldown in Redis (they expire on their own: all are live)."""
        assert self._client is not None
        start = f"{self._prefix}cooldown:"
        names = [
            name
            async for name in self._client.scan_iter(match=_glob_escape(start) + "*", count=500)
        ]
        for batch in _batches(names, 200):
            values = await self._client.mget(batch)
            for name, value in zip(batch, values, strict=True):
                target = _parse_name(name, len(start))
                cooldown = _parse_value(value)
                if target is not None and cooldown is not None:
                    self.apply(*target, *cooldown)

    def _on_message(self, data: bytes | str) -> None:
        try:
            message = orjson.loads(data)
            if message["origin"] == self.origin:
                return
            provider_id, fp = str(message["provider"]), str(message["key"])
            until, reason = float(message["until_ms"]) / 1000.0, message["reason"]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("ignored a malformed key cooldown message on %s", self._channel)
            return
        if reason in _REASONS and math.isfinite(until):
            self.apply(provider_id, fp, until, reason)

    async def _publish_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._forget_expired()
            if not self._pending:
                continue
            batch, self._pending = self._pending, {}
            try:
                await self._send(batch)
                if self._subscribed:
                    self._set_connected(None)
            except (RedisError, OSError) as exc:
                # Kept until they end, and tried again shortly (or at the reconnect).
                for target, cooldown in batch.items():
                    _keep_longest(self._pending, target, cooldown)
                self._set_connected(exc)
                asyncio.get_running_loop().call_later(self._retry_interval, self._wake.set)

    async def _send(self, batch: dict[Target, Cooldown]) -> None:
        assert self._client is not None
        # One round trip for the whole batch.
        async with self._client.pipeline(transaction=False) as pipe:
            for (provider_id, fp), (until, reason) in batch.items():
                until_ms = math.ceil(until * 1000)
                message = orjson.dumps(
                    {
                        "provider": provider_id,
                        "key": fp,
                        "until_ms": until_ms,
                        "reason": reason,
                        "origin": self.origin,
                    }
                )
                await self._publish(
                    keys=[f"{self._prefix}cooldown:{provider_id}:{fp}"],
                    args=[until_ms, f"{until_ms} {reason}", self._channel, message],
                    client=pipe,
                )
            results = await pipe.execute()
        self.metrics.cooldowns.labels("published").inc(sum(1 for r in results if r == 1))

    def _set_connected(self, error: BaseException | None) -> None:
        """Track (gauge, log) whether the sharing is live; warnings are throttled."""
        self._synced.set()
        now = self._clock.monotonic()
        if error is None:
            if not self.connected:
                self.connected = True
                self.metrics.shared.set(1)
                if self._warned_at is not None:
                    log.warning("Redis is reachable again: key cooldowns are shared again")
                self._warned_at = None
            return
        if self.connected or self._warned_at is None:
            self.connected = False
            self.metrics.shared.set(0)
            self._warned_at = now
            log.warning(
                "key cooldowns are not shared (Redis unreachable: %s): each replica keeps "
                "its own until Redis answers",
                _describe(error),
            )
        elif now - self._warned_at >= WARNING_INTERVAL:
            self._warned_at = now
            log.warning("Redis is still unreachable for key cooldowns: %s", _describe(error))


def build_shared_cooldowns(
    redis_url: str,
    prefix: str,
    *,
    snapshot: Callable[[], ProviderSnapshot | None],
    clock: Clock = SYSTEM_CLOCK,
    registry: CollectorRegistry | None = None,
) -> SharedCooldowns | None:
    """The sharing for a gateway with ``redis_url`` (None without: cooldowns stay local)."""
    if not redis_url:
        return None
    return SharedCooldowns(redis_url, prefix, snapshot=snapshot, clock=clock, registry=registry)


def _rings(snapshot: ProviderSnapshot) -> Iterator[tuple[str, KeyRing, list[str]]]:
    """``(provider id, ring, fingerprint of each key)`` for every keyed provider."""
    for provider in snapshot.providers.values():
        if isinstance(provider, Provider) and provider.keys.has_keys:
            provider_id = str(provider.id)
            fingerprints = [fingerprint(provider_id, key.secret) for key in provider.keys.keys]
            yield provider_id, provider.keys, fingerprints


def _keep_longest(table: dict[Target, Cooldown], target: Target, cooldown: Cooldown) -> None:
    current = table.get(target)
    if current is None or cooldown[0] > current[0]:
        table[target] = cooldown


def _parse_name(name: bytes | str, skip: int) -> Target | None:
    text = name.decode() if isinstance(name, bytes) else name
    provider_id, _, fp = text[skip:].rpartition(":")
    return (provider_id, fp) if provider_id and fp else None


def _parse_value(value: bytes | str | None) -> Cooldown | None:
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    until_ms, _, reason = text.partition(" ")
    try:
        until = int(until_ms) / 1000.0
    except ValueError:
        return None
    if reason == RATE_LIMITED:
        return until, RATE_LIMITED
    if reason == UNAUTHORIZED:
        return until, UNAUTHORIZED
    return None


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
