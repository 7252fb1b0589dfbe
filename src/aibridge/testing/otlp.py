"""An OTLP trace receiver for tests: a real HTTP/protobuf collector on loopback
(``POST /v1/traces``), decoding with ``opentelemetry-proto``, and the span trees it got.

Start it with ``async with otlp_receiver() as rx``; point a gateway at it with
:meth:`OTLPReceiver.environ`; wait for spans with :meth:`OTLPReceiver.wait_for` (an event
set on every export, no sleeps). ``status`` makes it refuse exports (a collector that
fails); ``hang`` makes it never answer (a collector that hangs).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from aibridge.testing.loopback import serve_on_loopback

STATUS_NAMES = {0: "UNSET", 1: "OK", 2: "ERROR"}


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, decoded."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    attributes: dict[str, Any]
    status: str
    status_message: str
    kind: int
    events: tuple[str, ...]
    service_name: str | None
    start_ns: int
    end_ns: int


def _value(v: common_pb2.AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, which) if which else None


def decode(body: bytes) -> list[ReceivedSpan]:
    """The spans of one ``ExportTraceServiceRequest``."""
    req = trace_service_pb2.ExportTraceServiceRequest()
    req.ParseFromString(body)
    return decode_request(req)


def decode_request(req: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    """The spans of a decoded export request."""
    out: list[ReceivedSpan] = []
    for rs in req.resource_spans:
        resource = {a.key: _value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for sp in ss.spans:
                out.append(_span(sp, resource.get("service.name")))
    return out


def _span(sp: trace_pb2.Span, service: Any) -> ReceivedSpan:
    return ReceivedSpan(
        name=sp.name,
        trace_id=sp.trace_id.hex(),
        span_id=sp.span_id.hex(),
        parent_span_id=sp.parent_span_id.hex() or None,
        attributes={a.key: _value(a.value) for a in sp.attributes},
        status=STATUS_NAMES[sp.status.code],
        status_message=sp.status.message,
        kind=sp.kind,
        events=tuple(e.name for e in sp.events),
        service_name=service,
        start_ns=sp.start_time_unix_nano,
        end_ns=sp.end_time_unix_nano,
    )


@dataclass
class OTLPReceiver:
    """What the receiver got; see the module docstring."""

    url: str = ""
    spans: list[ReceivedSpan] = field(default_factory=list)
    exports: int = 0
    status: int = 200
    """The HTTP status each export is answered with (e.g. 503: the collector fails)."""
    hang: bool = False
    """Never answer (the collector hangs)."""
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    def environ(self, **extra: str) -> dict[str, str]:
        """``OTEL_*`` variables that send a gateway's traces here, exported every 20 ms."""
        return {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": "aibridge-test",
            "OTEL_BSP_SCHEDULE_DELAY": "20",
            **extra,
        }

    def notify(self) -> None:
        """Wake the waiters (after spans arrived)."""
        self._changed.set()

    async def wait_for(
        self,
        check: Callable[[list[ReceivedSpan]], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - bounds the wait, with a readable error
    ) -> list[ReceivedSpan]:
        """Wait until ``check(spans)`` holds; AssertionError with what arrived otherwise."""
        try:
            async with asyncio.timeout(timeout):
                while not check(self.spans):
                    self._changed.clear()
                    if check(self.spans):
                        break
                    await self._changed.wait()
        except TimeoutError:
            names = sorted((s.name, s.trace_id[:8]) for s in self.spans)
            raise AssertionError(f"spans not as expected after {timeout}s: {names}") from None
        return self.spans

    async def trace(
        self,
        root: Callable[[ReceivedSpan], bool],
        count: int,
        timeout: float = 10.0,  # noqa: ASYNC109 - passed to wait_for
    ) -> list[ReceivedSpan]:
        """The ``count`` spans of the trace whose root span ``root`` picks (waits for them;
        AssertionError when more arrive)."""
        found: list[ReceivedSpan] = []

        def check(spans: list[ReceivedSpan]) -> bool:
            roots = [s for s in spans if root(s)]
            if not roots:
                return False
            tid = roots[-1].trace_id
            found[:] = [s for s in spans if s.trace_id == tid]
            return len(found) >= count

        await self.wait_for(check, timeout)
        assert len(found) == count, tree(found)
        return list(found)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.exports += 1
        if self.hang:
            await self._release.wait()
        if self.status != 200:
            return web.Response(status=self.status)
        self.spans.extend(decode(body))
        self.notify()
        return web.Response(
            body=trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )


def tree(spans: Sequence[ReceivedSpan]) -> list[str]:
    """The spans as indented ``name [status]`` lines, children under their parent in
    name order (for readable assertions)."""
    by_parent: dict[str | None, list[ReceivedSpan]] = {}
    ids = {s.span_id for s in spans}
    for s in spans:
        parent = s.parent_span_id if s.parent_span_id in ids else None
        by_parent.setdefault(parent, []).append(s)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for s in sorted(by_parent.get(parent, []), key=lambda x: (x.name, x.start_ns)):
            lines.append(f"{'  ' * depth}{s.name} [{s.status}]")
            walk(s.span_id, depth + 1)

    walk(None, 0)
    return lines


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[OTLPReceiver]:
    """A receiver on an ephemeral loopback port."""
    rx = OTLPReceiver()
    app = web.Application()
    app.router.add_post("/v1/traces", rx._handle)
    async with serve_on_loopback(app, handler_cancellation=True) as url:
        rx.url = url
        try:
            yield rx
        finally:
            rx._release.set()
