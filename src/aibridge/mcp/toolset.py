"""A bridge's injected tools: one :class:`~aibridge.mcp.proxy.ServerProxy` per MCP server
the bridge's user may use, built concurrently, closed together."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aibridge import tracing
from aibridge.mcp.naming import assign_ids
from aibridge.mcp.settings import MCPOptions, MCPServerSettings, UserTokens
from aibridge.mcp.tools import MCPTool, ToolResult

if TYPE_CHECKING:
    from aibridge.mcp.proxy import ServerProxy

log = logging.getLogger(__name__)


class Toolset:
    """The tools of several MCP servers under their injected names.

    :attr:`tools` is sorted by injected name (a stable order keeps the provider's prompt
    cache valid between requests) and recomputed only when a server's list changed;
    :attr:`version` changes with it, so callers can cache what they derive from it (the
    encoded tool definitions per API).
    """

    def __init__(self, proxies: Sequence[ServerProxy]) -> None:
        self._proxies = {p.name: p for p in proxies}
        self.version = 0
        self._tools: tuple[MCPTool, ...] = ()
        self._by_id: dict[str, MCPTool] = {}
        self.derived: dict[Any, Any] = {}
        """Per-version cache for what callers derive from :attr:`tools` (cleared on change)."""
        for proxy in proxies:
            proxy.set_on_change(self._rebuild)
        self._rebuild()

    @property
    def proxies(self) -> tuple[ServerProxy, ...]:
        """The server sessions, by server name order."""
        return tuple(self._proxies[n] for n in sorted(self._proxies))

    @property
    def tools(self) -> tuple[MCPTool, ...]:
        """Every tool, sorted by injected name."""
        return self._tools

    def get(self, tool_id: str) -> MCPTool | None:
        """The tool injected as ``tool_id``."""
        return self._by_id.get(tool_id)

    def _rebuild(self) -> None:
        pairs = [(p.name, t.name) for p in self._proxies.values() for t in p.tools]
        ids = assign_ids(pairs)
        tools = [
            MCPTool(
                id=ids[(p.name, t.name)],
                name=t.name,
                server_name=p.name,
                server_url=p.server.url,
                description=t.description,
                input_schema=t.input_schema,
            )
            for p in self._proxies.values()
            for t in p.tools
        ]
        tools.sort(key=lambda t: t.id)
        self._tools = tuple(tools)
        self._by_id = {t.id: t for t in tools}
        self.derived = {}
        self.version += 1

    async def call(self, tool: MCPTool, arguments: dict[str, Any]) -> ToolResult:
        """Call ``tool`` on its server (never raises for a failed call)."""
        proxy = self._proxies.get(tool.server_name)
        if proxy is None:  # pragma: no cover - tools only come from these proxies
            message = f"MCP server {tool.server_name!r} is not known"
            return ToolResult(f"Error: {message}", is_error=True, error=message)
        return await proxy.call(tool.name, arguments)

    async def close(self) -> None:
        """Close every session concurrently (each bounded by its close timeout)."""
        if self._proxies:
            await asyncio.gather(*(p.close() for p in self._proxies.values()))


def _headers(server: MCPServerSettings, tokens: Mapping[uuid.UUID, str]) -> dict[str, str] | None:
    """The headers a user's session with ``server`` sends; None when the user cannot use it."""
    if server.auth == "per_user":
        token = tokens.get(server.id)
        return {"Authorization": f"Bearer {token}"} if token else None
    if server.auth == "header" and server.header_name and server.header_value is not None:
        return {server.header_name: server.header_value}
    return {}


async def _server_proxy_class() -> type[ServerProxy]:
    """The engine's session class, imported on first use: the MCP SDK takes about a
    second to import, so a gateway without MCP servers never loads it, and the first bridge
    that needs it imports it in a thread rather than stalling the event loop."""
    module = sys.modules.get("aibridge.mcp.proxy")
    if module is None:
        module = await asyncio.to_thread(importlib.import_module, "aibridge.mcp.proxy")
    cls: type[ServerProxy] = module.ServerProxy
    return cls


async def _traced_start(tracer: tracing.Tracer, proxy: ServerProxy) -> None:
    """``proxy.start()`` in a ``StreamableHTTPServerProxy.Init`` span (current in this
    gather task, so the session's first tool listing is its child)."""
    span = tracer.start(
        tracing.MCP_PROXY_INIT,
        {
            "mcp_proxy_name": "StreamableHTTPServerProxy",
            "mcp_server_name": proxy.name,
            "mcp_server_url": proxy.server.url,
        },
    )
    with tracing.current_span(tracer, span, str):
        await proxy.start()


async def build_toolset(
    servers: Sequence[MCPServerSettings],
    user_id: uuid.UUID,
    *,
    user_tokens: UserTokens | None,
    options: MCPOptions,
) -> Toolset | None:
    """Open a session with every server ``user_id`` may use, concurrently, and gather
    their tools; None when no server is left. A server that fails is logged and left
    out: the others' tools are still offered. A per-user server the user has no token
    for is skipped (debug log)."""
    tokens: Mapping[uuid.UUID, str] = {}
    if user_tokens is not None and any(s.auth == "per_user" for s in servers):
        try:
            tokens = await user_tokens(user_id)
        except Exception as exc:
            log.warning(
                "could not load the user's MCP tokens; per-user MCP servers skipped",
                extra={"user_id": str(user_id), "error": f"{type(exc).__name__}: {exc}"},
            )
    server_proxy = await _server_proxy_class()
    proxies: list[ServerProxy] = []
    for server in servers:
        headers = _headers(server, tokens)
        if headers is None:
            log.debug(
                "no MCP token for this user; server skipped",
                extra={"mcp_server": server.name, "user_id": str(user_id)},
            )
            continue
        proxies.append(server_proxy(server, headers, options))
    if not proxies:
        return None
    tracer = tracing.TRACER
    if tracer is None:
        starts = [p.start() for p in proxies]
    else:
        span = tracer.start(tracing.MCP_INIT, {"mcp_server_count": len(proxies)})
        token = tracer.activate(span)
        starts = [_traced_start(tracer, p) for p in proxies]
    results: list[BaseException | None] = []
    try:
        results = await asyncio.gather(*starts, return_exceptions=True)
    except asyncio.CancelledError:
        # The build was cancelled (shutdown): never leave a session task behind.
        await asyncio.shield(asyncio.gather(*(p.close() for p in proxies)))
        raise
    finally:
        if tracer is not None:
            tracer.deactivate(token)
            failed = sum(1 for r in results if isinstance(r, BaseException))
            if failed:
                # Like the reference: the tools of the others are still offered.
                tracer.fail(span, f"{failed} of {len(proxies)} MCP servers unavailable")
            span.end()
    started: list[ServerProxy] = []
    for proxy, result in zip(proxies, results, strict=True):
        if isinstance(result, BaseException):
            log.warning(
                "MCP server unavailable; its tools are not offered",
                extra={"mcp_server": proxy.name, "user_id": str(user_id), "error": str(result)},
            )
            continue
        started.append(proxy)
    return Toolset(started) if started else None
