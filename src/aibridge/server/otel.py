"""The OpenTelemetry SDK behind :class:`aibridge.tracing.Tracer` (imported only when
tracing is on: see :mod:`aibridge.server.tracing`).

One tracer provider per gateway process, never installed as OpenTelemetry's global one
(no other library's spans are exported by accident, and tests can start and stop it);
a batch span processor exports from its own daemon thread through an exporter wrapper
that counts failed exports (``aibridge_trace_export_failures_total``) — an export that
fails is dropped by the SDK and never reaches a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, cast

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, Counter

from aibridge.server.tracing import SHUTDOWN_TIMEOUT, TracingConfig
from aibridge.tracing import Attributes, Span

log = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
_ERROR = StatusCode.ERROR


class CountingExporter(SpanExporter):
    """Exports through ``inner`` and counts the exports that failed (an error result or
    an exception: the batch is dropped either way, as the SDK does)."""

    def __init__(self, inner: SpanExporter, failures: Counter) -> None:
        self.inner = inner
        self.failures = failures

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export ``spans``; a failure is counted, never raised."""
        try:
            result = self.inner.export(spans)
        except Exception:
            log.debug("trace export raised", exc_info=True)
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.failures.inc()
        return result

    def shutdown(self) -> None:
        """Shut the inner exporter down."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the inner exporter."""
        return self.inner.force_flush(timeout_millis)


def _sampler(config: TracingConfig) -> Sampler:
    rate = config.sampler_arg if config.sampler_arg is not None else 1.0
    root: Sampler = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(rate),
    }[config.sampler.removeprefix("parentbased_")]
    return ParentBased(root) if config.sampler.startswith("parentbased_") else root


def _exporter(config: TracingConfig) -> SpanExporter:
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(endpoint=config.endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(endpoint=config.endpoint)


class OTelTracing:
    """The running SDK: implements :class:`aibridge.tracing.Tracer` over one provider."""

    def __init__(self, provider: TracerProvider, failures: Counter) -> None:
        self.provider = provider
        self.failures = failures
        """Failed exports (``aibridge_trace_export_failures_total``)."""
        self._tracer = provider.get_tracer("aibridge")

    @classmethod
    def create(cls, config: TracingConfig, registry: CollectorRegistry) -> OTelTracing:
        """Build the provider, the exporter and its batch thread."""
        failures = Counter(
            "aibridge_trace_export_failures",
            "Trace exports (batches of spans) the collector did not accept; the spans "
            "were dropped.",
            registry=registry,
        )
        provider = TracerProvider(
            sampler=_sampler(config),
            resource=Resource.create({"service.name": config.service_name}),
            # Shut down by the gateway's own shutdown sequence, bounded; an atexit
            # shutdown could wait on a collector that is down.
            shutdown_on_exit=False,
        )
        provider.add_span_processor(
            BatchSpanProcessor(
                CountingExporter(_exporter(config), failures),
                schedule_delay_millis=config.schedule_delay_ms,
            )
        )
        log.info(
            "OpenTelemetry traces on",
            extra={"protocol": config.protocol, "endpoint": config.endpoint},
        )
        return cls(provider, failures)

    # -- aibridge.tracing.Tracer ------------------------------------------------------

    def start(
        self, name: str, attributes: Attributes | None = None, *, parent: Span | None = None
    ) -> Span:
        """Start a span (child of ``parent``, else of the current span)."""
        ctx = None if parent is None else otel_trace.set_span_in_context(_otel(parent))
        return cast(Span, self._tracer.start_span(name, ctx, attributes=attributes))

    def start_server(
        self, name: str, headers: Mapping[str, str], attributes: Attributes | None = None
    ) -> Span:
        """A request's root span, continuing the client's trace when it sent one."""
        ctx = _PROPAGATOR.extract(headers) if "traceparent" in headers else None
        return cast(
            Span,
            self._tracer.start_span(name, ctx, kind=SpanKind.SERVER, attributes=attributes),
        )

    def activate(self, span: Span) -> object:
        """Make ``span`` current in this task's context."""
        return otel_context.attach(otel_trace.set_span_in_context(_otel(span)))

    def deactivate(self, token: object) -> None:
        """Restore the context :meth:`activate` replaced."""
        otel_context.detach(cast(Any, token))

    def current(self) -> Span | None:
        """This task's current span, if a real one."""
        span = otel_trace.get_current_span()
        return cast(Span, span) if span.get_span_context().is_valid else None

    def fail(self, span: Span, message: str | None) -> None:
        """Status Error with ``message``."""
        _otel(span).set_status(Status(_ERROR, message))

    def inject(self, span: Span, headers: dict[str, str] | object) -> None:
        """``traceparent``/``tracestate`` of ``span`` into ``headers``."""
        _PROPAGATOR.inject(
            cast(MutableMapping[str, str], headers),
            otel_trace.set_span_in_context(_otel(span)),
        )

    def trace_id(self, span: Span) -> str | None:
        """The sampled span's trace id in hex."""
        ctx = _otel(span).get_span_context()
        if not ctx.trace_flags.sampled:
            return None
        return f"{ctx.trace_id:032x}"

    # -- lifecycle ----------------------------------------------------------------------

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Flush the last spans and stop the batch thread, within ``timeout`` seconds
        (default :data:`SHUTDOWN_TIMEOUT`).

        The SDK's shutdown blocks (an export to a collector that is down retries until
        its own timeout), so it runs in a daemon thread: past ``timeout`` the gateway
        goes on stopping and the thread can neither hold the loop nor the exit.
        """
        if timeout is None:
            timeout = SHUTDOWN_TIMEOUT
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def run() -> None:
            try:
                self.provider.shutdown()
            except Exception:  # pragma: no cover - the SDK logs its own failures
                log.exception("trace provider shutdown failed")
            finally:
                # The loop may be gone when a slow flush finally returns.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_resolve, done)

        threading.Thread(target=run, name="aibridge-trace-shutdown", daemon=True).start()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(done)
        except TimeoutError:
            log.warning(
                "trace exporter did not flush within %g s at shutdown; spans dropped", timeout
            )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _otel(span: Span) -> otel_trace.Span:
    return cast(otel_trace.Span, span)
