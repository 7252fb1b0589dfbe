"""The production builder gives each bridge its user's MCP sessions (per-user tokens)."""

from __future__ import annotations

import asyncio
import uuid

from aibridge.actor import Actor
from aibridge.governance.limiter import Limiter, LimiterConfig
from aibridge.mcp.proxy import MCPOptions
from aibridge.pool import CachedBridgePool, request_bridge_builder
from aibridge.providers.snapshot import ProviderSnapshot
from aibridge.providers.upstream import UpstreamClients
from aibridge.testing.mcp_server import mcp_server, server_settings


async def test_each_user_gets_sessions_with_their_own_token_and_none_without_one() -> None:
    async with mcp_server("personal") as srv, asyncio.timeout(60):
        personal = server_settings(srv.url, name="personal", auth="per_user")
        shared = server_settings(srv.url, name="shared")
        alice, bob, carol = (
            Actor(uuid.uuid4(), name, "member", f"key-{name}") for name in ("a", "b", "c")
        )
        tokens = {alice.user_id: {personal.id: "tok-a"}, bob.user_id: {personal.id: "tok-b"}}
        loads: list[uuid.UUID] = []

        async def user_tokens(user: uuid.UUID) -> dict[uuid.UUID, str]:
            loads.append(user)
            return tokens.get(user, {})

        upstream = UpstreamClients()
        pool = CachedBridgePool(
            request_bridge_builder(
                upstream,
                limiter=Limiter(LimiterConfig()),
                max_body_bytes=1 << 20,
                user_tokens=user_tokens,
                mcp=MCPOptions(),
            ),
            ProviderSnapshot(1, mcp_servers=(personal, shared)),
            sweep_interval=None,
        )
        try:
            for actor, expected in ((alice, "Bearer tok-a"), (bob, "Bearer tok-b")):
                async with pool.acquire(actor) as bridge:
                    assert bridge.toolset is not None
                    tool = bridge.toolset.get("bmcp_personal_echo")
                    assert tool is not None
                    await bridge.toolset.call(tool, {"text": "hi"})
                assert srv.calls[-1].authorization == expected
            async with pool.acquire(carol) as bridge:
                assert bridge.toolset is not None
                servers = {t.server_name for t in bridge.toolset.tools}
                # No token: nothing from the per-user server, the shared one still serves.
                assert servers == {"shared"}
                tool = bridge.toolset.get("bmcp_shared_echo")
                assert tool is not None
                await bridge.toolset.call(tool, {"text": "hi"})
            assert srv.calls[-1].authorization is None
            # One token load per bridge build.
            assert loads == [alice.user_id, bob.user_id, carol.user_id]
            toolsets = [e.bridge.toolset for e in pool._cache._items.values()]
        finally:
            await pool.shutdown(timeout=10)
            await upstream.close()
        assert all(ts is not None and all(p.closed for p in ts.proxies) for ts in toolsets)


async def test_without_mcp_options_bridges_have_no_toolset() -> None:
    async with mcp_server() as srv, asyncio.timeout(60):
        upstream = UpstreamClients()
        pool = CachedBridgePool(
            request_bridge_builder(
                upstream, limiter=Limiter(LimiterConfig()), max_body_bytes=1 << 20
            ),
            ProviderSnapshot(1, mcp_servers=(server_settings(srv.url),)),
            sweep_interval=None,
        )
        try:
            async with pool.acquire(Actor(uuid.uuid4(), "a", "member", "k")) as bridge:
                assert bridge.toolset is None
        finally:
            await pool.shutdown(timeout=10)
            await upstream.close()
        assert srv.list_requests == 0
