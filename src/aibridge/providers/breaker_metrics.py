"""Prometheus series of the circuit breakers, with a bounded model label."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from aibridge.metric_labels import BoundedLabel

if TYPE_CHECKING:
    from aibridge.providers.circuitbreaker import BreakerKey


class CircuitBreakerMetrics:
    """Prometheus metrics for all breakers of a process (create once per registry).

    The model comes from the client's request, so its label is bounded by ``model_label``
    (shared with the token counter): breakers of models past the cap count their trips and
    rejects under ``model="other"`` and export no state series, since one gauge cannot
    hold the states of many breakers.
    """

    def __init__(
        self, registry: CollectorRegistry | None = REGISTRY, model_label: BoundedLabel | None = None
    ) -> None:
        self.model_label = model_label if model_label is not None else BoundedLabel()
        labels = ["provider", "endpoint", "model"]
        self.state = Gauge(
            "aibridge_circuit_breaker_state",
            "Circuit breaker state: 0 closed, 0.5 half-open, 1 open "
            '(no series for breakers counted under model="other").',
            labels,
            registry=registry,
        )
        self.trips = Counter(
            "aibridge_circuit_breaker_trips_total",
            "Transitions of a circuit breaker to open.",
            labels,
            registry=registry,
        )
        self.rejects = Counter(
            "aibridge_circuit_breaker_rejects_total",
            "Requests rejected by an open (or full half-open) circuit breaker.",
            labels,
            registry=registry,
        )

    def labels_for(self, key: BreakerKey) -> tuple[tuple[str, str, str], bool]:
        """The label values for ``key``'s series and whether they are its own (False when
        its model is counted under ``other`` with others)."""
        model = self.model_label(key.model)
        return (key.provider, key.endpoint, model), model == key.model

    def forget(self, key: BreakerKey) -> None:
        """Drop an evicted breaker's series (shared ``other`` series stay)."""
        labels, own = self.labels_for(key)
        if not own:
            return
        for metric in (self.state, self.trips, self.rejects):
            with contextlib.suppress(KeyError):
                metric.remove(*labels)
