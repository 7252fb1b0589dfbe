"""Centrally managed MCP tools: per-user sessions with MCP servers (the official ``mcp``
SDK's Streamable-HTTP client) and the tools they offer, under injected names.

* :mod:`~aibridge.mcp.settings`: one configured server (:class:`MCPServerSettings`) and
  the per-user token loader type (:data:`UserTokens`);
* :mod:`~aibridge.mcp.config`: validation of admin/CLI input for a server;
* :mod:`~aibridge.mcp.credentials`: the per-user token loader (one query per bridge build);
* :mod:`~aibridge.mcp.naming`: ``bmcp_<server>_<tool>`` names and the allow/deny filter;
* :mod:`~aibridge.mcp.proxy`: one server session in a task of its own (listing with
  pagination, refresh on list-changed or TTL, calls, bounded close);
* :mod:`~aibridge.mcp.toolset`: a bridge's sessions, built concurrently, closed together;
* :mod:`~aibridge.mcp.tools`: an injected tool and a call's result.

Import from the submodules: this package imports nothing eagerly, so that reading the
settings (the reloader, the provider snapshot) does not load the MCP SDK.

Injecting the tools into requests and running them is the interception layer's job
(:mod:`aibridge.intercept.agentic`). Layer: below ``providers`` | ``recording`` and above
``store``.
"""
