"""Prometheus metrics of the recorder.

One :class:`RecorderMetrics` per registry: prometheus_client refuses to register the same
metric name twice on one registry, and several recorders in one process (tests, restarts
of the app in-process) must share the series instead of crashing.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from aibridge.loop_metrics import LoopCounter
from aibridge.recording.records import RECORD_TYPES

_lock = threading.Lock()
# Weak keys: a test's registry and its metrics go away together.
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, RecorderMetrics] = (
    weakref.WeakKeyDictionary()
)


class RecorderMetrics:
    """Counters, the queue-depth gauge and the batch-latency histogram of the recorder.

    Use :meth:`for_registry` rather than the constructor so a registry gets one set.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        ns = "aibridge_recorder"
        # Counted for every record on the event loop: lock-free (aibridge.loop_metrics).
        self.enqueued = LoopCounter(
            f"{ns}_records_enqueued",
            "Records accepted into the in-memory queue.",
            ("kind",),
            registry,
        )
        self.written = LoopCounter(
            f"{ns}_records_written",
            "Records written to the database by the batch writer (not counting replays).",
            ("kind",),
            registry,
        )
        self.spilled = Counter(
            f"{ns}_records_spilled",
            "Records appended to the local spill file because the queue was full or the "
            "database was unavailable at shutdown.",
            registry=registry,
        )
        self.replayed = Counter(
            f"{ns}_records_replayed",
            "Spilled records written to the database by the replayer.",
            registry=registry,
        )
        self.dropped = Counter(
            f"{ns}_records_dropped",
            "Records lost: the spill file could not be written, a spill line was corrupt, "
            "or the database rejected the record itself.",
            registry=registry,
        )
        self.write_errors = Counter(
            f"{ns}_write_errors",
            "Failed database writes (batches, replays and synchronous start records).",
            registry=registry,
        )
        self.queue_depth = Gauge(
            f"{ns}_queue_depth", "Records waiting in the in-memory queue.", registry=registry
        )
        self.batch_seconds = Histogram(
            f"{ns}_batch_seconds",
            "Time to write one batch in one transaction.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        # Label children resolved once: the hot path does a dict lookup and an inc().
        self.enqueued_by_kind = {k: self.enqueued.labels(k) for k in RECORD_TYPES}
        self.written_by_kind = {k: self.written.labels(k) for k in RECORD_TYPES}

    @classmethod
    def for_registry(cls, registry: CollectorRegistry | None = None) -> RecorderMetrics:
        """The shared metrics of ``registry`` (default: the global ``REGISTRY``)."""
        reg = REGISTRY if registry is None else registry
        with _lock:
            metrics = _by_registry.get(reg)
            if metrics is None:
                metrics = cls(reg)
                _by_registry[reg] = metrics
            return metrics

    def track_queue(self, depth: Callable[[], float]) -> None:
        """Report ``depth()`` as the queue-depth gauge at scrape time (zero hot-path cost)."""
        self.queue_depth.set_function(depth)
