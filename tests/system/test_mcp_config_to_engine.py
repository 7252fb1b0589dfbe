"""From configuration to MCP sessions: servers and tokens set through the admin API reach
the bridges' MCP sessions (the configuration half meets the engine half).

Real MCP servers (the SDK's Streamable HTTP server) record the ``Authorization`` header of
every call. Skipped where the MCP engine (``aibridge.testing.mcp_server``) is missing.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from aibridge.actor import Actor
from aibridge.server import Services
from aibridge.testing.gateway import add_member, admin_gateway

mcp_testing = pytest.importorskip("aibridge.testing.mcp_server")

URL = "/api/v1/mcp-servers"
TIMEOUT = 60.0
STATIC = "static-header-value-0001"

Client = TestClient[web.Request, web.Application]


async def call(
    client: Client, method: str, path: str, token: str, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with asyncio.timeout(TIMEOUT):
        resp = await client.request(
            method, path, data=orjson.dumps(body) if body is not None else None, headers=headers
        )
        raw = await resp.read()
    return resp.status, (orjson.loads(raw) if raw else None)


async def actor_of(services: Services, token: str) -> Actor:
    async with asyncio.timeout(TIMEOUT):
        return await services.authenticator.authenticate(token)


async def tools_of(services: Services, actor: Actor) -> tuple[Any, set[str]]:
    """The actor's bridge and the injected tool names its toolset offers."""
    async with asyncio.timeout(TIMEOUT), services.pool.acquire(actor) as bridge:
        toolset = bridge.toolset
        return bridge, ({t.id for t in toolset.tools} if toolset is not None else set())


async def call_echo(services: Services, actor: Actor, tool_id: str) -> None:
    async with asyncio.timeout(TIMEOUT), services.pool.acquire(actor) as bridge:
        tool = bridge.toolset.get(tool_id)
        assert tool is not None, tool_id
        result = await bridge.toolset.call(tool, {"text": "hi"})
    assert not result.is_error


async def until_snapshot(services: Services, names: set[str]) -> None:
    async with asyncio.timeout(TIMEOUT):
        await services.reloader.wait_for(lambda s: {m.name for m in s.mcp_servers} == names)


async def test_servers_and_tokens_set_through_the_api_reach_each_users_mcp_sessions(
    db_url: str, tmp_path: Path
) -> None:
    async with (
        mcp_testing.mcp_server("shared") as shared,
        mcp_testing.mcp_server("personal") as personal,
        admin_gateway(db_url, tmp_path) as (client, services, admin),
    ):
        header = {"type": "header", "name": "Authorization", "value": f"Bearer {STATIC}"}
        body = {"name": "shared", "url": shared.url, "tool_allow": "^echo$", "auth": header}
        assert (await call(client, "POST", URL, admin, body))[0] == 201
        body = {"name": "personal", "url": personal.url, "auth": {"type": "per_user"}}
        assert (await call(client, "POST", URL, admin, body))[0] == 201
        await until_snapshot(services, {"shared", "personal"})

        bob_token = await add_member(services, "bob")
        alice_token = await add_member(services, "alice")
        bob, alice = await actor_of(services, bob_token), await actor_of(services, alice_token)
        cred = f"{URL}/personal/credentials"
        assert (await call(client, "PUT", cred, bob_token, {"token": "bob-token-1"}))[0] == 200

        # Bob: the shared server's allowed tool and every personal tool; Alice (no token):
        # the shared one only.
        _, bob_tools = await tools_of(services, bob)
        assert "bmcp_shared_echo" in bob_tools and "bmcp_shared_add" not in bob_tools
        assert "bmcp_personal_echo" in bob_tools and "bmcp_personal_add" in bob_tools
        _, alice_tools = await tools_of(services, alice)
        assert {t for t in alice_tools if t.startswith("bmcp_personal_")} == set()
        assert "bmcp_shared_echo" in alice_tools

        await call_echo(services, bob, "bmcp_personal_echo")
        await call_echo(services, alice, "bmcp_shared_echo")
        assert [c.authorization for c in personal.calls] == ["Bearer bob-token-1"]
        assert [c.authorization for c in shared.calls] == [f"Bearer {STATIC}"]

        # Bob's new token reaches his next session; Alice's bridge is not rebuilt.
        alice_bridge, _ = await tools_of(services, alice)
        retired = asyncio.Event()
        original = services.pool.retire_user

        def retire_user(user_id: uuid.UUID) -> int:
            count = original(user_id)
            retired.set()
            return count

        services.pool.retire_user = retire_user  # type: ignore[method-assign]
        assert (await call(client, "PUT", cred, bob_token, {"token": "bob-token-2"}))[0] == 200
        async with asyncio.timeout(TIMEOUT):
            await retired.wait()
        await call_echo(services, bob, "bmcp_personal_echo")
        assert personal.calls[-1].authorization == "Bearer bob-token-2"
        assert (await tools_of(services, alice))[0] is alice_bridge

        # Disabling a server removes its tools from new bridges.
        assert (await call(client, "PATCH", f"{URL}/shared", admin, {"enabled": False}))[0] == 200
        await until_snapshot(services, {"personal"})
        _, bob_tools = await tools_of(services, bob)
        assert bob_tools and not {t for t in bob_tools if t.startswith("bmcp_shared_")}
