"""Real coding agents through the gateway with injected MCP tools: Claude Code
(``claude -p``) and Codex CLI (``codex exec``) against the fake upstream scripted to call
an injected tool. They must print only the final answer while the gateway ran the tool.

Install the agents with
``npm install -g --prefix /tmp/agents @anthropic-ai/claude-code @openai/codex``
(or put them on PATH, or point ``AIBRIDGE_AGENTS_BIN`` at their ``bin`` folder); the
tests skip when a binary is absent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aibridge.fakellm import ToolCall
from aibridge.fakellm.tooluse import tool_caller
from aibridge.testing.agents import agent_env, find_agent, install_hint, run_agent
from aibridge.testing.mcp_server import (
    MCPTestServer,
    install_mcp_servers,
    mcp_server,
    server_settings,
)
from aibridge.testing.recorded import interceptions, recorded
from aibridge.testing.stack import stack

ADD = ToolCall("bmcp_test_add", {"a": 2, "b": 40})


def agent(name: str) -> str:
    """The agent binary's path, or a skip saying how to install it."""
    found = find_agent(name)
    if found is None:
        package = "@anthropic-ai/claude-code" if name == "claude" else "@openai/codex"
        pytest.skip(f"{name} is not installed: " + install_hint(package))
    return found


@pytest.fixture
async def mcp() -> AsyncIterator[MCPTestServer]:
    async with mcp_server("test") as srv:
        yield srv


async def test_claude_code_sees_only_the_final_answer(
    db_url: str, tmp_path: Path, mcp: MCPTestServer
) -> None:
    claude = agent("claude")
    async with stack(db_url, tmp_path / "gw") as s:
        await s.add_provider("anthropic", "anthropic")
        install_mcp_servers(s.services, server_settings(mcp.url))
        s.fake.responder = tool_caller([ADD], answer="The answer is {results}.")
        home = tmp_path / "home"
        home.mkdir()
        env = agent_env(home) | {
            "ANTHROPIC_BASE_URL": f"{s.base}/anthropic",
            "ANTHROPIC_API_KEY": s.user_token,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
        }
        code, out, err = await run_agent(
            [claude, "-p", "What is 2+40? Use the add tool.", "--model", "claude-sonnet-4-5"],
            env,
            home,
        )
        assert code == 0, f"claude failed ({code}): {err[-2000:]}"
        assert "The answer is 42." in out
        assert "bmcp_" not in out
        assert [(c.name, c.arguments) for c in mcp.calls] == [("add", {"a": 2, "b": 40})]
        await s.flush_records()
        rows = [await recorded(s.services, r.id) for r in await interceptions(s.services)]
        injected = [t for r in rows for t in r.tool_usages if t.injected]
        assert [(t.tool, t.invocation_error) for t in injected] == [("add", None)]


async def test_codex_sees_only_the_final_answer(
    db_url: str, tmp_path: Path, mcp: MCPTestServer
) -> None:
    codex = agent("codex")
    async with stack(db_url, tmp_path / "gw") as s:
        await s.add_provider("openai", "openai")
        install_mcp_servers(s.services, server_settings(mcp.url))
        s.fake.responder = tool_caller([ADD], answer="The answer is {results}.")
        home = tmp_path / "home"
        (home / ".codex").mkdir(parents=True)
        env = agent_env(home) | {"CODEX_HOME": str(home / ".codex"), "GATEWAY_KEY": s.user_token}
        provider = (
            'model_providers.gw={name="gateway",base_url="'
            f'{s.base}/openai/v1",env_key="GATEWAY_KEY",wire_api="responses"}}'
        )
        code, out, err = await run_agent(
            [
                codex,
                "exec",
                "--skip-git-repo-check",
                "-c",
                provider,
                "-c",
                "model_provider=gw",
                "-m",
                "gpt-4.1",
                "What is 2+40? Use the add tool.",
            ],
            env,
            home,
        )
        assert code == 0, f"codex failed ({code}): {err[-2000:]}"
        assert "The answer is 42." in out
        assert "bmcp_" not in out
        assert [(c.name, c.arguments) for c in mcp.calls] == [("add", {"a": 2, "b": 40})]
