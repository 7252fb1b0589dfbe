"""The exact span trees a collector receives (OTLP over HTTP/protobuf, decoded with
``opentelemetry-proto``): blocking, streaming, failed-upstream, broken-stream, passthrough
and injected-tool interceptions on Anthropic Messages, OpenAI Chat and OpenAI Responses,
with their attributes and statuses (reference §6.2)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aibridge.fakellm import Scenario, ToolCall
from aibridge.fakellm.tooluse import tool_caller
from aibridge.testing.mcp_server import (
    MCPTestServer,
    install_mcp_servers,
    mcp_server,
    server_settings,
)
from aibridge.testing.otlp import OTLPReceiver, ReceivedSpan, otlp_receiver, tree
from aibridge.testing.stack import TIMEOUT, Stack, stack

APIS = ["messages", "chat", "responses"]
PROVIDER_TYPE = {"messages": "anthropic", "chat": "openai", "responses": "openai"}
MODEL = {"messages": "claude-sonnet-4-5", "chat": "gpt-4.1", "responses": "gpt-4.1"}
PATH = {"messages": "/v1/messages", "chat": "/v1/chat/completions", "responses": "/v1/responses"}
MODELS_PATH = "/v1/models"


def body(api: str, stream: bool) -> dict[str, Any]:
    """A minimal request of ``api``."""
    if api == "messages":
        return {
            "model": MODEL[api],
            "max_tokens": 64,
            "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
        }
    if api == "chat":
        return {
            "model": MODEL[api],
            "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
        }
    return {"model": MODEL[api], "stream": stream, "input": "hi"}


def auth(s: Stack, api: str) -> dict[str, str]:
    if api == "messages":
        return {"x-api-key": s.user_token, "anthropic-version": "2023-06-01"}
    return {"Authorization": f"Bearer {s.user_token}"}


async def call(
    s: Stack, api: str, provider: str, stream: bool, headers: dict[str, str] | None = None
) -> int:
    """Send one request and read the whole answer; its status."""
    async with asyncio.timeout(TIMEOUT * 2):
        resp = await s.client.post(
            f"/{provider}{PATH[api]}",
            json=body(api, stream),
            headers={**auth(s, api), **(headers or {})},
        )
        await resp.read()
        return resp.status


def by_name(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name]


def one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = by_name(spans, name)
    assert len(found) == 1, (name, tree(spans))
    return found[0]


def root_for(path: str) -> Any:
    """Picks the data plane's root span of a request to ``path``."""
    return lambda s: s.parent_span_id is None and s.attributes.get("request_path") == path


def interception_attributes(span: ReceivedSpan) -> dict[str, Any]:
    keys = ("request_path", "provider", "model", "streaming", "api", "aws_bedrock", "user_id")
    return {k: span.attributes.get(k) for k in keys}


@pytest.fixture
async def rx() -> AsyncIterator[OTLPReceiver]:
    async with otlp_receiver() as receiver:
        yield receiver


def check_attributes(spans: list[ReceivedSpan], api: str, provider: str, stream: bool) -> None:
    """Every interception span carries the same interception attributes."""
    intercept = one(spans, "Intercept")
    want = {
        "request_path": f"/{provider}{PATH[api]}",
        "provider": provider,
        "model": MODEL[api],
        "streaming": stream,
        "api": api,
        "aws_bedrock": False if api == "messages" else None,
        "user_id": intercept.attributes["user_id"],
    }
    ids = set()
    for span in spans:
        if span.name.startswith("Intercept"):
            assert interception_attributes(span) == want, span
            ids.add(span.attributes["interception_id"])
    assert len(ids) == 1 and len(next(iter(ids))) == 36
    assert intercept.kind == 2  # SPAN_KIND_SERVER
    assert intercept.service_name == "aibridge-test"


@pytest.mark.parametrize("api", APIS)
async def test_span_trees_of_every_outcome(
    db_url: str, tmp_path: Path, rx: OTLPReceiver, api: str
) -> None:
    async with stack(db_url, tmp_path, environ=rx.environ()) as s:
        provider = f"p-{api}"
        await s.add_provider(provider, PROVIDER_TYPE[api])
        path = f"/{provider}{PATH[api]}"

        # Blocking (the first request builds the bridge).
        assert await call(s, api, provider, False) == 200
        spans = await rx.trace(root_for(path), 5)
        assert tree(spans) == [
            "Intercept [UNSET]",
            "  CachedBridgePool.Acquire [UNSET]",
            "    CachedBridgePool.Build [UNSET]",
            "  Intercept.ProcessRequest [UNSET]",
            "    Intercept.ProcessRequest.Upstream [UNSET]",
        ]
        check_attributes(spans, api, provider, False)
        acquire = one(spans, "CachedBridgePool.Acquire")
        assert acquire.attributes["cache_hit"] is False and acquire.events == ("cache_miss",)
        assert acquire.attributes["user_id"] == str(await s.member_id())
        assert (
            one(spans, "Intercept.ProcessRequest.Upstream").attributes["http.response.status_code"]
            == 200
        )
        # Each span lies within its parent.
        ids = {sp.span_id: sp for sp in spans}
        for sp in spans:
            if sp.parent_span_id in ids:
                parent = ids[sp.parent_span_id]
                assert parent.start_ns <= sp.start_ns <= sp.end_ns <= parent.end_ns, sp.name
        rx.spans.clear()

        # Streaming: a cached bridge; the Upstream span covers opening the stream.
        assert await call(s, api, provider, True) == 200
        spans = await rx.trace(root_for(path), 4)
        assert tree(spans) == [
            "Intercept [UNSET]",
            "  CachedBridgePool.Acquire [UNSET]",
            "  Intercept.ProcessRequest [UNSET]",
            "    Intercept.ProcessRequest.Upstream [UNSET]",
        ]
        check_attributes(spans, api, provider, True)
        acquire = one(spans, "CachedBridgePool.Acquire")
        assert acquire.attributes["cache_hit"] is True and acquire.events == ("cache_hit",)
        upstream = one(spans, "Intercept.ProcessRequest.Upstream")
        process = one(spans, "Intercept.ProcessRequest")
        # Opening the stream ended before the relay did.
        assert upstream.end_ns < process.end_ns
        rx.spans.clear()

        # The upstream fails (blocking and streaming): both answered HTTP 500.
        for stream in (False, True):
            s.fake.enqueue(Scenario.http_error(500, message="boom"))
            assert await call(s, api, provider, stream) == 500
            spans = await rx.trace(root_for(path), 4)
            assert tree(spans) == [
                "Intercept [ERROR]",
                "  CachedBridgePool.Acquire [UNSET]",
                "  Intercept.ProcessRequest [ERROR]",
                "    Intercept.ProcessRequest.Upstream [ERROR]",
            ], stream
            check_attributes(spans, api, provider, stream)
            upstream = one(spans, "Intercept.ProcessRequest.Upstream")
            assert upstream.status_message == "upstream answered HTTP 500"
            assert upstream.attributes["http.response.status_code"] == 500
            rx.spans.clear()

        # A stream that opened and then broke: the Upstream span (opening) stays Unset.
        s.fake.enqueue(Scenario.drop())
        assert await call(s, api, provider, True) == 200
        spans = await rx.trace(root_for(path), 4)
        assert tree(spans) == [
            "Intercept [ERROR]",
            "  CachedBridgePool.Acquire [UNSET]",
            "  Intercept.ProcessRequest [ERROR]",
            "    Intercept.ProcessRequest.Upstream [UNSET]",
        ]
        assert "upstream stream broke" in one(spans, "Intercept.ProcessRequest").status_message
        rx.spans.clear()

        # Passthrough: the root span is Passthrough, with the URLs and the method.
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.get(f"/{provider}{MODELS_PATH}", headers=auth(s, api))
            assert resp.status == 200, await resp.text()
        spans = await rx.trace(root_for(f"/{provider}{MODELS_PATH}"), 2)
        assert tree(spans) == ["Passthrough [UNSET]", "  CachedBridgePool.Acquire [UNSET]"]
        passthrough = one(spans, "Passthrough")
        assert passthrough.attributes["passthrough_url"] == f"/{provider}{MODELS_PATH}"
        assert passthrough.attributes["passthrough_method"] == "GET"
        assert passthrough.attributes["passthrough_upstream_url"] == s.fake.url + MODELS_PATH
        assert passthrough.attributes["provider"] == provider
        assert passthrough.attributes["http.response.status_code"] == 200
        assert passthrough.kind == 2


@pytest.fixture
async def mcp() -> AsyncIterator[MCPTestServer]:
    async with mcp_server("test") as srv:
        yield srv


ADD = ToolCall("bmcp_test_add", {"a": 2, "b": 40})
LOOKUP = ToolCall("bmcp_test_lookup", {"key": "color"})


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "stream"])
@pytest.mark.parametrize("api", APIS)
async def test_injected_tools_span_tree(
    db_url: str, tmp_path: Path, rx: OTLPReceiver, mcp: MCPTestServer, api: str, stream: bool
) -> None:
    async with stack(db_url, tmp_path, environ=rx.environ()) as s:
        provider = f"mcp-{api}"
        await s.add_provider(provider, PROVIDER_TYPE[api])
        install_mcp_servers(s.services, server_settings(mcp.url))
        s.fake.responder = tool_caller([ADD, LOOKUP], answer="Final: {results}")
        assert await call(s, api, provider, stream) == 200
        spans = await rx.trace(root_for(f"/{provider}{PATH[api]}"), 12)
        assert tree(spans) == [
            "Intercept [UNSET]",
            "  CachedBridgePool.Acquire [UNSET]",
            "    CachedBridgePool.Build [UNSET]",
            "      ServerProxyManager.Init [UNSET]",
            "        StreamableHTTPServerProxy.Init [UNSET]",
            "          StreamableHTTPServerProxy.Init.fetchTools [UNSET]",
            "  Intercept.ProcessRequest [UNSET]",
            "    Intercept.ProcessRequest.ToolCall [UNSET]",
            "    Intercept.ProcessRequest.ToolCall [UNSET]",
            "    Intercept.ProcessRequest.Upstream [UNSET]",
            "    Intercept.ProcessRequest.Upstream [UNSET]",
            "    Intercept.ProcessRequest.Upstream [UNSET]",
        ]
        check_attributes(spans, api, provider, stream)
        calls = sorted(
            by_name(spans, "Intercept.ProcessRequest.ToolCall"), key=lambda x: x.start_ns
        )
        assert [
            (c.attributes["mcp_server_name"], c.attributes["mcp_tool_name"]) for c in calls
        ] == [("test", "add"), ("test", "lookup")]
        assert [c.attributes["mcp_server_url"] for c in calls] == [mcp.url, mcp.url]
        assert '"a"' in calls[0].attributes["mcp_input"]
        upstreams = sorted(
            by_name(spans, "Intercept.ProcessRequest.Upstream"), key=lambda x: x.start_ns
        )
        # The loop: upstream, tool calls, upstream, …: each tool call after its turn.
        assert upstreams[0].end_ns <= calls[0].start_ns
        assert calls[1].end_ns <= upstreams[2].start_ns
        proxy_init = one(spans, "StreamableHTTPServerProxy.Init")
        assert proxy_init.attributes == {
            "mcp_proxy_name": "StreamableHTTPServerProxy",
            "mcp_server_name": "test",
            "mcp_server_url": mcp.url,
        }
        fetch = one(spans, "StreamableHTTPServerProxy.Init.fetchTools")
        assert fetch.attributes["mcp_tool_count"] == len(await mcp.mcp.list_tools())
        assert one(spans, "ServerProxyManager.Init").attributes == {"mcp_server_count": 1}


async def test_bedrock_spans_say_so(sqlite_url: str, tmp_path: Path, rx: OTLPReceiver) -> None:
    from aibridge.testing.fake_bedrock import ACCESS_KEY, SECRET_KEY, FakeBedrock

    fake = FakeBedrock()
    settings = {
        "bedrock": {
            "region": "us-east-1",
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "model": "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        }
    }
    async with fake.serve(), stack(sqlite_url, tmp_path, environ=rx.environ()) as s:
        await s.add_provider("bedrock", "bedrock", keys=(), base_url=fake.url, settings=settings)
        for stream in (False, True):
            async with asyncio.timeout(TIMEOUT):
                resp = await s.client.post(
                    "/bedrock/v1/messages",
                    json={**body("messages", stream), "model": "claude-sonnet-4-5"},
                    headers={"Authorization": f"Bearer {s.user_token}"},
                )
                assert resp.status == 200, await resp.text()
                await resp.read()
            spans = await rx.trace(root_for("/bedrock/v1/messages"), 5 if not stream else 4)
            assert [sp.name for sp in spans if sp.name.startswith("Intercept")].count(
                "Intercept.ProcessRequest.Upstream"
            ) == 1
            for sp in spans:
                if sp.name.startswith("Intercept"):
                    assert sp.attributes["aws_bedrock"] is True, sp
                    assert sp.attributes["bedrock_protocol"] == "invoke", sp
                    assert sp.attributes["streaming"] is stream
                    assert sp.status == "UNSET", sp
            rx.spans.clear()
