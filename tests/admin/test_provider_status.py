"""``GET /api/v1/providers/status`` and the ``replicas`` heartbeat, through the real gateway
app on a SQLite file and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import async_sessionmaker

from aibridge.clock import FakeClock
from aibridge.providers.base import Provider
from aibridge.secrets_mask import mask_secret
from aibridge.server import Services
from aibridge.store.db import create_engine, session_factory
from aibridge.store.models import AIProvider, AIProviderKey
from aibridge.store.replicas import ReplicaHeartbeat, ReplicaRow, list_replicas, upsert
from aibridge.testing.gateway import add_member, admin_gateway

URL = "/api/v1/providers/status"
T = 15  # seconds: bound on every await that could hang
KEY_A = "sk-test-aaaaaaaaaaaaaaaaaaaa1111"
KEY_B = "sk-test-bbbbbbbbbbbbbbbbbbbb2222"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def get(client: TestClient[Any, Any], token: str | None) -> tuple[int, Any]:
    headers = auth(token) if token else {}
    async with asyncio.timeout(T):
        resp = await client.get(URL, headers=headers)
        return resp.status, await resp.json()


async def create(client: TestClient[Any, Any], token: str, body: dict[str, Any]) -> None:
    async with asyncio.timeout(T):
        resp = await client.post("/api/v1/providers", json=body, headers=auth(token))
        assert resp.status == 201, await resp.text()


async def installed(services: Services, name: str) -> Provider:
    """Wait until this replica's snapshot has ``name`` as a live runtime."""
    async with asyncio.timeout(T):
        snap = await services.reloader.wait_for(lambda s: isinstance(s.get(name), Provider))
    runtime = snap.get(name)
    assert isinstance(runtime, Provider)
    return runtime


async def test_status_shows_keys_breakers_errors_and_replicas(db_url: str, tmp_path: Path) -> None:
    clock = FakeClock()
    async with admin_gateway(db_url, tmp_path, clock=clock) as (client, services, admin):
        member = await add_member(services)
        assert (await get(client, None))[0] == 401
        assert (await get(client, member))[0] == 403

        await create(
            client,
            admin,
            {
                "name": "claude",
                "type": "anthropic",
                "base_url": "http://127.0.0.1:9/",
                "api_keys": [KEY_A, KEY_B],
                "settings": {"circuit_breaker": {"enabled": True, "failure_threshold": 1}},
            },
        )
        await create(
            client,
            admin,
            {"name": "off", "type": "openai", "api_keys": [KEY_A], "enabled": False},
        )
        runtime = await installed(services, "claude")
        async with asyncio.timeout(T):
            await services.reloader.wait_for(lambda s: s.get("off") is not None)
        # State the data plane would produce: the primary rate-limited for 30 s, and a
        # breaker on one model tripped by an upstream 503.
        primary = runtime.keys.keys[0]
        runtime.keys.mark_failed(primary, 429, 30)
        runtime.breakers.get("/v1/messages", "claude-x").record(503)
        runtime.breakers.get("/v1/messages", "claude-y").record(200)
        clock.advance(10)

        status, body = await get(client, admin)
        assert status == 200, body
        by_name = {p["name"]: p for p in body["providers"]}
        assert [p["name"] for p in body["providers"]] == sorted(by_name)
        claude = by_name["claude"]
        assert claude["enabled"] is True and claude["status"] == "ok" and claude["reason"] is None
        assert claude["keys"] == [
            {
                "id": primary.key_id,
                "hint": mask_secret(KEY_A),
                "primary": True,
                "state": "cooling",
                "cooldown_seconds": 20.0,
                "reason": "rate_limited",
            },
            {
                "id": runtime.keys.keys[1].key_id,
                "hint": mask_secret(KEY_B),
                "primary": False,
                "state": "valid",
                "cooldown_seconds": 0.0,
                "reason": None,
            },
        ]
        assert claude["breakers_enabled"] is True
        assert claude["breakers"] == [
            {"endpoint": "/v1/messages", "model": "claude-x", "state": "open",
             "retry_after_seconds": 20},
            {"endpoint": "/v1/messages", "model": "claude-y", "state": "closed",
             "retry_after_seconds": None},
        ]  # fmt: skip
        assert by_name["off"] == {
            "name": "off",
            "type": "openai",
            "enabled": False,
            "status": "disabled",
            "reason": None,
            "keys": [],
            "breakers_enabled": False,
            "breakers": [],
        }
        text = str(body)
        assert KEY_A not in text and KEY_B not in text

        # The applied version equals the database's, and this replica's row says so.
        assert body["loaded"] is True and body["last_reload_error"] is None
        assert body["config_version"] == body["current_config_version"] >= 2
        assert body["stale_after_seconds"] == 3 * services.settings.reconcile_interval
        # The row is written just after the snapshot swap: wait for that write.
        async with asyncio.timeout(T):
            while not [
                r for r in body["replicas"] if r["config_version"] == body["config_version"]
            ]:
                await asyncio.sleep(0.02)
                _, body = await get(client, admin)
        (me,) = [r for r in body["replicas"] if r["current"]]
        assert me["id"] == body["replica"] == services.recorder.replica
        assert me["config_version"] == body["config_version"]
        assert me["stale"] is False
        assert me["last_seen"].endswith("Z") and me["started_at"] <= me["last_seen"]


async def test_bad_row_is_an_error_with_its_reason(db_url: str, tmp_path: Path) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, services, admin):
        await create(client, admin, {"name": "good", "type": "openai", "api_keys": [KEY_A]})
        # A row written around the API's validation (duplicate keys) fails to build.
        async with services.sessions() as s, s.begin():
            row = AIProvider(
                name="broken", type="openai", enabled=True, base_url="http://127.0.0.1:9/"
            )
            s.add(row)
            await s.flush()
            s.add(AIProviderKey(provider_id=row.id, api_key=KEY_B))
            s.add(AIProviderKey(provider_id=row.id, api_key=KEY_B))
        assert await services.reloader.reload()
        _, body = await get(client, admin)
        broken = {p["name"]: p for p in body["providers"]}["broken"]
        assert broken["status"] == "error" and broken["enabled"] is True
        assert broken["reason"] and "duplicate" in broken["reason"]
        assert broken["keys"] == [] and broken["breakers"] == []


async def test_replicas_stale_and_pruned(db_url: str, tmp_path: Path) -> None:
    clock = FakeClock()
    async with admin_gateway(db_url, tmp_path, clock=clock) as (client, services, admin):
        now = clock.now()
        interval = services.settings.reconcile_interval
        ages = {
            "late": timedelta(seconds=3 * interval + 1),
            "fresh": timedelta(seconds=3 * interval - 1),
            "gone": timedelta(days=1, seconds=1),
        }
        async with services.sessions() as s, s.begin():
            for pid, (name, age) in enumerate(ages.items()):
                await upsert(s, ReplicaRow(name, pid, "h", 1, now - age, now - age))
        _, body = await get(client, admin)
        stale = {r["id"]: r["stale"] for r in body["replicas"]}
        assert stale["late"] is True and stale["fresh"] is False and stale["gone"] is True
        assert [r["id"] for r in body["replicas"]] == sorted(stale)

        # A reload is a heartbeat: it refreshes this replica's row and prunes "gone".
        clock.advance(5)
        await create(client, admin, {"name": "p1", "type": "openai", "api_keys": [KEY_A]})
        await installed(services, "p1")

        async def refreshed() -> bool:
            async with services.sessions() as s:
                rows = {r.id: r for r in await list_replicas(s)}
            own = rows.get(services.recorder.replica or "")
            return "gone" not in rows and own is not None and own.last_seen == clock.now()

        async with asyncio.timeout(T):
            while not await refreshed():  # noqa: ASYNC110 — the write follows the swap
                await asyncio.sleep(0.02)
        _, body = await get(client, admin)
        assert "gone" not in {r["id"] for r in body["replicas"]}
        (me,) = [r for r in body["replicas"] if r["current"]]
        assert me["config_version"] == body["current_config_version"]


async def test_heartbeat_failure_is_logged_not_raised(tmp_path: Path, caplog: Any) -> None:
    # A database file in a directory that does not exist: every write fails.
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/missing/db.sqlite")
    try:
        sessions: async_sessionmaker[Any] = session_factory(engine)
        beat = ReplicaHeartbeat(sessions, "r:0", pid=1, host="h", started_at=FakeClock().now())
        async with asyncio.timeout(T):
            assert await beat.beat(3) is False
        assert "replica heartbeat write failed" in caplog.text
    finally:
        await engine.dispose()
