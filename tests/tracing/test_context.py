"""Trace context: a client's W3C ``traceparent`` becomes the parent of ``Intercept``; the
upstream gets a ``traceparent`` (of the gateway's Upstream or Passthrough span, with the
trace's ``tracestate``) only when the provider's ``propagate_trace_context`` is on, and
never the client's own; the access
line names the trace; record batches get their own spans."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aibridge.testing.otlp import OTLPReceiver, otlp_receiver, tree
from aibridge.testing.stack import TIMEOUT, Stack, stack

CHAT = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
CLIENT_HEADERS = {
    "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
    "tracestate": "vendor=client-secret-state",
}


@pytest.fixture
async def rx() -> AsyncIterator[OTLPReceiver]:
    async with otlp_receiver() as receiver:
        yield receiver


async def chat(s: Stack, provider: str, headers: dict[str, str] | None = None) -> None:
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.post(
            f"/{provider}/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {s.user_token}", **(headers or {})},
        )
        assert resp.status == 200, await resp.text()


async def test_client_traceparent_is_the_parent_and_propagation_follows_the_setting(
    db_url: str, tmp_path: Path, rx: OTLPReceiver
) -> None:
    async with stack(db_url, tmp_path, environ=rx.environ()) as s:
        await s.add_provider("plain", "openai")
        await s.add_provider("prop", "openai", settings={"propagate_trace_context": True})

        # Setting off: the client's trace continues in the gateway, but nothing of it
        # (nor of the gateway's) goes upstream.
        await chat(s, "plain", CLIENT_HEADERS)
        spans = await rx.trace(lambda sp: sp.name == "Intercept", 5)
        intercept = next(sp for sp in spans if sp.name == "Intercept")
        assert intercept.trace_id == CLIENT_TRACE
        assert intercept.parent_span_id == CLIENT_SPAN
        seen = s.fake.generation_requests()[-1]
        assert "traceparent" not in seen.headers and "tracestate" not in seen.headers
        rx.spans.clear()

        # Setting on: the upstream sees the gateway's Upstream span as its parent (the
        # bridge is cached now: no build span).
        await chat(s, "prop", CLIENT_HEADERS)
        spans = await rx.trace(lambda sp: sp.name == "Intercept", 4)
        upstream = next(sp for sp in spans if sp.name == "Intercept.ProcessRequest.Upstream")
        assert upstream.trace_id == CLIENT_TRACE
        seen = s.fake.generation_requests()[-1]
        assert seen.headers.getall("traceparent") == [f"00-{CLIENT_TRACE}-{upstream.span_id}-01"]
        # The trace's vendor state goes along with it, as W3C Trace Context asks.
        assert seen.headers.getall("tracestate") == [CLIENT_HEADERS["tracestate"]]
        rx.spans.clear()

        # Without a client traceparent: a new trace, still propagated with the setting on.
        await chat(s, "prop")
        spans = await rx.trace(lambda sp: sp.name == "Intercept", 4)
        intercept = next(sp for sp in spans if sp.name == "Intercept")
        upstream = next(sp for sp in spans if sp.name == "Intercept.ProcessRequest.Upstream")
        assert intercept.parent_span_id is None and intercept.trace_id != CLIENT_TRACE
        seen = s.fake.generation_requests()[-1]
        version, trace_id, parent_id, flags = seen.headers["traceparent"].split("-")
        assert (version, trace_id, parent_id) == ("00", intercept.trace_id, upstream.span_id)
        assert int(flags, 16) & 1  # sampled (bit 2: the SDK's random trace id)
        rx.spans.clear()

        # Passthrough: the Passthrough span's context, only with the setting on.
        for provider, propagated in (("plain", False), ("prop", True)):
            async with asyncio.timeout(TIMEOUT):
                resp = await s.client.get(
                    f"/{provider}/v1/models",
                    headers={"Authorization": f"Bearer {s.user_token}", **CLIENT_HEADERS},
                )
                assert resp.status == 200
            spans = await rx.trace(lambda sp: sp.name == "Passthrough", 2)
            passthrough = next(sp for sp in spans if sp.name == "Passthrough")
            assert passthrough.parent_span_id == CLIENT_SPAN
            seen = [r for r in s.fake.requests if r.path == "/v1/models"][-1]
            if propagated:
                assert seen.headers.getall("traceparent") == [
                    f"00-{CLIENT_TRACE}-{passthrough.span_id}-01"
                ]
                assert seen.headers.getall("tracestate") == [CLIENT_HEADERS["tracestate"]]
            else:
                assert "traceparent" not in seen.headers and "tracestate" not in seen.headers
            rx.spans.clear()


async def test_client_traceparent_is_stripped_with_tracing_off(db_url: str, tmp_path: Path) -> None:
    async with stack(db_url, tmp_path) as s:
        await s.add_provider("prop", "openai", settings={"propagate_trace_context": True})
        await chat(s, "prop", CLIENT_HEADERS)
        seen = s.fake.generation_requests()[-1]
        assert "traceparent" not in seen.headers and "tracestate" not in seen.headers


async def test_access_line_names_the_trace(
    db_url: str, tmp_path: Path, rx: OTLPReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    async with stack(db_url, tmp_path, environ=rx.environ()) as s:
        await s.add_provider("oa", "openai")
        with caplog.at_level(logging.INFO, logger="aibridge.access"):
            await chat(s, "oa", CLIENT_HEADERS)
            async with asyncio.timeout(TIMEOUT):
                resp = await s.client.get("/api/v1/users", headers=s.admin_headers())
                assert resp.status == 200
    lines = [r for r in caplog.records if r.name == "aibridge.access"]
    by_path = {getattr(r, "path", None): getattr(r, "trace_id", "missing") for r in lines}
    assert by_path["/oa/v1/chat/completions"] == CLIENT_TRACE
    # Not a data-plane request: no span, no trace id.
    assert by_path["/api/v1/users"] is None


async def test_unsampled_trace_has_no_trace_id_in_the_access_line(
    db_url: str, tmp_path: Path, rx: OTLPReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    environ = rx.environ(OTEL_TRACES_SAMPLER="always_off")
    async with stack(db_url, tmp_path, environ=environ) as s:
        await s.add_provider("oa", "openai")
        with caplog.at_level(logging.INFO, logger="aibridge.access"):
            await chat(s, "oa")
    lines = [r for r in caplog.records if getattr(r, "path", None) == "/oa/v1/chat/completions"]
    assert len(lines) == 1 and getattr(lines[0], "trace_id", "missing") is None
    # Nothing of a request was exported (the shutdown flushed what there was).
    assert [sp.name for sp in rx.spans if sp.name != "Intercept.RecordBatch"] == []


async def test_record_batches_have_spans_with_their_counts(
    db_url: str, tmp_path: Path, rx: OTLPReceiver
) -> None:
    async with stack(db_url, tmp_path, environ=rx.environ()) as s:
        await s.add_provider("oa", "openai")
        await chat(s, "oa")
        await s.flush_records()

        def written(spans: list[object]) -> int:
            return sum(
                int(sp.attributes.get("records.interception_end", 0))  # type: ignore[attr-defined]
                for sp in rx.spans
                if sp.name == "Intercept.RecordBatch"
            )

        await rx.wait_for(lambda spans: written(spans) >= 1)
    batches = [sp for sp in rx.spans if sp.name == "Intercept.RecordBatch"]
    for batch in batches:
        # Root spans: the writer serves many requests at once.
        assert batch.parent_span_id is None, tree(rx.spans)
        counts = sum(v for k, v in batch.attributes.items() if k.startswith("records."))
        assert counts == batch.attributes["record_count"] and batch.status == "UNSET"
        assert batch.attributes["replay"] is False
    assert sum(b.attributes.get("records.interception_start", 0) for b in batches) == 1
