"""MCP configuration changes reach the bridges, on one gateway and on another replica.

Two gateways run in this process on one database (their own pub/sub each: PostgreSQL
LISTEN/NOTIFY between them on PostgreSQL, the reconcile poll on SQLite, where in-process
pub/sub cannot cross gateways). Server changes must show up in every replica's snapshot
(so new bridges use the new set); a user's credential change must retire that user's
bridges, and only theirs. Waits are on the reloader's snapshot condition or on an event
set when the pool retires a user, always inside ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from aibridge.actor import Actor
from aibridge.bridge import RequestBridge
from aibridge.providers.snapshot import ProviderSnapshot
from aibridge.server import Services
from aibridge.server.startup import on_mcp_credentials_changed
from aibridge.store import mcp_servers as store
from aibridge.store.pubsub import MCP_SERVERS_CHANGED
from aibridge.testing.gateway import add_member, admin_gateway, gateway

URL = "/api/v1/mcp-servers"
TIMEOUT = 60.0
ENC_KEY = "r" * 40

Client = TestClient[web.Request, web.Application]


async def call(
    client: Client, method: str, path: str, token: str, body: Any = None
) -> tuple[int, Any]:
    """One admin API request: (status, JSON or None)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with asyncio.timeout(TIMEOUT):
        resp = await client.request(
            method, path, data=orjson.dumps(body) if body is not None else None, headers=headers
        )
        raw = await resp.read()
    return resp.status, (orjson.loads(raw) if raw else None)


async def wait_snapshot(
    services: Services, predicate: Callable[[ProviderSnapshot], bool]
) -> ProviderSnapshot:
    """The first installed snapshot satisfying ``predicate`` (bounded); it is the pool's."""
    async with asyncio.timeout(TIMEOUT):
        snapshot = await services.reloader.wait_for(predicate)
    assert services.pool.snapshot is snapshot
    return snapshot


def names(snapshot: ProviderSnapshot) -> dict[str, str]:
    """MCP server name -> auth type of a snapshot."""
    return {s.name: s.auth for s in snapshot.mcp_servers}


async def actor_of(services: Services, token: str) -> Actor:
    async with asyncio.timeout(TIMEOUT):
        return await services.authenticator.authenticate(token)


async def bridge_of(services: Services, actor: Actor) -> RequestBridge:
    """The bridge the pool serves ``actor`` with now (built on first use)."""
    async with asyncio.timeout(TIMEOUT), services.pool.acquire(actor) as bridge:
        return bridge


class RetiredUsers:
    """Wraps a pool's ``retire_user`` to hand each retired user id to the test."""

    def __init__(self, services: Services) -> None:
        self.seen: asyncio.Queue[uuid.UUID] = asyncio.Queue()
        pool = services.pool
        original = pool.retire_user

        def retire_user(user_id: uuid.UUID) -> int:
            count = original(user_id)
            self.seen.put_nowait(user_id)
            return count

        # The subscriber looks the method up on the pool at each notification.
        pool.retire_user = retire_user  # type: ignore[method-assign]

    async def next(self) -> uuid.UUID:
        async with asyncio.timeout(TIMEOUT):
            return await self.seen.get()


@asynccontextmanager
async def two_replicas(
    db_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Client, Services, Services, str]]:
    """Replica A (with the admin's key) and replica B on one database. On PostgreSQL B's
    reconcile poll is off, so only a notification can update it."""
    poll = {"reconcile_interval": 0.2 if db_url.startswith("sqlite") else 3600.0}
    async with (
        admin_gateway(db_url, tmp_path / "a", encryption_key=ENC_KEY) as (client, a, token),
        gateway(db_url, tmp_path / "b", encryption_key=ENC_KEY, settings_overrides=poll) as (
            _client_b,
            b,
        ),
    ):
        yield client, a, b, token


async def test_server_changes_reach_this_and_another_replicas_snapshot(
    db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with two_replicas(db_url, tmp_path) as (client, a, b, admin):
        assert a.pool.snapshot.mcp_servers == () and b.pool.snapshot.mcp_servers == ()
        status, created = await call(
            client,
            "POST",
            URL,
            admin,
            {
                "name": "tools",
                "url": "http://127.0.0.1:9/mcp",
                "tool_allow": "^read",
                "tool_deny": "secret",
                "auth": {"type": "header", "name": "X-Api-Key", "value": "hdr-value-0001"},
            },
        )
        assert status == 201, created
        for replica in (a, b):
            snapshot = await wait_snapshot(replica, lambda s: "tools" in names(s))
            (server,) = snapshot.mcp_servers
            assert server.id == uuid.UUID(created["id"])
            assert server.url == "http://127.0.0.1:9/mcp"
            assert server.tool_allow is not None and server.tool_allow.pattern == "^read"
            assert server.tool_deny is not None and server.tool_deny.pattern == "secret"
            assert (server.auth, server.header_name) == ("header", "X-Api-Key")
            assert server.header_value == "hdr-value-0001"  # decrypted for the engine

        status, _ = await call(
            client, "PATCH", f"{URL}/tools", admin, {"auth": {"type": "per_user"}}
        )
        assert status == 200
        for replica in (a, b):
            snapshot = await wait_snapshot(replica, lambda s: names(s) == {"tools": "per_user"})
            assert snapshot.mcp_servers[0].header_value is None

        # Disabled servers are not in the snapshot; enabling brings them back.
        assert (await call(client, "PATCH", f"{URL}/tools", admin, {"enabled": False}))[0] == 200
        for replica in (a, b):
            await wait_snapshot(replica, lambda s: names(s) == {})
        assert (await call(client, "PATCH", f"{URL}/tools", admin, {"enabled": True}))[0] == 200
        for replica in (a, b):
            await wait_snapshot(replica, lambda s: names(s) == {"tools": "per_user"})

        assert (await call(client, "DELETE", f"{URL}/tools", admin))[0] == 204
        for replica in (a, b):
            await wait_snapshot(replica, lambda s: names(s) == {})


async def test_a_server_change_replaces_the_bridges_built_over_the_old_set(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(sqlite_url, tmp_path) as (client, services, admin):
        actor = await actor_of(services, admin)
        before = await bridge_of(services, actor)
        assert await bridge_of(services, actor) is before  # cached
        body = {"name": "tools", "url": "http://127.0.0.1:9/mcp"}
        assert (await call(client, "POST", URL, admin, body))[0] == 201
        await wait_snapshot(services, lambda s: "tools" in names(s))
        after = await bridge_of(services, actor)
        assert after is not before
        assert after.snapshot is services.pool.snapshot


async def test_a_credential_change_retires_only_that_users_bridges(
    db_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, services, admin):
        body = {"name": "gh", "url": "http://127.0.0.1:9/mcp", "auth": {"type": "per_user"}}
        assert (await call(client, "POST", URL, admin, body))[0] == 201
        await wait_snapshot(services, lambda s: "gh" in names(s))
        bob_token = await add_member(services, "bob")
        bob, boss = await actor_of(services, bob_token), await actor_of(services, admin)
        bob_before, boss_before = await bridge_of(services, bob), await bridge_of(services, boss)
        retired = RetiredUsers(services)

        cred = f"{URL}/gh/credentials"
        assert (await call(client, "PUT", cred, bob_token, {"token": "tok-0001"}))[0] == 200
        assert await retired.next() == bob.user_id
        assert await bridge_of(services, boss) is boss_before
        bob_after = await bridge_of(services, bob)
        assert bob_after is not bob_before

        assert (await call(client, "DELETE", cred, bob_token))[0] == 204
        assert await retired.next() == bob.user_id
        assert await bridge_of(services, bob) is not bob_after
        assert await bridge_of(services, boss) is boss_before
        # A refused write retires nobody.
        assert (await call(client, "DELETE", cred, bob_token))[0] == 404
        assert retired.seen.empty()


async def test_a_credential_change_on_one_replica_retires_the_users_bridges_on_another(
    pg_url: str, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with two_replicas(pg_url, tmp_path) as (client, a, b, admin):
        body = {"name": "gh", "url": "http://127.0.0.1:9/mcp", "auth": {"type": "per_user"}}
        assert (await call(client, "POST", URL, admin, body))[0] == 201
        await wait_snapshot(b, lambda s: "gh" in names(s))
        bob_token = await add_member(a, "bob")
        bob, boss = await actor_of(b, bob_token), await actor_of(b, admin)
        bob_before, boss_before = await bridge_of(b, bob), await bridge_of(b, boss)
        retired_on_b = RetiredUsers(b)

        status, _ = await call(client, "PUT", f"{URL}/gh/credentials", bob_token, {"token": "t-1"})
        assert status == 200
        assert await retired_on_b.next() == bob.user_id
        assert await bridge_of(b, bob) is not bob_before
        assert await bridge_of(b, boss) is boss_before
        assert dict(await b.mcp_user_tokens(bob.user_id)) == {
            b.pool.snapshot.mcp_servers[0].id: "t-1"
        }


@pytest.mark.parametrize("payload", [b"", b"not-a-uuid", b"\xff\xfe", b"123"])
def test_a_malformed_credential_notification_retires_nobody(payload: bytes) -> None:
    class Pool:
        def __init__(self) -> None:
            self.retired: list[uuid.UUID] = []

        def retire_user(self, user_id: uuid.UUID) -> int:
            self.retired.append(user_id)
            return 0

    pool = Pool()
    on_message = on_mcp_credentials_changed(pool)  # type: ignore[arg-type]
    on_message(payload, None)
    user = uuid.uuid4()
    on_message(str(user).encode(), RuntimeError("messages may be lost"))
    assert pool.retired == []
    on_message(str(user).encode(), None)
    assert pool.retired == [user]


async def test_readyz_counts_the_loaded_mcp_servers_and_names_a_skipped_row(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(sqlite_url, tmp_path) as (client, services, admin):
        body = {"name": "good", "url": "http://127.0.0.1:9/mcp"}
        assert (await call(client, "POST", URL, admin, body))[0] == 201
        # A row written around the API's validation (as an older version or a manual edit
        # might): the reload skips it and says so.
        await wait_snapshot(services, lambda s: "good" in names(s))
        generation = services.pool.snapshot.generation
        async with services.sessions() as s, s.begin():
            bad = store.MCPServerSpec("bad", "http://127.0.0.1:9/mcp", tool_deny="(")
            await store.create_server(s, None, bad)
        await services.pubsub.publish(MCP_SERVERS_CHANGED)
        snapshot = await wait_snapshot(services, lambda s: s.generation > generation)
        assert names(snapshot) == {"good": "none"}
        status, ready = await call(client, "GET", "/readyz", admin)
        assert status == 200, ready
        assert ready["mcp_servers"] == 1
        assert set(ready["mcp_server_errors"]) == {"bad"}
        assert "regular expression" in ready["mcp_server_errors"]["bad"]
