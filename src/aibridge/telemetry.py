"""Logging setup (text or JSON lines) and the Prometheus metrics of the gateway."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from aibridge.logthrottle import throttle_bad_request_logs
from aibridge.metric_labels import DEFAULT_MAX_MODELS, BoundedLabel
from aibridge.providers.breaker_metrics import CircuitBreakerMetrics
from aibridge.providers.keypool import KeyPoolMetrics

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    """One JSON object per line with the record's ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON line for ``record``."""
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines with ``key=value`` extras appended."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The standard line plus ``key=value`` extras."""
        line = super().format(record)
        extras = [
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD and not k.startswith("_")
        ]
        return f"{line} {' '.join(extras)}" if extras else line


def setup_logging(
    level: str = "info", fmt: str = "text", *, bad_request_log_interval: float = 60.0
) -> None:
    """Configure the root logger once for the process.

    aiohttp's per-request errors for malformed requests are logged at most once per
    ``bad_request_log_interval`` seconds, with a count (:mod:`aibridge.logthrottle`).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    throttle_bad_request_logs(bad_request_log_interval)


class GatewayMetrics:
    """The Prometheus series of one gateway process, on one registry (the provider
    reloader registers its own there: :class:`aibridge.reload.ReloadMetrics`).

    A registry per process (not the global one) lets tests run several gateways in one
    interpreter without duplicate-series errors.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, max_models: int = DEFAULT_MAX_MODELS
    ) -> None:
        self.registry = registry or CollectorRegistry()
        reg = self.registry
        # Model names come from requests: the token and breaker series of models past
        # the first ``max_models`` are counted under model="other".
        self.model_label = BoundedLabel(max_models)
        self.interceptions = Counter(
            "aibridge_interceptions_total",
            "Bridged requests by outcome (completed, or the recorded error type).",
            ["provider", "api", "outcome"],
            registry=reg,
        )
        self.duration = Histogram(
            "aibridge_interception_duration_seconds",
            "Time from request to the end of the relayed response.",
            ["provider", "api"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=reg,
        )
        self.inflight = Gauge(
            "aibridge_interceptions_inflight",
            "Bridged requests in progress.",
            ["provider", "api"],
            registry=reg,
        )
        self.passthrough = Counter(
            "aibridge_passthrough_total",
            "Passthrough requests by provider and method (non-standard methods as other).",
            ["provider", "method"],
            registry=reg,
        )
        self.tokens = Counter(
            "aibridge_tokens_total",
            "Tokens by provider, model and type (input is uncached input; models past "
            'AIBRIDGE_METRICS_MAX_MODELS as "other").',
            ["provider", "model", "type"],
            registry=reg,
        )
        self.keypool = KeyPoolMetrics(reg)
        self.breakers = CircuitBreakerMetrics(reg, self.model_label)

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return bytes(generate_latest(self.registry))
