"""Centrally managed MCP tools: per-user sessions with MCP servers (the official ``mcp``
SDK's Streamable-HTTP client) and the tools they offer, under injected names.

* :mod:`~aibridge.mcp.settings`: one configured server (:class:`MCPServerSettings`) and
  the per-user token loader type (:data:`UserTokens`);
* :mod:`~aibridge.mcp.naming`: ``bmcp_<server>_<tool>`` names and the allow/deny filter;
* :mod:`~aibridge.mcp.proxy`: one server session in a task of its own (listing with
  pagination, refresh on list-changed or TTL, calls, bounded close);
* :mod:`~aibridge.mcp.toolset`: a bridge's sessions, built concurrently, closed together;
* :mod:`~aibridge.mcp.tools`: an injected tool and a call's result.

Injecting the tools into requests and running them is the interception layer's job
(:mod:`aibridge.intercept.agentic`).
"""

from aibridge.mcp.proxy import MCPOptions, MCPServerUnavailable, ServerProxy
from aibridge.mcp.settings import MCPServerSettings, UserTokens
from aibridge.mcp.tools import MCPTool, ToolResult
from aibridge.mcp.toolset import Toolset, build_toolset

__all__ = [
    "MCPOptions",
    "MCPServerSettings",
    "MCPServerUnavailable",
    "MCPTool",
    "ServerProxy",
    "ToolResult",
    "Toolset",
    "UserTokens",
    "build_toolset",
]
