"""``GET /api/v1/me``: the limits in force and the budget status, against recorded spend
(SQLite file and PostgreSQL), with a fake clock moving across periods."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from aibridge.clock import FakeClock
from aibridge.testing.gateway import admin_gateway
from aibridge.testing.spend import record_cost

T = 20  # seconds: upper bound for any single await that could hang
USD = 10**12  # pico-USD


async def call(
    client: TestClient, method: str, path: str, token: str, json: Any = None
) -> tuple[int, Any]:
    """One request; returns (status, parsed JSON body)."""
    async with asyncio.timeout(T):
        resp = await client.request(
            method, path, json=json, headers={"Authorization": f"Bearer {token}"}
        )
        return resp.status, await resp.json()


async def me(client: TestClient, token: str) -> dict[str, Any]:
    status, body = await call(client, "GET", "/api/v1/me", token)
    assert status == 200, body
    return dict(body)


async def new_key(client: TestClient, admin: str, username: str) -> tuple[str, str]:
    """A new key of ``username``; returns (token, key id)."""
    status, key = await call(client, "POST", f"/api/v1/users/{username}/keys", admin, {})
    assert status == 201, key
    return key["token"], key["id"]


async def new_user(client: TestClient, admin: str, username: str) -> uuid.UUID:
    status, user = await call(client, "POST", "/api/v1/users", admin, {"username": username})
    assert status == 201, user
    return uuid.UUID(user["id"])


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def test_no_budget_means_no_budget_status_and_null_limits(
    db_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, services, admin):
        bob = await new_user(client, admin, "bob")
        token, kid = await new_key(client, admin, "bob")
        await record_cost(services.sessions, bob, datetime.now(UTC), 5 * USD, key_id=kid)
        body = await me(client, token)
        assert "budget" not in body
        assert body["key_id"] == kid
        assert body["limits"] == body["key_limits"]
        assert set(body["limits"].values()) == {None}


async def test_the_budget_with_less_left_is_shown_with_this_periods_spend(
    db_url: str, tmp_path: Path
) -> None:
    clock = FakeClock(now=at("2025-03-20T12:00:00"))
    overrides = {"default_budget": "10/month", "default_requests_per_minute": 100}
    async with admin_gateway(db_url, tmp_path, clock=clock, settings_overrides=overrides) as (
        client,
        services,
        admin,
    ):
        bob = await new_user(client, admin, "bob")
        carol = await new_user(client, admin, "carol")
        token1, key1 = await new_key(client, admin, "bob")
        token2, key2 = await new_key(client, admin, "bob")
        sessions = services.sessions
        await record_cost(sessions, bob, at("2025-03-05T00:00:00"), 2 * USD, None, key_id=key1)
        # Last month, another user: not this period's, not bob's.
        await record_cost(sessions, bob, at("2025-02-28T23:59:59"), 5 * USD, key_id=key1)
        await record_cost(sessions, carol, at("2025-03-10T00:00:00"), 7 * USD)

        body = await me(client, token1)
        assert body["limits"]["requests_per_minute"] == 100
        assert body["limits"]["budget"] == {"amount_usd": 10, "period": "month"}
        assert body["budget"] == {
            "amount_usd": 10,
            "period": "month",
            "spent_usd": 2,
            "remaining_usd": 8,
            "resets_at": "2025-04-01T00:00:00Z",
            "scope": "user",
            "soft_exceeded": False,
            "exceeded": False,
        }

        # The key's own day budget has less left than the user's month: it is shown.
        patch = {"limits": {"budget": {"amount_usd": 3, "period": "day"}}}
        status, _ = await call(client, "PATCH", f"/api/v1/users/bob/keys/{key1}", admin, patch)
        assert status == 200
        await record_cost(sessions, bob, at("2025-03-20T01:00:00"), USD // 2, key_id=key1)
        await record_cost(sessions, bob, at("2025-03-20T02:00:00"), USD, key_id=key2)
        body = await me(client, token1)
        assert body["key_limits"]["budget"] == {"amount_usd": 3, "period": "day"}
        assert body["budget"] == {
            "amount_usd": 3,
            "period": "day",
            "spent_usd": 0.5,
            "remaining_usd": 2.5,
            "resets_at": "2025-03-21T00:00:00Z",
            "scope": "key",
            "soft_exceeded": False,
            "exceeded": False,
        }
        # The other key has no budget of its own: the user's, with every key's spend.
        assert (await me(client, token2))["budget"]["spent_usd"] == 3.5
        # Past the soft threshold (80 % of 3 = 2.4), not yet the hard limit.
        await record_cost(sessions, bob, at("2025-03-20T03:00:00"), 2 * USD, key_id=key1)
        body = await me(client, token1)
        assert body["budget"]["spent_usd"] == 2.5
        assert (body["budget"]["soft_exceeded"], body["budget"]["exceeded"]) == (True, False)

        # A new month: both budgets start over; the key's still has less left.
        clock.advance((at("2025-04-01T00:00:01") - clock.now()).total_seconds())
        body = await me(client, token1)
        assert body["budget"]["scope"] == "key"
        assert body["budget"]["spent_usd"] == 0
        assert body["budget"]["resets_at"] == "2025-04-02T00:00:00Z"
        body = await me(client, token2)
        assert body["budget"]["spent_usd"] == 0
        assert body["budget"]["resets_at"] == "2025-05-01T00:00:00Z"

        # The user's own budget replaces the default.
        patch = {"limits": {"budget": {"amount_usd": 0.75, "period": "week"}}}
        assert (await call(client, "PATCH", "/api/v1/users/bob", admin, patch))[0] == 200
        await record_cost(sessions, bob, at("2025-04-01T00:00:00"), USD, key_id=key2)
        body = await me(client, token2)
        assert body["budget"] == {
            "amount_usd": 0.75,
            "period": "week",
            "spent_usd": 1,
            "remaining_usd": 0,
            "resets_at": "2025-04-07T00:00:00Z",
            "scope": "user",
            "soft_exceeded": True,
            "exceeded": True,
        }


async def test_budget_periods_follow_the_configured_time_zone(db_url: str, tmp_path: Path) -> None:
    # 21:30 UTC on 31 March is 23:30 in Berlin (summer time since the 30th): still March.
    clock = FakeClock(now=at("2025-03-31T21:30:00"))
    overrides = {"default_budget": "4/month", "budget_timezone": "Europe/Berlin"}
    async with admin_gateway(db_url, tmp_path, clock=clock, settings_overrides=overrides) as (
        client,
        services,
        admin,
    ):
        bob = await new_user(client, admin, "bob")
        token, kid = await new_key(client, admin, "bob")
        # 23:30 on 28 February UTC is already 1 March in Berlin.
        await record_cost(services.sessions, bob, at("2025-02-28T23:30:00"), USD, key_id=kid)
        await record_cost(services.sessions, bob, at("2025-03-31T21:00:00"), USD, key_id=kid)
        budget = (await me(client, token))["budget"]
        assert budget["spent_usd"] == 2
        assert budget["resets_at"] == "2025-03-31T22:00:00Z"

        clock.advance(3600)  # 00:30 on 1 April in Berlin
        budget = (await me(client, token))["budget"]
        assert budget["spent_usd"] == 0
        assert budget["resets_at"] == "2025-04-30T22:00:00Z"
