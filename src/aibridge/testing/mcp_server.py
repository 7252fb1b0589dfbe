"""A real MCP server for tests: the official SDK's server over Streamable HTTP (uvicorn on
a loopback port), with a few tools, a log of every tool call with the ``Authorization``
header it came with, pagination of its tool list, and list changes announced to clients.

Tools: ``add(a, b)`` (the sum as text), ``echo(text)``, ``lookup(key)`` (a value from
:attr:`MCPTestServer.data`), ``fail(message)`` (an error result, MCP ``isError``), and
``slow(seconds)`` (answers after a delay, for timeouts)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.subscriptions import ToolsListChanged
from mcp.types import ListToolsResult

from aibridge.mcp.settings import MCPServerSettings
from aibridge.server import Services

__all__ = ["MCPCall", "MCPTestServer", "install_mcp_servers", "mcp_server", "server_settings"]


@dataclass(frozen=True, slots=True)
class MCPCall:
    """One ``tools/call`` the server received."""

    name: str
    arguments: dict[str, Any]
    authorization: str | None
    headers: dict[str, str] = field(repr=False)


class _Server(MCPServer[Any]):
    """MCPServer whose tool list comes in pages of ``page_size`` (0: one page)."""

    page_size = 0

    async def _handle_list_tools(self, ctx: Any, params: Any) -> ListToolsResult:
        tools = await self.list_tools()
        if not self.page_size:
            return ListToolsResult(tools=tools)
        start = int(params.cursor) if params is not None and params.cursor else 0
        end = start + self.page_size
        return ListToolsResult(
            tools=tools[start:end], next_cursor=str(end) if end < len(tools) else None
        )


class MCPTestServer:
    """The server and what it saw; see :func:`mcp_server`."""

    def __init__(self, name: str = "test") -> None:
        self.bus = InMemorySubscriptionBus()
        self.mcp = _Server(name, subscriptions=self.bus, log_level="WARNING")
        self.calls: list[MCPCall] = []
        """Every tools/call, in arrival order."""
        self.list_requests = 0
        """How many tools/list requests arrived."""
        self.data: dict[str, str] = {"answer": "42", "color": "teal"}
        self.url = ""
        self._changed = asyncio.Event()
        self._install_tools()

    def _install_tools(self) -> None:
        mcp = self.mcp

        @mcp.tool()
        def add(a: int, b: int) -> str:
            """Add two integers."""
            return str(a + b)

        @mcp.tool()
        def echo(text: str) -> str:
            """Echo the text back."""
            return text

        @mcp.tool()
        def lookup(key: str) -> str:
            """Look a key up in the test data."""
            if key not in self.data:
                raise ToolError(f"no such key: {key}")
            return self.data[key]

        @mcp.tool()
        def fail(message: str) -> str:
            """Always fails with the message."""
            raise ToolError(message)

        @mcp.tool()
        async def slow(seconds: float) -> str:
            """Answer after ``seconds``."""
            await asyncio.sleep(seconds)
            return "done"

    def set_page_size(self, size: int) -> None:
        """List tools in pages of ``size`` (0: all in one page)."""
        self.mcp.page_size = size

    async def add_tool(self, name: str, result: str) -> None:
        """Add a tool answering ``result`` and announce the change to listening clients."""

        def tool() -> str:
            return result

        self.mcp.add_tool(tool, name=name, description=f"Added tool {name}.")
        await self.bus.publish(ToolsListChanged())

    async def wait_for_calls(self, count: int) -> None:
        """Wait until at least ``count`` tool calls arrived (wrap in a timeout)."""
        while len(self.calls) < count:
            changed = self._changed
            await changed.wait()

    async def wait_for_list_requests(self, count: int) -> None:
        """Wait until at least ``count`` tools/list requests arrived (wrap in a timeout)."""
        while self.list_requests < count:
            changed = self._changed
            await changed.wait()

    def _note(self, body: bytes, headers: dict[str, str]) -> None:
        try:
            message = json.loads(body)
        except ValueError:
            return
        for msg in message if isinstance(message, list) else [message]:
            if not isinstance(msg, dict):
                continue
            method = msg.get("method")
            if method == "tools/call":
                params = msg.get("params") or {}
                self.calls.append(
                    MCPCall(
                        name=str(params.get("name")),
                        arguments=params.get("arguments") or {},
                        authorization=headers.get("authorization"),
                        headers=headers,
                    )
                )
            elif method == "tools/list":
                self.list_requests += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def asgi(self, app: Any) -> Any:
        """``app`` behind a recorder of the JSON-RPC requests it receives."""

        async def recorded(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["method"] != "POST":
                await app(scope, receive, send)
                return
            chunks: list[bytes] = []
            more = True
            while more:
                message = await receive()
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            body = b"".join(chunks)
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            self._note(body, headers)
            sent = False

            async def replay() -> Any:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await app(scope, replay, send)

        return recorded


@asynccontextmanager
async def mcp_server(name: str = "test") -> AsyncIterator[MCPTestServer]:
    """An :class:`MCPTestServer` listening on a loopback port (``server.url`` is its
    Streamable-HTTP endpoint); stopped on exit."""
    server = MCPTestServer(name)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # Listening before uvicorn starts: a client that connects early waits in the backlog
    # until the server accepts, so nothing has to poll for "started".
    sock.listen(128)
    app = server.asgi(server.mcp.streamable_http_app())
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
    runner = uvicorn.Server(config)
    task = asyncio.create_task(runner.serve(sockets=[sock]))
    server.url = f"http://127.0.0.1:{port}/mcp"
    try:
        yield server
    finally:
        runner.should_exit = True
        try:
            async with asyncio.timeout(5):
                await task
        except TimeoutError:
            task.cancel()
        sock.close()


def server_settings(
    url: str,
    name: str = "test",
    *,
    tool_allow: str | None = None,
    tool_deny: str | None = None,
    auth: str = "none",
    header_name: str | None = None,
    header_value: str | None = None,
    server_id: uuid.UUID | None = None,
) -> MCPServerSettings:
    """An MCP server as the gateway is configured with it (regexes compiled)."""
    return MCPServerSettings(
        id=server_id or uuid.uuid4(),
        name=name,
        url=url,
        tool_allow=re.compile(tool_allow) if tool_allow is not None else None,
        tool_deny=re.compile(tool_deny) if tool_deny is not None else None,
        auth=auth,  # type: ignore[arg-type]
        header_name=header_name,
        header_value=header_value,
    )


def install_mcp_servers(services: Services, *servers: MCPServerSettings) -> None:
    """Make the gateway's pool build bridges with ``servers`` (until the next provider
    reload), as the reloader does once MCP servers are configured."""
    pool = services.pool
    assert pool is not None
    pool.replace_providers(replace(pool.snapshot, mcp_servers=tuple(servers)))
