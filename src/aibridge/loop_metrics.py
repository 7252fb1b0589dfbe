"""Prometheus metrics for series updated on every request, without a lock per update.

``prometheus_client``'s metrics take a ``threading.Lock`` for every ``inc()``/``observe()``
and validate the labels on every ``labels()`` call: about 5 % of the event loop's time
per request in the gateway. The series here are updated only from the event loop thread,
so plain attributes do; a collector builds, when the registry is scraped, exactly the
samples ``prometheus_client`` would (names, labels, order, values, ``_created`` series),
so ``/metrics`` reads the same. Children are created on first use and never removed.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import ClassVar, Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import INF, floatToGoString

__all__ = ["LoopCounter", "LoopGauge", "LoopHistogram"]


class _CounterChild:
    """One labelled series of a :class:`LoopCounter`."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (non-negative, as for ``prometheus_client.Counter``)."""
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class _GaugeChild:
    """One labelled series of a :class:`LoopGauge`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        """Add ``amount``."""
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        """Subtract ``amount``."""
        self.value -= amount


class _HistogramChild:
    """One labelled series of a :class:`LoopHistogram`: a count per bucket (not cumulative)."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        """Count ``amount`` in the first bucket whose bound is at least ``amount``."""
        self.sum += amount
        if amount == amount:  # NaN lands in no bucket, as in prometheus_client
            self.counts[bisect_left(self.bounds, amount)] += 1


C = TypeVar("C")


class _LoopMetric(Collector, Generic[C]):
    """A labelled metric updated only from the event loop thread, exported on scrape
    (see the module docstring); ``C`` is its child type."""

    kind: ClassVar[str]

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        registry: CollectorRegistry | None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.children: dict[tuple[str, ...], C] = {}
        if registry is not None:  # None: not exported (as with prometheus_client)
            registry.register(self)

    def describe(self) -> list[Metric]:
        """The metric without samples (the registry checks names with it)."""
        return [Metric(self.name, self.documentation, self.kind)]

    def labels(self, *values: str) -> C:
        """The child of these label values (created on first use)."""
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = self._new_child()
        return child

    def _new_child(self) -> C:
        raise NotImplementedError

    def _series(self, labels: tuple[str, ...]) -> dict[str, str]:
        return dict(zip(self.labelnames, labels, strict=True))


class LoopCounter(_LoopMetric[_CounterChild]):
    """A counter (see :class:`_LoopMetric`); ``name`` without the ``_total`` suffix."""

    kind = "counter"

    def _new_child(self) -> _CounterChild:
        return _CounterChild()

    def collect(self) -> list[Metric]:
        """``<name>_total`` (and ``<name>_created``) per child."""
        metric = Metric(self.name, self.documentation, self.kind)
        created = prometheus_metrics._use_created
        for labels, child in list(self.children.items()):
            series = self._series(labels)
            metric.add_sample(self.name + "_total", series, float(child.value))
            if created:
                metric.add_sample(self.name + "_created", dict(series), child.created)
        return [metric]


class LoopGauge(_LoopMetric[_GaugeChild]):
    """A gauge (see :class:`_LoopMetric`)."""

    kind = "gauge"

    def _new_child(self) -> _GaugeChild:
        return _GaugeChild()

    def collect(self) -> list[Metric]:
        """One sample per child."""
        metric = Metric(self.name, self.documentation, self.kind)
        for labels, child in list(self.children.items()):
            metric.add_sample(self.name, self._series(labels), float(child.value))
        return [metric]


class LoopHistogram(_LoopMetric[_HistogramChild]):
    """A histogram with fixed buckets (see :class:`_LoopMetric`)."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        registry: CollectorRegistry | None,
        *,
        buckets: tuple[float, ...],
    ) -> None:
        bounds = tuple(float(b) for b in buckets)
        self.bounds = bounds if bounds[-1] == INF else (*bounds, INF)
        self._le = [floatToGoString(b) for b in self.bounds]
        super().__init__(name, documentation, labelnames, registry)

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(self.bounds)

    def collect(self) -> list[Metric]:
        """Cumulative ``_bucket`` samples, ``_count``, ``_sum`` (and ``_created``) per child."""
        metric = Metric(self.name, self.documentation, self.kind)
        created = prometheus_metrics._use_created
        name = self.name
        for labels, child in list(self.children.items()):
            series = self._series(labels)
            counts = list(child.counts)
            acc = 0.0
            for le, count in zip(self._le, counts, strict=True):
                acc += count
                metric.add_sample(name + "_bucket", {**series, "le": le}, acc)
            metric.add_sample(name + "_count", dict(series), acc)
            metric.add_sample(name + "_sum", dict(series), child.sum)
            if created:
                metric.add_sample(name + "_created", dict(series), child.created)
        return [metric]
