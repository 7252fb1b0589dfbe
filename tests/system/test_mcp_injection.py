"""Injected MCP tools end to end: the gateway, a real MCP server (the SDK's Streamable-HTTP
server) and the fake upstream scripted to call its tools, for each API, streaming and
blocking: the client sees only the answer (live), the MCP server saw exactly the calls,
the records show them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from aibridge.fakellm import Scenario, ToolCall, Usage
from aibridge.fakellm.tooluse import tool_caller
from aibridge.intercept.sse import SSEParser
from aibridge.testing.mcp_server import (
    MCPTestServer,
    install_mcp_servers,
    mcp_server,
    server_settings,
)
from aibridge.testing.stack import TIMEOUT, Stack, stack

MODEL = {"messages": "claude-sonnet-4-5", "chat": "gpt-4.1", "responses": "gpt-4.1"}
PROVIDER = {"messages": "anthropic", "chat": "openai", "responses": "openai"}
PATH = {"messages": "v1/messages", "chat": "v1/chat/completions", "responses": "v1/responses"}
APIS = ["messages", "chat", "responses"]
ADD = ToolCall("bmcp_test_add", {"a": 2, "b": 40})
LOOKUP = ToolCall("bmcp_test_lookup", {"key": "color"})


@dataclass
class Seen:
    """What the client got."""

    status: int
    text: str
    body: bytes
    events: list[tuple[str | None, dict[str, Any] | str]]
    chunks: int


def request_body(api: str, stream: bool, prompt: str = "What is 2+40?") -> dict[str, Any]:
    if api == "messages":
        return {
            "model": MODEL[api],
            "max_tokens": 256,
            "stream": stream,
            "messages": [{"role": "user", "content": prompt}],
        }
    if api == "chat":
        body: dict[str, Any] = {
            "model": MODEL[api],
            "stream": stream,
            "messages": [{"role": "user", "content": prompt}],
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body
    return {"model": MODEL[api], "stream": stream, "input": prompt}


def visible_text(api: str, seen: Seen) -> str:
    """The assistant text the client was shown."""
    if not seen.events:
        body = orjson.loads(seen.body)
        if api == "messages":
            return "".join(b.get("text", "") for b in body["content"] if b["type"] == "text")
        if api == "chat":
            return str(body["choices"][0]["message"].get("content") or "")
        return "".join(
            p.get("text", "")
            for item in body["output"]
            if item["type"] == "message"
            for p in item["content"]
        )
    parts: list[str] = []
    for _name, data in seen.events:
        if not isinstance(data, dict):
            continue
        if api == "messages" and data.get("type") == "content_block_delta":
            parts.append(data["delta"].get("text", ""))
        elif api == "chat" and data.get("choices"):
            parts.append(data["choices"][0].get("delta", {}).get("content") or "")
        elif api == "responses" and data.get("type") == "response.output_text.delta":
            parts.append(data["delta"])
    return "".join(parts)


async def send(s: Stack, api: str, body: dict[str, Any], token: str | None = None) -> Seen:
    headers = {"Authorization": f"Bearer {token or s.user_token}"}
    if api == "messages":
        headers = {"x-api-key": token or s.user_token, "anthropic-version": "2023-06-01"}
    async with asyncio.timeout(TIMEOUT * 2):
        resp = await s.client.post(f"/mcp-{api}/{PATH[api]}", json=body, headers=headers)
        if not body.get("stream") or resp.status != 200:
            data = await resp.read()
            return Seen(resp.status, "", data, [], 1)
        parser = SSEParser()
        events: list[tuple[str | None, dict[str, Any] | str]] = []
        raw = b""
        chunks = 0
        async for chunk in resp.content.iter_any():
            chunks += 1
            raw += chunk
            for ev in parser.feed(chunk):
                if not ev.has_data:
                    continue
                text = ev.data.decode()
                events.append((ev.event, text if text == "[DONE]" else orjson.loads(ev.data)))
        return Seen(resp.status, "", raw, events, chunks)


@pytest.fixture
async def mcp() -> AsyncIterator[MCPTestServer]:
    async with mcp_server("test") as srv:
        yield srv


async def setup(s: Stack, api: str, *servers: Any) -> None:
    await s.add_provider(f"mcp-{api}", PROVIDER[api])
    install_mcp_servers(s.services, *servers)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "blocking"])
@pytest.mark.parametrize("api", APIS)
async def test_injected_tools_run_in_the_gateway_and_the_client_sees_only_the_answer(
    db_url: str, tmp_path: Path, mcp: MCPTestServer, api: str, stream: bool
) -> None:
    async with stack(db_url, tmp_path) as s:
        await setup(s, api, server_settings(mcp.url))
        s.fake.responder = tool_caller([ADD, LOOKUP], answer="Final: {results}")
        seen = await send(s, api, request_body(api, stream))
        assert seen.status == 200, seen.body
        # The MCP server saw exactly the model's calls, with the model's arguments.
        assert [(c.name, c.arguments) for c in mcp.calls] == [
            ("add", {"a": 2, "b": 40}),
            ("lookup", {"key": "color"}),
        ]
        # Three upstream turns; the last saw both results.
        requests = s.fake.generation_requests()
        assert len(requests) == 3
        last = requests[-1].json
        assert last is not None
        # The client never sees an injected call or its result.
        assert b"bmcp_" not in seen.body
        text = visible_text(api, seen)
        assert text.endswith("Final: 42 | teal")
        if stream and api != "responses":
            # Live relay: several writes, and the text from before the tool calls too
            # (a Responses stream that had tools injected is sent whole at its end).
            assert seen.chunks > 1
            assert text.startswith("Let me check with the tool.")
            if api == "messages":
                starts = [
                    d["index"]
                    for _, d in seen.events
                    if isinstance(d, dict) and d.get("type") == "content_block_start"
                ]
                assert starts == list(range(len(starts))) and len(starts) == 3
                assert [d.get("type") for _, d in seen.events if isinstance(d, dict)].count(
                    "message_start"
                ) == 1
        rec = await s.only_recording()
        injected = [t for t in rec.tool_usages if t.injected]
        assert [
            (t.tool, orjson.loads(t.input), t.server_url, t.invocation_error) for t in injected
        ] == [
            ("add", {"a": 2, "b": 40}, mcp.url, None),
            ("lookup", {"key": "color"}, mcp.url, None),
        ]
        assert [t for t in rec.tool_usages if not t.injected] == []
        assert rec.interception.error_type is None
        assert [p.prompt for p in rec.prompts] == ["What is 2+40?"]
        # Every upstream turn's usage is recorded, and the client sees the sum.
        outputs = 2 * Scenario.tool_call().usage.output_tokens + Usage().output_tokens
        assert sum(u.output_tokens for u in rec.token_usages) == outputs
        assert client_output_tokens(api, seen) == outputs


def client_output_tokens(api: str, seen: Seen) -> int | None:
    """The output tokens the client was told about (None: not shown)."""
    if not seen.events:
        usage = orjson.loads(seen.body)["usage"]
        return int(usage["completion_tokens"] if api == "chat" else usage["output_tokens"])
    for _name, data in reversed(seen.events):
        if (
            isinstance(data, dict)
            and api == "responses"
            and data.get("type")
            in (
                "response.completed",
                "response.incomplete",
            )
        ):
            return int(data["response"]["usage"]["output_tokens"])
        if isinstance(data, dict) and api == "messages" and data.get("type") == "message_delta":
            return int(data["usage"]["output_tokens"])
        if isinstance(data, dict) and api == "chat" and data.get("usage"):
            return int(data["usage"]["completion_tokens"])
    return None


async def test_denied_tools_are_not_offered_and_allowed_ones_are(
    db_url: str, tmp_path: Path, mcp: MCPTestServer
) -> None:
    async with stack(db_url, tmp_path) as s:
        await setup(
            s,
            "chat",
            server_settings(mcp.url, tool_allow="^(add|lookup|fail)$", tool_deny="^fail$"),
        )
        s.fake.enqueue(Scenario.text_reply("hi"))
        seen = await send(s, "chat", request_body("chat", False))
        assert seen.status == 200
        (req,) = s.fake.generation_requests()
        assert req.json is not None
        names = [t["function"]["name"] for t in req.json["tools"]]
        assert names == ["bmcp_test_add", "bmcp_test_lookup"]
        assert req.json["parallel_tool_calls"] is False


async def test_a_server_down_at_bridge_build_leaves_the_bridge_serving_without_its_tools(
    db_url: str, tmp_path: Path, mcp: MCPTestServer
) -> None:
    async with mcp_server("down") as gone:
        down = server_settings(gone.url, name="down")
    async with stack(db_url, tmp_path) as s:
        await setup(s, "messages", down, server_settings(mcp.url))
        s.fake.enqueue(Scenario.text_reply("still here"))
        seen = await send(s, "messages", request_body("messages", False))
        assert seen.status == 200 and visible_text("messages", seen) == "still here"
        (req,) = s.fake.generation_requests()
        assert req.json is not None
        names = {t["name"] for t in req.json["tools"]}
        assert "bmcp_test_add" in names and not any(n.startswith("bmcp_down_") for n in names)


async def test_only_down_servers_leave_the_request_untouched(db_url: str, tmp_path: Path) -> None:
    async with mcp_server("down") as gone:
        down = server_settings(gone.url, name="down")
    async with stack(db_url, tmp_path) as s:
        await setup(s, "chat", down)
        s.fake.enqueue(Scenario.text_reply("plain"))
        body = request_body("chat", False)
        seen = await send(s, "chat", body)
        assert seen.status == 200
        (req,) = s.fake.generation_requests()
        assert req.json == body


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "blocking"])
async def test_a_failing_tool_is_an_error_result_the_model_sees_and_is_recorded(
    db_url: str, tmp_path: Path, mcp: MCPTestServer, stream: bool
) -> None:
    async with stack(db_url, tmp_path) as s:
        await setup(s, "messages", server_settings(mcp.url))
        s.fake.responder = tool_caller(
            [ToolCall("bmcp_test_fail", {"message": "disk on fire"})], answer="Saw: {results}"
        )
        seen = await send(s, "messages", request_body("messages", stream))
        assert seen.status == 200
        answer = visible_text("messages", seen)
        assert "Saw: " in answer and answer.endswith("disk on fire")
        second = s.fake.generation_requests()[1].json
        assert second is not None
        result = second["messages"][-1]["content"][0]
        assert result["type"] == "tool_result" and result["is_error"] is True
        assert [c.name for c in mcp.calls] == ["fail"]
        rec = await s.only_recording()
        (usage,) = [t for t in rec.tool_usages if t.injected]
        # The server answered (with isError): no invocation error, the model saw the error.
        assert (usage.tool, usage.invocation_error) == ("fail", None)


@pytest.mark.parametrize("api", APIS)
async def test_the_iteration_cap_returns_the_last_response_and_records_the_uninvoked_call(
    db_url: str, tmp_path: Path, mcp: MCPTestServer, api: str
) -> None:
    async with stack(db_url, tmp_path, settings_overrides={"mcp_max_iterations": 2}) as s:
        await setup(s, api, server_settings(mcp.url))
        # The model calls the tool forever.
        s.fake.responder = tool_caller([ADD] * 10)
        seen = await send(s, api, request_body(api, True))
        assert seen.status == 200
        assert len(s.fake.generation_requests()) == 2
        assert len(mcp.calls) == 1
        assert b"bmcp_" not in seen.body
        rec = await s.only_recording()
        injected = [t for t in rec.tool_usages if t.injected]
        assert len(injected) == 2
        assert injected[0].invocation_error is None
        assert "cap of 2" in (injected[1].invocation_error or "")
        assert rec.interception.error_type is None
        # Only the call that was made is counted.
        assert ',server="test"} 1.0' in s.services.metrics.render().decode()


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "blocking"])
async def test_a_turn_with_a_client_tool_goes_to_the_client_without_the_injected_call(
    db_url: str, tmp_path: Path, mcp: MCPTestServer, stream: bool
) -> None:
    async with stack(db_url, tmp_path) as s:
        await setup(s, "chat", server_settings(mcp.url))
        s.fake.enqueue(Scenario.parallel_tools([ADD, ToolCall("get_weather", {"city": "Paris"})]))
        body = request_body("chat", stream)
        body["tools"] = [
            {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
        ]
        seen = await send(s, "chat", body)
        assert seen.status == 200
        assert len(s.fake.generation_requests()) == 1
        assert mcp.calls == []
        assert b"bmcp_" not in seen.body and b"get_weather" in seen.body
        rec = await s.only_recording()
        assert [t.tool for t in rec.tool_usages if not t.injected] == ["get_weather"]
        (skipped,) = [t for t in rec.tool_usages if t.injected]
        assert "client tool" in (skipped.invocation_error or "")


async def test_bridge_sessions_close_after_eviction_and_after_a_provider_reload(
    db_url: str, tmp_path: Path, mcp: MCPTestServer
) -> None:
    async with stack(db_url, tmp_path, settings_overrides={"pool_max_items": 1}) as s:
        await setup(s, "chat", server_settings(mcp.url))
        s.fake.default = Scenario.text_reply("ok")
        pool = s.services.pool
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.post(
                "/api/v1/users/dev/keys", json={"name": "second"}, headers=s.admin_headers()
            )
            assert resp.status == 201
            second_key = (await resp.json())["token"]

        async def bridge_toolset(token: str) -> Any:
            assert (await send(s, "chat", request_body("chat", False), token)).status == 200
            (entry,) = list(pool._cache._items.values())  # the one cached bridge
            toolset = entry.bridge.toolset
            assert toolset is not None and not any(p.closed for p in toolset.proxies)
            return toolset

        first = await bridge_toolset(s.user_token)
        # The second key's bridge evicts the first (max one cached): its sessions close.
        second = await bridge_toolset(second_key)
        async with asyncio.timeout(TIMEOUT):
            await pool.settle()
        assert all(p.closed for p in first.proxies)
        assert not any(p.closed for p in second.proxies)
        # A provider reload (a new generation) retires the second one too.
        await s.add_provider("another", "openai")
        async with asyncio.timeout(TIMEOUT):
            await pool.settle()
        assert all(p.closed for p in second.proxies)


async def test_injected_calls_are_counted_by_provider_model_server_and_tool(
    db_url: str, tmp_path: Path, mcp: MCPTestServer
) -> None:
    async with stack(db_url, tmp_path) as s:
        await setup(s, "chat", server_settings(mcp.url))
        s.fake.responder = tool_caller([ADD, ADD])
        assert (await send(s, "chat", request_body("chat", False))).status == 200
        metrics = s.services.metrics.render().decode()
        line = (
            'aibridge_injected_tool_invocations_total{model="gpt-4.1",name="add",'
            'provider="mcp-chat",server="test"} 2.0'
        )
        assert line in metrics


# Hand-written: key order, an unknown member and the bytes of every member's value (odd
# spacing inside) must reach the upstream as sent; only the tool members change.
RAW_BODIES = {
    "messages": b'{"zz_custom" : {"b":1, "a" :2},"model":"claude-sonnet-4-5","max_tokens":256,'
    b'"messages":[{"role":"user","content":"What is 2+40?"}],"metadata" : {"user_id":"u1"}}',
    "chat": b'{"zz_custom" : {"b":1, "a" :2},"model":"gpt-4.1","messages":'
    b'[{"role":"user","content":"What is 2+40?"}],"user" : "u1"}',
    "responses": b'{"zz_custom" : {"b":1, "a" :2},"model":"gpt-4.1","input":"What is 2+40?",'
    b'"store" : false}',
}


@pytest.mark.parametrize("api", APIS)
async def test_injection_edits_only_the_tool_members_and_disables_parallel_calls(
    sqlite_url: str, tmp_path: Path, mcp: MCPTestServer, api: str
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        await setup(s, api, server_settings(mcp.url))
        s.fake.responder = tool_caller([ADD], answer="Final: {results}")
        headers = {"Authorization": f"Bearer {s.user_token}", "Content-Type": "application/json"}
        if api == "messages":
            headers = {
                "x-api-key": s.user_token,
                "anthropic-version": "2023-06-01",
                "Content-Type": "application/json",
            }
        async with asyncio.timeout(TIMEOUT * 2):
            resp = await s.client.post(
                f"/mcp-{api}/{PATH[api]}", data=RAW_BODIES[api], headers=headers
            )
            assert resp.status == 200, await resp.text()
        first = s.fake.generation_requests()[0]
        sent = orjson.loads(RAW_BODIES[api])
        upstream = orjson.loads(first.body)
        # Every member the client sent keeps its place (the new ones come after), and the
        # unknown one its value's bytes.
        assert list(upstream)[: len(sent)] == list(sent)
        assert b'"zz_custom":{"b":1, "a" :2}' in first.body
        names = [t.get("name") or t["function"]["name"] for t in upstream["tools"]]
        assert "bmcp_test_add" in names and names == sorted(names)
        assert all(n.startswith("bmcp_test_") for n in names)
        if api == "messages":
            assert upstream["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
            assert b'"metadata":{"user_id":"u1"}' in first.body
        else:
            assert upstream["parallel_tool_calls"] is False
        if api == "responses":
            # A string input becomes one user message once turns are appended to it.
            last = orjson.loads(s.fake.generation_requests()[-1].body)
            assert last["input"][0] == {"role": "user", "content": "What is 2+40?"}
            assert [i.get("type") for i in last["input"][1:]][-1] == "function_call_output"


@pytest.mark.parametrize("api", APIS)
async def test_without_mcp_servers_the_body_reaches_the_upstream_byte_for_byte(
    sqlite_url: str, tmp_path: Path, api: str
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider(f"mcp-{api}", PROVIDER[api])
        headers = {"Authorization": f"Bearer {s.user_token}", "Content-Type": "application/json"}
        if api == "messages":
            headers = {
                "x-api-key": s.user_token,
                "anthropic-version": "2023-06-01",
                "Content-Type": "application/json",
            }
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.post(
                f"/mcp-{api}/{PATH[api]}", data=RAW_BODIES[api], headers=headers
            )
            assert resp.status == 200, await resp.text()
        [first] = s.fake.generation_requests()
        assert first.body == RAW_BODIES[api]
