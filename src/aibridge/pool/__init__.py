"""The bridge pool: one bridge per (user, gateway key), shared, bounded and hot-reloadable.

What the pool guarantees (the seed's contract, DESIGN.md "The pool"):

* **One bridge per key.** A bridge is built on first use for ``BridgeKey(user_id, key_id)``
  and shared by that key's concurrent requests.
* **Bounded.** At most ``max_items`` cached bridges, each living at most ``ttl`` seconds
  from insertion (absolute: hits do not extend it, so whatever a bridge holds is rebuilt
  periodically).
* **Single-flight per generation.** N concurrent first requests build exactly one bridge.
  The provider *generation* is part of the build identity: a build that started before
  :meth:`CachedBridgePool.replace_providers` is never joined by, cached for, or served to
  a request that arrives afterwards. When a stale build finishes, its bridge is retired
  without serving anything and the callers that had joined it retry on the current
  generation (Pool-v4 behaviour: nobody is served by providers that were replaced).
* **Retirement is exactly once, in the background, bounded.** Eviction, expiry,
  replacement, admission refusal and shutdown all go through one retire path guarded by
  a flag: the bridge stops admitting at once, then a tracked task drains its admitted
  requests (up to ``retirement_timeout``, after which they are cancelled).
* **In-flight requests keep their bridge.** A request holds an admission on the bridge it
  acquired; nothing the pool does afterwards swaps the bridge under it.

Inside: ``_pool`` (the pool), ``_cache`` (generations, entries, the LRU/TTL map),
``_builds`` (single-flight builds), ``_admission`` (admission onto a bridge and its
bounded drain), ``_retirement`` (background drains, the shutdown wait), ``_builder`` (the
key and the builders), ``_hooks``, ``_metrics`` and ``_errors``.
"""

from aibridge.pool._builder import BridgeBuilder, BridgeKey, request_bridge_builder
from aibridge.pool._errors import (
    BridgeBuildError,
    BridgeBuildExited,
    GenerationRetired,
    PoolError,
    PoolShuttingDown,
    RetryLimitExceeded,
)
from aibridge.pool._hooks import PoolHooks
from aibridge.pool._metrics import CacheMetrics
from aibridge.pool._pool import CachedBridgePool

__all__ = [
    "BridgeBuildError",
    "BridgeBuildExited",
    "BridgeBuilder",
    "BridgeKey",
    "CacheMetrics",
    "CachedBridgePool",
    "GenerationRetired",
    "PoolError",
    "PoolHooks",
    "PoolShuttingDown",
    "RetryLimitExceeded",
    "request_bridge_builder",
]
