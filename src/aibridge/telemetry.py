"""Logging setup (text or JSON lines), the Prometheus metrics of the gateway, and the
metrics addon that feeds them from the interception pipeline's hooks."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from aibridge.intercept.injection import Invocation
from aibridge.intercept.interception import Interception, Outcome
from aibridge.intercept.observations import Observation
from aibridge.logredact import redact, remember_secret
from aibridge.logthrottle import throttle_bad_request_logs
from aibridge.loop_metrics import LoopCounter, LoopGauge, LoopHistogram
from aibridge.metric_labels import DEFAULT_MAX_MODELS, BoundedLabel, method_label
from aibridge.providers.breaker_metrics import CircuitBreakerMetrics
from aibridge.providers.keyring import KeyRingMetrics
from aibridge.providers.routes import PassthroughRoute

DEFAULT_MAX_TOOLS = 500
"""Distinct injected tool names with their own metric series (later ones: "other")."""

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

QUIET_LOGGERS: Mapping[str, str] = {
    # aiohttp's own access line: the gateway writes its own (aibridge.access), one per
    # request; enabling both would log every request twice.
    "aiohttp.access": "warning",
    # At debug these print every statement with its parameters (stored secrets, prompts):
    # noise on the hot path, and a leak if a secret were not masked. --log-levels can
    # still turn them on (the lines are redacted like all others).
    "aiosqlite": "warning",
    "sqlalchemy": "warning",
    "botocore": "warning",
    "urllib3": "warning",
    "httpcore": "warning",
    "hpack": "warning",
}
"""Third-party loggers kept at ``warning`` unless ``--log-levels`` names them."""


FLAT_FIELDS = "_aibridge_flat_fields"
"""A log record attribute: ``(fields, produced)``, the dict of the record's extra fields and
the names of those whose string values the gateway made itself (ids it generated, names
from a fixed vocabulary; never text a client sent). Set by a caller whose field names are
fixed in its code, none credential-named (no ``token``/``secret``/``password``/``api_key``/
``authorization`` right before the separator), e.g. the access line
(:mod:`aibridge.server.accesslog`). The formatters then mask every other string value on
its own and skip the pass over the whole finished line (see :func:`_flat_values`)."""

_SCALARS = (int, float, bool, type(None))


def _flat_values(
    fields: dict[str, Any], produced: frozenset[str] = frozenset()
) -> dict[str, Any] | None:
    """``fields`` with every string value not in ``produced`` redacted, or None when a
    value is not a plain string, number, boolean or None (then the whole-line path runs).

    Why no pass over the whole line is needed then: a secret inside one value is masked by
    that value's own redaction (before JSON escaping, as the whole-line path also does);
    numbers and None cannot hold one; and what the whole-line pass could add is only a
    match *across* a field boundary, i.e. a value read as a credential because of the key
    or value before it. The keys are the caller's fixed names, none credential-named
    (:data:`FLAT_FIELDS`), and the separators (``","key":"`` in JSON, `` key=`` in text)
    end in a fixed key, so no value's masking depends on what precedes it. That pass over a
    ~500-character line cost ~150 µs of regex per request (docs/benchmarks.md, round 10)."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if value.__class__ is str:
            out[key] = value if key in produced else redact(value)
        elif isinstance(value, _SCALARS):
            out[key] = value
        else:
            return None
    return out


class _SecondCache:
    """The ``strftime`` text of the current second, made once per second (it costs a few
    microseconds; log lines come many per second)."""

    __slots__ = ("_fmt", "_last")

    def __init__(self, fmt: str) -> None:
        self._fmt = fmt
        self._last: tuple[int, str] = (-1, "")

    def text(self, created: float, converter: Any) -> str:
        """``created`` (epoch seconds) as ``fmt``, to the second."""
        second = int(created)
        last = self._last
        if last[0] == second:
            return last[1]
        text = time.strftime(self._fmt, converter(created))
        self._last = (second, text)
        return text


class JSONFormatter(logging.Formatter):
    """One JSON object per line with the record's ``extra`` fields, secrets masked
    (:func:`aibridge.logredact.redact`)."""

    TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"

    def __init__(self) -> None:
        super().__init__()
        self._seconds = _SecondCache(self.TIME_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The record's time to the second (as before, but cached per second)."""
        if datefmt is None or datefmt == self.TIME_FORMAT:
            return self._seconds.text(record.created, self.converter)
        return super().formatTime(record, datefmt)

    def format(self, record: logging.LogRecord) -> str:
        """One JSON line for ``record``."""
        data: dict[str, Any] = {
            "time": self.formatTime(record, self.TIME_FORMAT),
            "level": record.levelname.lower(),
            "logger": record.name,
            # Masked before encoding too: a secret with a quote or backslash in it would
            # not match once JSON escaped it.
            "msg": redact(record.getMessage()),
        }
        flat_fields = record.__dict__.get(FLAT_FIELDS)
        if flat_fields is not None and not record.exc_info:
            flat = _flat_values(*flat_fields)
            if flat is not None:
                data.update(flat)
                return orjson.dumps(data).decode()
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            data["exc"] = redact(self.formatException(record.exc_info))
        # And the whole line: nested extras and anything converted by ``default``.
        return redact(orjson.dumps(data, default=str).decode())


class TextFormatter(logging.Formatter):
    """Human-readable lines with ``key=value`` extras appended, secrets masked."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self._seconds = _SecondCache(self.default_time_format)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """``logging``'s default time text (``2026-01-02 03:04:05,678``), its seconds part
        made once per second."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        seconds = self._seconds.text(record.created, self.converter)
        # logging's default_msec_format, "%s,%03d"
        return f"{seconds},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        """The standard line plus ``key=value`` extras."""
        flat_fields = record.__dict__.get(FLAT_FIELDS)
        if flat_fields is not None and not record.exc_info and not record.stack_info:
            flat = _flat_values(*flat_fields)
            if flat is not None:
                # logging.Formatter.format without its exception and stack parts (none).
                record.message = redact(record.getMessage())
                record.asctime = self.formatTime(record, self.datefmt)
                line = self.formatMessage(record)
                return f"{line} {' '.join([f'{k}={v}' for k, v in flat.items()])}"
        line = super().format(record)
        extras = [
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD and not k.startswith("_")
        ]
        return redact(f"{line} {' '.join(extras)}" if extras else line)


def setup_logging(
    level: str = "info",
    fmt: str = "text",
    *,
    bad_request_log_interval: float = 60.0,
    levels: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
) -> None:
    """Configure the root logger once for the process.

    ``levels`` sets loggers' own levels (``--log-levels``), over :data:`QUIET_LOGGERS`.
    ``secrets`` (the encryption key, the database password) are masked in every line, like
    every secret the store seals. aiohttp's per-request errors for malformed requests are
    logged at most once per ``bad_request_log_interval`` seconds, with a count
    (:mod:`aibridge.logthrottle`).
    """
    for secret in secrets:
        remember_secret(secret)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, logger_level in {**QUIET_LOGGERS, **(levels or {})}.items():
        logging.getLogger(name).setLevel(logger_level.upper())
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
        # Updated on every request from the event loop: lock-free (see _LoopMetric).
        self.interceptions = LoopCounter(
            "aibridge_interceptions",
            "Bridged requests by outcome (completed, or the recorded error type).",
            ("provider", "api", "outcome"),
            reg,
        )
        self.duration = LoopHistogram(
            "aibridge_interception_duration_seconds",
            "Time from request to the end of the relayed response.",
            ("provider", "api"),
            reg,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
        )
        self.inflight = LoopGauge(
            "aibridge_interceptions_inflight",
            "Bridged requests in progress.",
            ("provider", "api"),
            reg,
        )
        self.passthrough = LoopCounter(
            "aibridge_passthrough",
            "Passthrough requests by provider and method (non-standard methods as other).",
            ("provider", "method"),
            reg,
        )
        self.tokens = LoopCounter(
            "aibridge_tokens",
            "Tokens by provider, model and type (input is uncached input; models past "
            'AIBRIDGE_METRICS_MAX_MODELS as "other").',
            ("provider", "model", "type"),
            reg,
        )
        self.injected_tools = LoopCounter(
            "aibridge_injected_tool_invocations",
            "Calls of injected MCP tools the gateway made, by provider, model (bounded), "
            "MCP server name and the tool's own name (bounded).",
            ("provider", "model", "server", "name"),
            reg,
        )
        # Tool names come from MCP servers, not from the admin: bounded like models.
        self.tool_label = BoundedLabel(DEFAULT_MAX_TOOLS)
        self.keypool = KeyRingMetrics(reg)
        self.breakers = CircuitBreakerMetrics(reg, self.model_label)

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return bytes(generate_latest(self.registry))


class MetricsAddon:
    """Feeds :class:`GatewayMetrics` from the pipeline's hooks
    (:mod:`aibridge.intercept.hooks`): interceptions in flight, their duration and
    outcome, tokens by provider and (bounded) model, passthrough requests by method."""

    __slots__ = ("metrics",)

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def started(self, ix: Interception) -> None:
        """One more interception in flight."""
        self.metrics.inflight.labels(ix.provider.name, ix.api).inc()

    def observed(self, ix: Interception, observation: Observation) -> None:
        """Count the tokens of every upstream call the response reported."""
        if not observation.usages:
            return
        labels = self.metrics.tokens.labels
        name = ix.provider.name
        for usage in observation.usages:
            # Bounded: the model comes from the client (or the upstream).
            model = self.metrics.model_label(usage.model or ix.model)
            for kind, value in (
                ("input", usage.input),
                ("output", usage.output),
                ("cache_read", usage.cache_read),
                ("cache_write", usage.cache_write),
                ("reasoning", usage.reasoning),
            ):
                if value:
                    labels(name, model, kind).inc(value)

    def ended(self, ix: Interception, outcome: Outcome) -> None:
        """One fewer in flight; its duration, and its outcome (the recorded error type, or
        ``completed``)."""
        metrics = self.metrics
        name, api = ix.provider.name, ix.api
        metrics.inflight.labels(name, api).dec()
        metrics.duration.labels(name, api).observe(time.perf_counter() - ix.began)
        metrics.interceptions.labels(name, api, outcome.error_type or "completed").inc()

    def tool_invoked(self, ix: Interception, invocation: Invocation) -> None:
        """One injected tool call the gateway made (the server by its configured name: URLs
        may carry credentials)."""
        if not invocation.invoked:
            return
        metrics = self.metrics
        metrics.injected_tools.labels(
            ix.provider.name,
            metrics.model_label(ix.model),
            invocation.server_name,
            metrics.tool_label(invocation.name),
        ).inc()

    def passed_through(self, route: PassthroughRoute, method: str) -> None:
        """One passthrough request (non-standard methods as ``other``)."""
        self.metrics.passthrough.labels(route.provider.name, method_label(method)).inc()
