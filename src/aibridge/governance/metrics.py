"""Prometheus metrics of the limiter (refusals, latency, fallback, budgets).

Updated on every request from the event loop, so the lock-free loop metrics are used.
The remaining-budget gauge is built at scrape time for at most ``max_subjects`` subjects
with the least left, so a large user base cannot blow up the series count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from aibridge.loop_metrics import LoopCounter, LoopGauge, LoopHistogram

DURATION_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.1,
    0.25,
)
"""Admission latency buckets: in-process admissions take microseconds, Redis ones a
round trip (sub-millisecond on a LAN, up to the socket timeout when it is down)."""

DEFAULT_MAX_BUDGET_SUBJECTS = 20


class BudgetRatioCollector(Collector):
    """``aibridge_budget_remaining_ratio{subject}`` for the subjects with the least left."""

    def __init__(
        self, ratios: Callable[[], Iterable[tuple[str, float]]], max_subjects: int
    ) -> None:
        self._ratios = ratios
        self._max = max_subjects

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One sample per subject among the ``max_subjects`` lowest ratios."""
        family = GaugeMetricFamily(
            "aibridge_budget_remaining_ratio",
            "Fraction of the budget left this period (the subjects with the least left).",
            labels=["subject"],
        )
        for subject, ratio in sorted(self._ratios(), key=lambda item: item[1])[: self._max]:
            family.add_metric([subject], ratio)
        yield family


class LimiterMetrics:
    """The limiter's metrics in ``registry`` (None: kept but not exported, for tests)."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.registry = registry
        self.refusals = LoopCounter(
            "aibridge_limit_refusals",
            "Requests refused by the gateway's own limits, by reason (the error_type).",
            ("reason",),
            registry,
        )
        self.duration = LoopHistogram(
            "aibridge_limiter_duration_seconds",
            "Time to decide an admission (model access, counters, reservations).",
            (),
            registry,
            buckets=DURATION_BUCKETS,
        )
        self.fallback = LoopGauge(
            "aibridge_limiter_fallback",
            "1 while the shared store (Redis) is unreachable and limits are per replica.",
            (),
            registry,
        )
        self.fallback.labels().value = 0.0
        self.soft_exceeded = LoopCounter(
            "aibridge_budget_soft_exceeded",
            "Budgets that crossed their soft threshold (once per subject and period).",
            ("scope",),
            registry,
        )

    def watch_budgets(
        self,
        ratios: Callable[[], Iterable[tuple[str, float]]],
        max_subjects: int = DEFAULT_MAX_BUDGET_SUBJECTS,
    ) -> None:
        """Export the remaining-budget gauge from ``ratios`` (called on every scrape)."""
        if self.registry is not None:
            self.registry.register(BudgetRatioCollector(ratios, max_subjects))
