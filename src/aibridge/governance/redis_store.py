"""The Redis counter store: the limits of every replica, shared.

Same semantics as :class:`~aibridge.governance.memory_store.MemoryStore` (see
:mod:`aibridge.governance.limitstore`), with one Lua script per operation so each
admission and each settlement is atomic and one round trip (``EVALSHA``, loading the
script again when Redis answers ``NOSCRIPT`` after a restart or ``SCRIPT FLUSH``).

Keys, all under the configured prefix, all with a TTL so nothing outlives its use:

- ``c:<subject>``: concurrency slots, a sorted set of tickets scored by lease expiry;
- ``r:<subject>``: the request window log, tickets scored by admission time (2 windows);
- ``t:<subject>``: settled tokens per second, a hash (2 windows);
- ``tr:<subject>`` / ``br:<subject>``: token / cost reservations, members
  ``<ticket>|<amount>`` scored by lease expiry (expire with the newest lease);
- ``s:<subject>:<period start>``: the period's spend in pico-USD (until a day after the
  period ends; TTLs are durations from the caller's clock, so a skewed clock never
  expires a key early). A missing or lower counter is raised to the seed the admission passes
  (the recorded spend), so a ``FLUSHALL`` never resets a budget.

The scripts take the caller's clock as an argument: replicas' clocks are assumed to be
roughly in sync (NTP), and a skew of ``s`` seconds shifts windows and leases by ``s``.
Keys of one request are not in one hash slot: this targets one Redis (or a primary with
replicas), not Redis Cluster. Amounts are compared as Lua doubles (exact up to 2^53
pico-USD, about 9000 USD; beyond, comparisons are off by at most a few pico-USD) and
added with ``INCRBY`` (exact 64-bit integers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from aibridge.governance.limitstore import (
    BUDGET,
    CONCURRENCY,
    REQUESTS,
    TOKENS,
    WINDOW,
    AdmitResult,
    Check,
    StoreUnavailable,
)

SOCKET_TIMEOUT = 0.25
"""Seconds a Redis call may take before the limiter falls back to its own counters: a
slow Redis must not hold every request up."""

# Shared helpers of the scripts: live reservations' sum (dropping expired ones).
_RESERVED = """
local function reserved(key, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local total = 0
  for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    total = total + tonumber(string.match(member, '|(%d+)$'))
  end
  return total
end
"""

# KEYS: two per check (see _keys). ARGV: ticket, now, lease_until, window, n, then per
# check kind, limit, amount, expire_at, seed. Returns {admitted, {used, reset, spend}...}
# with numbers as strings (Lua numbers would be truncated to integers in the reply).
ADMIT = (
    _RESERVED
    + """
local ticket = ARGV[1]
local now = tonumber(ARGV[2])
local lease_until = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
-- TTLs are relative to the caller's clock, not Redis's: both agree on durations.
local lease_ttl = math.ceil(lease_until - now) + 1
local out = {}
for i = 1, n do
  local a = 5 + (i - 1) * 5
  local kind = ARGV[a + 1]
  local limit = tonumber(ARGV[a + 2])
  local k1, k2 = KEYS[2 * i - 1], KEYS[2 * i]
  local used, reset, spend, ok = 0, 0, '0', false
  if kind == 'c' then
    redis.call('ZREMRANGEBYSCORE', k1, '-inf', now)
    used = redis.call('ZCARD', k1)
    ok = used < limit
  elseif kind == 'r' then
    redis.call('ZREMRANGEBYSCORE', k1, '-inf', now - window)
    used = redis.call('ZCARD', k1)
    ok = used < limit
    local index = 0
    if not ok then index = used - limit end
    local entry = redis.call('ZRANGE', k1, index, index, 'WITHSCORES')
    if entry[2] then reset = tonumber(entry[2]) + window else reset = now + window end
  elseif kind == 't' then
    local held = reserved(k2, now)
    local fields = redis.call('HGETALL', k1)
    local buckets = {}
    local settled = 0
    local edge = now - window - 1
    for j = 1, #fields, 2 do
      local second = tonumber(fields[j])
      if second <= edge then
        redis.call('HDEL', k1, fields[j])
      else
        local tokens = tonumber(fields[j + 1])
        settled = settled + tokens
        buckets[#buckets + 1] = {second, tokens}
      end
    end
    table.sort(buckets, function(x, y) return x[1] < y[1] end)
    used = settled + held
    ok = used < limit
    if ok then
      if buckets[1] then reset = buckets[1][1] + window + 1 else reset = now + window end
    else
      reset = now + window
      for _, bucket in ipairs(buckets) do
        settled = settled - bucket[2]
        if settled + held < limit then
          reset = bucket[1] + window + 1
          break
        end
      end
    end
  else
    local seed = ARGV[a + 5]
    local current = redis.call('GET', k1)
    if (not current) or tonumber(current) < tonumber(seed) then
      if tonumber(seed) > 0 then
        redis.call('SET', k1, seed, 'EX', math.max(1, math.ceil(tonumber(ARGV[a + 4]) - now)))
      end
      current = seed
    end
    spend = current
    used = tonumber(current) + reserved(k2, now)
    ok = used < limit
  end
  out[#out + 1] = string.format('%.0f', used)
  out[#out + 1] = string.format('%.6f', reset)
  out[#out + 1] = spend
  if not ok then return {0, out} end
end
for i = 1, n do
  local a = 5 + (i - 1) * 5
  local kind = ARGV[a + 1]
  local k1, k2 = KEYS[2 * i - 1], KEYS[2 * i]
  if kind == 'c' then
    redis.call('ZADD', k1, lease_until, ticket)
    redis.call('EXPIRE', k1, lease_ttl)
  elseif kind == 'r' then
    redis.call('ZADD', k1, now, ticket)
    redis.call('EXPIRE', k1, 2 * window)
  else
    redis.call('ZADD', k2, lease_until, ticket .. '|' .. ARGV[a + 3])
    redis.call('EXPIRE', k2, lease_ttl)
  end
end
return {1, out}
"""
)

# KEYS: two per settlement. ARGV: ticket, now, window, n, then per settlement kind,
# amount reserved, actual, expire_at, seed.
SETTLE = """
local ticket = ARGV[1]
local now = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
for i = 1, n do
  local a = 4 + (i - 1) * 5
  local kind = ARGV[a + 1]
  local actual = ARGV[a + 3]
  local k1, k2 = KEYS[2 * i - 1], KEYS[2 * i]
  if kind == 'c' then
    redis.call('ZREM', k1, ticket)
  elseif kind == 't' then
    redis.call('ZREM', k2, ticket .. '|' .. ARGV[a + 2])
    if tonumber(actual) > 0 then
      redis.call('HINCRBY', k1, tostring(math.floor(now)), actual)
      redis.call('EXPIRE', k1, 2 * window)
    end
  elseif kind == 'b' then
    redis.call('ZREM', k2, ticket .. '|' .. ARGV[a + 2])
    if tonumber(actual) > 0 then
      local seed = ARGV[a + 5]
      local ttl = math.max(1, math.ceil(tonumber(ARGV[a + 4]) - now))
      local current = redis.call('GET', k1)
      if (not current) or tonumber(current) < tonumber(seed) then
        redis.call('SET', k1, seed)
      end
      redis.call('INCRBY', k1, actual)
      redis.call('EXPIRE', k1, ttl)
    end
  end
end
return 1
"""

# KEYS: the lease sets; ARGV: now, lease_until, then the member to extend in each.
REFRESH = """
local now = tonumber(ARGV[1])
local lease_until = tonumber(ARGV[2])
local lease_ttl = math.ceil(lease_until - now) + 1
local done = {}
for i, key in ipairs(KEYS) do
  if not done[key] then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    done[key] = true
  end
  -- XX: a lease that expired (and was just dropped) stays gone.
  redis.call('ZADD', key, 'XX', lease_until, ARGV[i + 2])
  redis.call('EXPIRE', key, lease_ttl)
end
return 1
"""


def _unavailable(exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"{type(exc).__name__}: {exc}")


class RedisStore:
    """Counters in Redis shared by every replica (see the module docstring)."""

    def __init__(self, client: aioredis.Redis, prefix: str = "aibridge:") -> None:
        self.client = client
        self.prefix = prefix
        self._admit = client.register_script(ADMIT)
        self._settle = client.register_script(SETTLE)
        self._refresh = client.register_script(REFRESH)

    @classmethod
    def from_url(
        cls, url: str, prefix: str = "aibridge:", *, timeout: float = SOCKET_TIMEOUT
    ) -> RedisStore:
        """A store on the database named by ``url``; short timeouts and one immediate
        retry (a pooled connection may have died with a Redis restart)."""
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
        )
        return cls(client, prefix)

    def _keys(self, check: Check) -> tuple[str, str]:
        subject = check.subject
        prefix = self.prefix
        if check.kind == CONCURRENCY:
            key = f"{prefix}c:{subject}"
            return key, key
        if check.kind == REQUESTS:
            key = f"{prefix}r:{subject}"
            return key, key
        if check.kind == TOKENS:
            return f"{prefix}t:{subject}", f"{prefix}tr:{subject}"
        return f"{prefix}s:{subject}:{check.period_start}", f"{prefix}br:{subject}"

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise _unavailable(exc) from exc

    async def admit(
        self, ticket: str, now: float, lease_until: float, checks: Sequence[Check]
    ) -> AdmitResult:
        """Evaluate ``checks`` in order and take all of them, or none (one round trip)."""
        keys: list[str] = []
        args: list[Any] = [ticket, repr(now), repr(lease_until), WINDOW, len(checks)]
        for check in checks:
            keys.extend(self._keys(check))
            args.extend((check.kind, check.limit, check.amount, check.expire_at, check.seed))
        admitted, flat = await self._call(self._admit, keys, args)
        return AdmitResult(
            bool(admitted),
            [int(value) for value in flat[0::3]],
            [float(value) for value in flat[1::3]],
            [int(value) for value in flat[2::3]],
        )

    async def settle(
        self, ticket: str, now: float, checks: Sequence[Check], tokens: int, cost: int
    ) -> None:
        """Replace the ticket's reservations by what it used (one round trip)."""
        keys: list[str] = []
        args: list[Any] = [ticket, repr(now), WINDOW, 0]
        for check in checks:
            kind = check.kind
            if kind == REQUESTS:
                continue
            actual = tokens if kind == TOKENS else cost if kind == BUDGET else 0
            keys.extend(self._keys(check))
            args.extend((kind, check.amount, actual, check.expire_at, check.seed))
        args[3] = len(keys) // 2
        if keys:
            await self._call(self._settle, keys, args)

    async def refresh(
        self, now: float, leases: Sequence[tuple[str, Check]], lease_until: float
    ) -> None:
        """Extend the held leases (one round trip for all of them)."""
        keys: list[str] = []
        args: list[Any] = [repr(now), repr(lease_until)]
        for ticket, check in leases:
            if check.kind == CONCURRENCY:
                keys.append(self._keys(check)[0])
                args.append(ticket)
            elif check.kind in (TOKENS, BUDGET):
                keys.append(self._keys(check)[1])
                args.append(f"{ticket}|{check.amount}")
        if keys:
            await self._call(self._refresh, keys, args)

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless Redis answers."""
        try:
            await self.client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            raise _unavailable(exc) from exc

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()
