"""The pool's counters: in-process cache counters and its Prometheus series."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass(frozen=True, slots=True)
class CacheMetrics:
    """Point-in-time cache counters (in-process, for tests; reference §8.1).

    ``keys_evicted`` counts capacity evictions only; TTL expirations are ``keys_expired``;
    removals because of a provider replacement or shutdown are neither (see the
    ``aibridge_bridge_pool_retirements_total{reason}`` series for every retirement).
    """

    hits: int
    misses: int
    keys_added: int
    keys_evicted: int
    keys_expired: int


class PoolMetrics:
    """The pool's Prometheus series on ``registry`` (a private registry when None)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self.builds = Counter(
            "aibridge_bridge_pool_builds_total", "Bridges built by the pool.", registry=reg
        )
        self.build_failures = Counter(
            "aibridge_bridge_pool_build_failures_total",
            "Bridge builds that failed.",
            registry=reg,
        )
        self.retries = Counter(
            "aibridge_bridge_pool_retries_total",
            "Requests that retried on another bridge (generation or admission race).",
            ["reason"],
            registry=reg,
        )
        self.retry_exhausted = Counter(
            "aibridge_bridge_pool_retry_exhausted_total",
            "Requests that failed after the last retry.",
            ["reason"],
            registry=reg,
        )
        self.uncached_serves = Counter(
            "aibridge_bridge_pool_uncached_serve_attempts_total",
            "Requests served by a bridge that could not be cached.",
            registry=reg,
        )
        self.retirements = Counter(
            "aibridge_bridge_pool_retirements_total",
            "Bridges retired, by reason.",
            ["reason"],
            registry=reg,
        )
        self.size = Gauge("aibridge_bridge_pool_size", "Bridges currently cached.", registry=reg)
