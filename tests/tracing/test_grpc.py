"""``OTEL_EXPORTER_OTLP_PROTOCOL=grpc``: the same spans reach a real gRPC OTLP receiver
(grpcio's asyncio server with the ``opentelemetry-proto`` service)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from aibridge.testing.otlp import ReceivedSpan, decode_request, tree
from aibridge.testing.stack import TIMEOUT, stack


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps what it receives; wakes the test on every export."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.changed = asyncio.Event()

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.spans.extend(decode_request(request))
        self.changed.set()
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    server = grpc.aio.server()
    servicer = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, port
    finally:
        await server.stop(None)


async def test_spans_reach_a_grpc_collector(
    db_url: str, tmp_path: Path, receiver: tuple[Receiver, int]
) -> None:
    rx, port = receiver
    environ = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_BSP_SCHEDULE_DELAY": "20",
    }
    async with stack(db_url, tmp_path, environ=environ) as s:
        await s.add_provider("oa", "openai")
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.post(
                "/oa/v1/chat/completions",
                json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {s.user_token}"},
            )
            assert resp.status == 200
            while len([sp for sp in rx.spans if sp.name != "Intercept.RecordBatch"]) < 5:
                rx.changed.clear()
                await rx.changed.wait()
    spans = [sp for sp in rx.spans if sp.name != "Intercept.RecordBatch"]
    assert tree(spans) == [
        "Intercept [UNSET]",
        "  CachedBridgePool.Acquire [UNSET]",
        "    CachedBridgePool.Build [UNSET]",
        "  Intercept.ProcessRequest [UNSET]",
        "    Intercept.ProcessRequest.Upstream [UNSET]",
    ]
    assert {sp.service_name for sp in spans} == {"aibridge"}
