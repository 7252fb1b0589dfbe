"""The MCP engine against a real MCP server (the SDK's Streamable-HTTP server)."""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest

from aibridge.mcp.proxy import MCPOptions, MCPServerUnavailable, ServerProxy
from aibridge.mcp.settings import MCPServerSettings
from aibridge.mcp.toolset import Toolset, build_toolset
from aibridge.testing.mcp_server import MCPTestServer, mcp_server

OPTIONS = MCPOptions(init_timeout=10, call_timeout=10, tools_ttl=300, close_timeout=5)


async def toolset(*servers: MCPServerSettings, options: MCPOptions = OPTIONS) -> Toolset | None:
    return await build_toolset(list(servers), uuid.uuid4(), user_tokens=None, options=options)


def settings(url: str, name: str = "test", **kw: object) -> MCPServerSettings:
    kw.setdefault("tool_allow", None)
    kw.setdefault("tool_deny", None)
    kw.setdefault("auth", "none")
    return MCPServerSettings(id=uuid.uuid4(), name=name, url=url, **kw)  # type: ignore[arg-type]


async def test_toolset_lists_namespaced_tools_and_calls_them(server: MCPTestServer) -> None:
    async with asyncio.timeout(60):
        ts = await build_toolset(
            [settings(server.url)], uuid.uuid4(), user_tokens=None, options=OPTIONS
        )
        assert ts is not None
        try:
            ids = [t.id for t in ts.tools]
            assert ids == sorted(ids)
            assert ids == [
                "bmcp_test_add",
                "bmcp_test_echo",
                "bmcp_test_fail",
                "bmcp_test_lookup",
                "bmcp_test_slow",
            ]
            add = ts.get("bmcp_test_add")
            assert add is not None and add.name == "add" and add.server_url == server.url
            assert add.input_schema["properties"]["a"]["type"] == "integer"
            result = await ts.call(add, {"a": 2, "b": 40})
            assert (result.text, result.is_error, result.error) == ("42", False, None)
            fail = ts.get("bmcp_test_fail")
            assert fail is not None
            failed = await ts.call(fail, {"message": "boom"})
            assert failed.is_error and "boom" in failed.text and failed.error is None
            assert [(c.name, c.arguments) for c in server.calls] == [
                ("add", {"a": 2, "b": 40}),
                ("fail", {"message": "boom"}),
            ]
        finally:
            await ts.close()
        assert all(p.closed for p in ts.proxies)


async def test_pagination_is_followed(server: MCPTestServer) -> None:
    server.set_page_size(2)
    async with asyncio.timeout(60):
        ts = await build_toolset(
            [settings(server.url)], uuid.uuid4(), user_tokens=None, options=OPTIONS
        )
        assert ts is not None
        try:
            assert len(ts.tools) == 5
            assert server.list_requests == 3
        finally:
            await ts.close()


async def test_allow_and_deny_filter_the_tools(server: MCPTestServer) -> None:
    s = settings(
        server.url, tool_allow=re.compile(r"^(add|echo|fail)$"), tool_deny=re.compile("fail")
    )
    async with asyncio.timeout(60):
        ts = await toolset(s)
        assert ts is not None
        try:
            assert [t.name for t in ts.tools] == ["add", "echo"]
        finally:
            await ts.close()


async def test_a_down_server_is_left_out_and_the_others_still_serve(server: MCPTestServer) -> None:
    async with mcp_server("gone") as gone:
        down_url = gone.url
    async with asyncio.timeout(60):
        ts = await build_toolset(
            [settings(down_url, name="down"), settings(server.url)],
            uuid.uuid4(),
            user_tokens=None,
            options=OPTIONS,
        )
        assert ts is not None
        try:
            assert {t.server_name for t in ts.tools} == {"test"}
        finally:
            await ts.close()
        only_down = await build_toolset(
            [settings(down_url, name="down")], uuid.uuid4(), user_tokens=None, options=OPTIONS
        )
        assert only_down is None


async def test_start_of_an_unreachable_server_raises_unavailable() -> None:
    async with mcp_server("gone") as gone:
        url = gone.url
    proxy = ServerProxy(settings(url), {}, OPTIONS)
    async with asyncio.timeout(60):
        with pytest.raises(MCPServerUnavailable, match="unavailable"):
            await proxy.start()
    assert proxy.closed


async def test_per_user_tokens_reach_the_server_and_users_without_one_get_no_tools(
    server: MCPTestServer,
) -> None:
    per_user = settings(server.url, name="personal", auth="per_user")
    alice, bob, carol = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    tokens = {alice: {per_user.id: "tok-alice"}, bob: {per_user.id: "tok-bob"}}

    async def user_tokens(user: uuid.UUID) -> dict[uuid.UUID, str]:
        return tokens.get(user, {})

    async with asyncio.timeout(60):
        for user, expected in ((alice, "Bearer tok-alice"), (bob, "Bearer tok-bob")):
            ts = await build_toolset([per_user], user, user_tokens=user_tokens, options=OPTIONS)
            assert ts is not None
            try:
                echo = ts.get("bmcp_personal_echo")
                assert echo is not None
                await ts.call(echo, {"text": "hi"})
            finally:
                await ts.close()
            assert server.calls[-1].authorization == expected
        assert (
            await build_toolset([per_user], carol, user_tokens=user_tokens, options=OPTIONS) is None
        )


async def test_static_header_is_sent(server: MCPTestServer) -> None:
    s = settings(server.url, auth="header", header_name="X-Api-Key", header_value="sekret")
    async with asyncio.timeout(60):
        ts = await toolset(s)
        assert ts is not None
        try:
            echo = ts.get("bmcp_test_echo")
            assert echo is not None
            await ts.call(echo, {"text": "x"})
        finally:
            await ts.close()
    assert server.calls[-1].headers["x-api-key"] == "sekret"


async def test_list_changed_refreshes_the_tools(server: MCPTestServer) -> None:
    async with asyncio.timeout(60):
        ts = await build_toolset(
            [settings(server.url)], uuid.uuid4(), user_tokens=None, options=OPTIONS
        )
        assert ts is not None
        try:
            version = ts.version
            changed = asyncio.Event()
            (proxy,) = ts.proxies
            rebuild = ts._rebuild

            def on_change() -> None:
                rebuild()
                changed.set()

            proxy.set_on_change(on_change)
            await server.add_tool("newtool", "fresh")
            await changed.wait()
            assert ts.version > version
            tool = ts.get("bmcp_test_newtool")
            assert tool is not None
            assert (await ts.call(tool, {})).text == "fresh"
        finally:
            await ts.close()


async def test_ttl_refreshes_the_tools(server: MCPTestServer) -> None:
    options = MCPOptions(init_timeout=10, call_timeout=10, tools_ttl=0.05, close_timeout=5)
    async with asyncio.timeout(60):
        ts = await build_toolset(
            [settings(server.url)], uuid.uuid4(), user_tokens=None, options=options
        )
        assert ts is not None
        try:
            listed = server.list_requests
            await server.wait_for_list_requests(listed + 2)
            assert ts.proxies[0].refreshes >= 2
        finally:
            await ts.close()


async def test_a_call_that_outlives_the_timeout_is_an_invocation_error(
    server: MCPTestServer,
) -> None:
    options = MCPOptions(init_timeout=10, call_timeout=0.2, tools_ttl=300, close_timeout=5)
    async with asyncio.timeout(60):
        ts = await build_toolset(
            [settings(server.url)], uuid.uuid4(), user_tokens=None, options=options
        )
        assert ts is not None
        try:
            slow = ts.get("bmcp_test_slow")
            assert slow is not None
            result = await ts.call(slow, {"seconds": 5})
            assert result.is_error and result.error is not None and "timed out" in result.error
        finally:
            await ts.close()
