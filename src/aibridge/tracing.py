"""The tracing seam: an optional process-wide tracer handle, and the span names.

Tracing is off unless the ``OTEL_*`` variables turn it on (``aibridge.server.tracing``
reads them, builds the OpenTelemetry SDK and installs a :class:`Tracer` here at start-up,
and removes it at shutdown). Code that traces reads :data:`TRACER` once per request and
does nothing more when it is None: no span object is made, no OpenTelemetry function is
called, and this module imports nothing of OpenTelemetry (the SDK is imported only when
tracing is on).

It sits in the bottom layer so that every layer that makes spans (``intercept``,
``pool``, ``mcp``, ``recording``) may use it; the :class:`Tracer` protocol is all they
see. Spans nest through the request task's context (:meth:`Tracer.activate`), so a span
started inside the bridge pool's build task or an MCP session task (both copy the
context of the request that started them) has the right parent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

AttributeValue = str | bool | int | float
"""What a span attribute may hold here."""

Attributes = Mapping[str, AttributeValue]

# Span names (reference §6.2, §4.3; the pool's from aibridged).
INTERCEPT = "Intercept"
PROCESS_REQUEST = "Intercept.ProcessRequest"
UPSTREAM = "Intercept.ProcessRequest.Upstream"
TOOL_CALL = "Intercept.ProcessRequest.ToolCall"
PASSTHROUGH = "Passthrough"
RECORD_BATCH = "Intercept.RecordBatch"
POOL_ACQUIRE = "CachedBridgePool.Acquire"
POOL_BUILD = "CachedBridgePool.Build"
MCP_INIT = "ServerProxyManager.Init"
MCP_PROXY_INIT = "StreamableHTTPServerProxy.Init"
MCP_FETCH_TOOLS = "StreamableHTTPServerProxy.Init.fetchTools"


class Span(Protocol):
    """The part of an OpenTelemetry span the gateway uses."""

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set one attribute."""

    def set_attributes(self, attributes: Attributes) -> None:
        """Set several attributes."""

    def add_event(self, name: str, attributes: Attributes | None = None) -> None:
        """Add a timestamped event."""

    def update_name(self, name: str) -> None:
        """Rename the span (a request's root span once its route is known)."""

    def end(self) -> None:
        """End the span now (it is exported with its batch)."""


class Tracer(Protocol):
    """What code that traces may ask of the installed tracer."""

    def start(
        self, name: str, attributes: Attributes | None = None, *, parent: Span | None = None
    ) -> Span:
        """Start a span: a child of ``parent``, else of the task's current span (see
        :meth:`activate`), else a root span."""

    def start_server(
        self, name: str, headers: Mapping[str, str], attributes: Attributes | None = None
    ) -> Span:
        """Start a request's root span: a child of the client's span when ``headers``
        carry a valid W3C ``traceparent``, else the root of a new trace."""

    def activate(self, span: Span) -> object:
        """Make ``span`` the current span of this task (and of tasks it creates); returns
        the token :meth:`deactivate` takes (in the same task)."""

    def deactivate(self, token: object) -> None:
        """Undo :meth:`activate`."""

    def current(self) -> Span | None:
        """This task's current span (None when there is none)."""

    def fail(self, span: Span, message: str | None) -> None:
        """Mark ``span`` as failed (status Error, ``message`` as its description)."""

    def inject(self, span: Span, headers: dict[str, str] | object) -> None:
        """Add the W3C ``traceparent`` (and ``tracestate``) of ``span`` to ``headers``
        (any mutable mapping of header names to values)."""

    def trace_id(self, span: Span) -> str | None:
        """``span``'s trace id (32 hex digits) when it is sampled, else None."""


def describe_error(exc: BaseException) -> str:
    """A failed span's description: the exception's type and message."""
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def current_span(
    tracer: Tracer, span: Span, describe: Callable[[BaseException], str] = describe_error
) -> Iterator[Span]:
    """Run the block with ``span`` current (spans started in it, and in tasks it creates,
    are its children), mark it failed with ``describe(exc)`` when the block raises, and
    end it afterwards, however the block ended."""
    token = tracer.activate(span)
    try:
        yield span
    except BaseException as exc:
        tracer.fail(span, describe(exc))
        raise
    finally:
        tracer.deactivate(token)
        span.end()


TRACER: Tracer | None = None
"""The installed tracer; None (the default) means tracing is off."""


def install(tracer: Tracer) -> None:
    """Make ``tracer`` the process's tracer (one per process, like OpenTelemetry's own
    global provider; start-up calls this when the ``OTEL_*`` variables turn tracing on)."""
    global TRACER
    TRACER = tracer


def uninstall(tracer: Tracer) -> None:
    """Turn tracing off again, if ``tracer`` is the installed one (shutdown)."""
    global TRACER
    if TRACER is tracer:
        TRACER = None
