"""OpenTelemetry traces from the standard ``OTEL_*`` variables: read, checked, started.

:func:`tracing_config` reads the variables (no OpenTelemetry import: with tracing off the
SDK is never loaded); :func:`start_tracing` imports the SDK and the chosen OTLP exporter
(:mod:`aibridge.server.otel`), builds the tracer provider and returns the running
:class:`~aibridge.server.otel.OTelTracing`, which start-up installs as
:data:`aibridge.tracing.TRACER` and stops last at shutdown (bounded).

Variables read (from the process environment, as every OpenTelemetry SDK does):

* ``OTEL_SDK_DISABLED`` (``true``: off), ``OTEL_TRACES_EXPORTER``: ``otlp`` turns tracing
  on; unset or ``none`` leaves it off.
* ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``:
  ``http/protobuf`` (default) or ``grpc``.
* ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used as is) / ``OTEL_EXPORTER_OTLP_ENDPOINT``
  (``/v1/traces`` appended for HTTP); defaults ``http://localhost:4318/v1/traces`` (HTTP),
  ``http://localhost:4317`` (gRPC).
* ``OTEL_SERVICE_NAME`` (default ``aibridge``), ``OTEL_TRACES_SAMPLER`` and
  ``OTEL_TRACES_SAMPLER_ARG`` (default ``parentbased_always_on``),
  ``OTEL_BSP_SCHEDULE_DELAY`` (ms, default 5000).
* Headers, timeouts, certificates, compression and the batch processor's queue sizes
  are read by the SDK itself (``OTEL_EXPORTER_OTLP_HEADERS`` and the rest).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

if TYPE_CHECKING:
    from aibridge.server.otel import OTelTracing

EXPORTERS = ("otlp", "none")
PROTOCOLS = ("http/protobuf", "grpc")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
DEFAULT_SERVICE_NAME = "aibridge"
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318/v1/traces"
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
DEFAULT_SCHEDULE_DELAY_MS = 5000.0
SHUTDOWN_TIMEOUT = 5.0
"""Seconds the shutdown may spend flushing the last spans (a collector that is down or
hangs must not hold the process)."""


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable has a value the gateway cannot use; says which and what
    values it takes."""


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """Tracing as the variables ask for it (only made when tracing is on)."""

    protocol: str
    endpoint: str
    service_name: str
    sampler: str
    sampler_arg: float | None
    schedule_delay_ms: float


def _get(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = _get(env, name).lower() or default
    if value not in allowed:
        raise TracingConfigError(
            f"{name}={_get(env, name)!r} is not supported; use one of: {', '.join(allowed)}"
        )
    return value


def tracing_config(env: Mapping[str, str]) -> TracingConfig | None:
    """The tracing the variables in ``env`` ask for; None when tracing is off. Raises
    :class:`TracingConfigError` for a value it cannot use (naming the variable and the
    values it takes)."""
    if _get(env, "OTEL_SDK_DISABLED").lower() == "true":
        return None
    if _choice(env, "OTEL_TRACES_EXPORTER", EXPORTERS, "none") == "none":
        return None
    protocol_var = (
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
        if _get(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        else "OTEL_EXPORTER_OTLP_PROTOCOL"
    )
    protocol = _choice(env, protocol_var, PROTOCOLS, "http/protobuf")
    endpoint = _get(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not endpoint:
        base = _get(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
        if protocol == "grpc":
            endpoint = base or DEFAULT_GRPC_ENDPOINT
        else:
            endpoint = base.rstrip("/") + "/v1/traces" if base else DEFAULT_HTTP_ENDPOINT
    if not endpoint.startswith(("http://", "https://")):
        raise TracingConfigError(
            f"the OTLP endpoint {endpoint!r} must be an http:// or https:// URL "
            "(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT)"
        )
    sampler = _choice(env, "OTEL_TRACES_SAMPLER", SAMPLERS, "parentbased_always_on")
    sampler_arg: float | None = None
    if sampler.endswith("traceidratio"):
        raw = _get(env, "OTEL_TRACES_SAMPLER_ARG") or "1.0"
        try:
            sampler_arg = float(raw)
        except ValueError:
            sampler_arg = -1.0
        if not 0.0 <= sampler_arg <= 1.0:
            raise TracingConfigError(
                f"OTEL_TRACES_SAMPLER_ARG={raw!r} must be a number from 0 to 1"
            )
    raw_delay = _get(env, "OTEL_BSP_SCHEDULE_DELAY")
    try:
        delay = float(raw_delay) if raw_delay else DEFAULT_SCHEDULE_DELAY_MS
    except ValueError:
        delay = -1.0
    if delay < 0:
        raise TracingConfigError(
            f"OTEL_BSP_SCHEDULE_DELAY={raw_delay!r} must be a number of milliseconds (>= 0)"
        )
    return TracingConfig(
        protocol=protocol,
        endpoint=endpoint,
        service_name=_get(env, "OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME,
        sampler=sampler,
        sampler_arg=sampler_arg,
        schedule_delay_ms=delay,
    )


def start_tracing(config: TracingConfig, registry: CollectorRegistry) -> OTelTracing:
    """Import the SDK and the exporter, and start exporting (its batch thread runs from
    here on). Export failures are counted on ``registry``."""
    if config.protocol == "grpc":
        try:
            import grpc  # noqa: F401
        except ImportError as exc:  # pragma: no cover - grpcio is a dependency
            raise TracingConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs grpcio: `pip install grpcio "
                "opentelemetry-exporter-otlp-proto-grpc`, or use http/protobuf"
            ) from exc
    from aibridge.server.otel import OTelTracing

    return OTelTracing.create(config, registry)
