"""Fixtures of the MCP engine tests: a real MCP server on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aibridge.testing.mcp_server import MCPTestServer, mcp_server


@pytest.fixture
async def server() -> AsyncIterator[MCPTestServer]:
    async with mcp_server("test") as srv:
        yield srv
