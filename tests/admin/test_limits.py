"""Limits on users and keys through the real gateway app (SQLite file and PostgreSQL):
the admin API, the actor the authenticator builds, and propagation to another replica."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from aibridge.limits import NO_LIMITS, Budget, Limits
from aibridge.server import Services
from aibridge.store.models import ApiKey, AuditLog, User
from aibridge.store.pubsub import API_KEYS_CHANGED
from aibridge.testing.gateway import admin_gateway, gateway
from aibridge.testing.replicas import poll

T = 20  # seconds: upper bound for any single await that could hang

ALL_NULL = {
    "requests_per_minute": None,
    "tokens_per_minute": None,
    "max_concurrent": None,
    "allowed_models": None,
    "budget": None,
}
FULL = {
    "requests_per_minute": 60,
    "tokens_per_minute": 100_000,
    "max_concurrent": 4,
    "allowed_models": ["claude-*", "openai/gpt-5*"],
    "budget": {"amount_usd": 12.5, "period": "month"},
}


async def call(
    client: TestClient, method: str, path: str, token: str | None, json: Any = None
) -> tuple[int, Any]:
    """One request; returns (status, parsed JSON body or None)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with asyncio.timeout(T):
        resp = await client.request(method, path, json=json, headers=headers)
        body = await resp.json() if (await resp.read()) else None
    return resp.status, body


async def new_user(client: TestClient, admin: str, username: str) -> tuple[dict[str, Any], str]:
    """A member and one key made through the API; returns (user json, token)."""
    status, user = await call(client, "POST", "/api/v1/users", admin, {"username": username})
    assert status == 201, user
    status, key = await call(client, "POST", f"/api/v1/users/{username}/keys", admin, {})
    assert status == 201, key
    return user, key["token"]


def key_id(token: str) -> str:
    return token.split("-")[1]


async def announced(seen: asyncio.Queue[bytes], payload: bytes) -> None:
    """Wait for ``payload`` on ``seen`` (earlier announcements, e.g. of the key's
    creation arriving late through PostgreSQL, are skipped)."""
    async with asyncio.timeout(T):
        while await seen.get() != payload:
            pass


async def audit_rows(services: Services, resource_type: str) -> list[AuditLog]:
    async with services.sessions() as s:
        rows = await s.execute(
            select(AuditLog)
            .where(AuditLog.resource_type == resource_type, AuditLog.action == "update")
            .order_by(AuditLog.created_at)
        )
        return list(rows.scalars())


# --- users --------------------------------------------------------------------------


async def test_user_limits_are_patched_per_field_and_returned_with_every_field(
    db_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, services, admin):
        user, _token = await new_user(client, admin, "bob")
        assert user["limits"] == ALL_NULL

        status, body = await call(client, "PATCH", "/api/v1/users/bob", admin, {"limits": FULL})
        assert status == 200, body
        assert body["limits"] == FULL
        assert (await call(client, "GET", "/api/v1/users/bob", admin))[1]["limits"] == FULL
        listed = (await call(client, "GET", "/api/v1/users", admin))[1]
        assert [u["limits"] for u in listed if u["username"] == "bob"] == [FULL]

        # Absent fields keep their value; an explicit null clears only that field.
        status, body = await call(
            client,
            "PATCH",
            "/api/v1/users/bob",
            admin,
            {"limits": {"max_concurrent": 2, "allowed_models": None}},
        )
        assert status == 200, body
        assert body["limits"] == {**FULL, "max_concurrent": 2, "allowed_models": None}

        # null clears every limit, and the column holds NULL again (not an empty object).
        status, body = await call(client, "PATCH", "/api/v1/users/bob", admin, {"limits": None})
        assert status == 200, body
        assert body["limits"] == ALL_NULL
        async with services.sessions() as s:
            stored = (await s.execute(select(User.limits).where(User.username == "bob"))).one()
        assert stored == (None,)

        rows = await audit_rows(services, "user")
        assert [r.diff for r in rows] == [
            {"limits": {f: {"old": None, "new": v} for f, v in FULL.items()}},
            {
                "limits": {
                    "max_concurrent": {"old": 4, "new": 2},
                    "allowed_models": {"old": FULL["allowed_models"], "new": None},
                }
            },
            {
                "limits": {
                    f: {"old": v, "new": None}
                    for f, v in FULL.items()
                    if f not in ("max_concurrent", "allowed_models")
                }
                | {"max_concurrent": {"old": 2, "new": None}}
            },
        ]
        assert all(r.actor_username == "admin" for r in rows)


async def test_a_user_patch_that_changes_nothing_writes_no_audit_row(
    db_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, services, admin):
        await new_user(client, admin, "bob")
        patch = {"limits": {"requests_per_minute": 5}}
        assert (await call(client, "PATCH", "/api/v1/users/bob", admin, patch))[0] == 200
        assert (await call(client, "PATCH", "/api/v1/users/bob", admin, patch))[0] == 200
        assert len(await audit_rows(services, "user")) == 1


async def test_invalid_limits_get_a_400_naming_every_field_and_change_nothing(
    db_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, services, admin):
        await new_user(client, admin, "bob")
        bad = {
            "email": "not-an-address",
            "limits": {
                "requests_per_minute": 0,
                "tokens_per_minute": "many",
                "max_concurrent": True,
                "allowed_models": ["claude-*", "has space", ""],
                "budget": {"amount_usd": -1, "period": "year"},
                "rpm": 5,
            },
        }
        status, body = await call(client, "PATCH", "/api/v1/users/bob", admin, bad)
        assert status == 400, body
        fields = {v["field"]: v["detail"] for v in body["validations"]}
        assert set(fields) == {
            "email",
            "limits.rpm",
            "limits.requests_per_minute",
            "limits.tokens_per_minute",
            "limits.max_concurrent",
            "limits.allowed_models[1]",
            "limits.allowed_models[2]",
            "limits.budget.amount_usd",
            "limits.budget.period",
        }
        assert fields["limits.budget.period"] == "must be one of day, week, month"
        assert "known: requests_per_minute" in fields["limits.rpm"]

        for limits in ("60/minute", ["x"], 5):
            status, body = await call(
                client, "PATCH", "/api/v1/users/bob", admin, {"limits": limits}
            )
            assert status == 400, body
            assert body["validations"][0]["field"] == "limits"

        user = (await call(client, "GET", "/api/v1/users/bob", admin))[1]
        assert user["limits"] == ALL_NULL
        assert user["email"] == ""
        assert await audit_rows(services, "user") == []


# --- keys ---------------------------------------------------------------------------


async def test_key_limits_are_patched_and_shown_in_the_key_and_its_listing(
    db_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, services, admin):
        _user, token = await new_user(client, admin, "bob")
        kid = key_id(token)
        path = f"/api/v1/users/bob/keys/{kid}"
        status, key = await call(client, "GET", path, admin)
        assert status == 200, key
        assert key["limits"] == ALL_NULL
        assert key["id"] == kid

        status, key = await call(
            client, "PATCH", path, admin, {"limits": {"budget": {"amount_usd": 3, "period": "day"}}}
        )
        assert status == 200, key
        assert key["limits"] == {**ALL_NULL, "budget": {"amount_usd": 3, "period": "day"}}
        status, keys = await call(client, "GET", "/api/v1/users/bob/keys", admin)
        assert [k["limits"] for k in keys] == [key["limits"]]
        assert (await call(client, "GET", path, admin))[1]["limits"] == key["limits"]
        my_keys = (await call(client, "GET", "/api/v1/me/keys", token))[1]
        assert [k["limits"] for k in my_keys] == [key["limits"]]

        status, key = await call(client, "PATCH", path, admin, {"limits": None})
        assert status == 200
        assert key["limits"] == ALL_NULL
        async with services.sessions() as s:
            stored = (await s.execute(select(ApiKey.limits).where(ApiKey.id == kid))).one()
        assert stored == (None,)

        rows = await audit_rows(services, "api_key")
        assert [(r.resource_id, r.diff) for r in rows] == [
            (
                kid,
                {
                    "username": "bob",
                    "limits": {"budget": {"old": None, "new": {"amount_usd": 3, "period": "day"}}},
                },
            ),
            (
                kid,
                {
                    "username": "bob",
                    "limits": {"budget": {"old": {"amount_usd": 3, "period": "day"}, "new": None}},
                },
            ),
        ]


async def test_key_patches_of_unknown_or_foreign_keys_are_404_and_bad_bodies_400(
    db_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, services, admin):
        await new_user(client, admin, "bob")
        _carol, carol_token = await new_user(client, admin, "carol")
        carols = key_id(carol_token)
        patch = {"limits": {"requests_per_minute": 1}}
        for path in (
            f"/api/v1/users/bob/keys/{carols}",
            "/api/v1/users/bob/keys/nosuchkey",
            f"/api/v1/users/nobody/keys/{carols}",
        ):
            assert (await call(client, "PATCH", path, admin, patch))[0] == 404, path
            assert (await call(client, "GET", path, admin))[0] == 404, path

        path = f"/api/v1/users/carol/keys/{carols}"
        status, body = await call(client, "PATCH", path, admin, {"name": "x", "limits": {}})
        assert status == 400
        assert body["validations"][0]["field"] == "name"
        status, body = await call(client, "PATCH", path, admin, {})
        assert status == 400
        assert "limits" in body["detail"]
        status, body = await call(
            client, "PATCH", path, admin, {"limits": {"budget": {"amount_usd": 1}}}
        )
        assert status == 400
        assert body["validations"] == [
            {"field": "limits.budget.period", "detail": "must be one of day, week, month"}
        ]
        assert (await call(client, "GET", path, admin))[1]["limits"] == ALL_NULL
        assert await audit_rows(services, "api_key") == []


async def test_limits_routes_are_401_without_a_key_and_403_for_members(
    db_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, _services, admin):
        _user, token = await new_user(client, admin, "bob")
        key_path = f"/api/v1/users/bob/keys/{key_id(token)}"
        patch = {"limits": {"requests_per_minute": 1000}}
        for method, path in (
            ("PATCH", "/api/v1/users/bob"),
            ("PATCH", key_path),
            ("GET", key_path),
        ):
            assert (await call(client, method, path, None, patch))[0] == 401
            status, body = await call(client, method, path, token, patch)
            assert status == 403, body
        # A member cannot lift its own limits.
        assert (await call(client, "GET", "/api/v1/users/bob", admin))[1]["limits"] == ALL_NULL


# --- the actor and propagation -------------------------------------------------------


async def test_a_limits_change_reaches_the_cached_actor_at_once_and_is_announced(
    db_url: str, tmp_path: Path
) -> None:
    # A long cache TTL: only the invalidation can make the new limits visible.
    async with admin_gateway(db_url, tmp_path, settings_overrides={"auth_cache_ttl": 3600}) as (
        client,
        services,
        admin,
    ):
        user, token = await new_user(client, admin, "bob")
        auth = services.authenticator
        async with asyncio.timeout(T):
            assert (await auth.authenticate(token)).user_limits == NO_LIMITS
            seen: asyncio.Queue[bytes] = asyncio.Queue()
            unsubscribe = await services.pubsub.subscribe(
                API_KEYS_CHANGED, lambda payload, _err: seen.put_nowait(payload)
            )
        try:
            patch = {"limits": {"requests_per_minute": 7, "budget": "x"}}
            assert (await call(client, "PATCH", "/api/v1/users/bob", admin, patch))[0] == 400
            patch = {"limits": {"requests_per_minute": 7}}
            assert (await call(client, "PATCH", "/api/v1/users/bob", admin, patch))[0] == 200
            await announced(seen, f"user:{user['id']}".encode())
            async with asyncio.timeout(T):
                actor = await auth.authenticate(token)
            assert actor.user_limits == Limits(requests_per_minute=7)
            assert actor.key_limits == NO_LIMITS

            key_patch = {"limits": {"budget": {"amount_usd": "2.5", "period": "week"}}}
            path = f"/api/v1/users/bob/keys/{key_id(token)}"
            assert (await call(client, "PATCH", path, admin, key_patch))[0] == 200
            await announced(seen, key_id(token).encode())
            async with asyncio.timeout(T):
                actor = await auth.authenticate(token)
            assert actor.key_limits == Limits(budget=Budget(Decimal("2.5"), "week"))
            assert actor.user_limits == Limits(requests_per_minute=7)
            # The row changed behind the gateway's back (as the CLI does on SQLite): the
            # cached actor is stale until a patch sends the value, even one that changes
            # nothing in the row, which still applies and announces it.
            async with services.sessions() as session, session.begin():
                row = await session.get(ApiKey, key_id(token))
                assert row is not None
                row.limits = Limits(max_concurrent=3).to_json()
            async with asyncio.timeout(T):
                assert (await auth.authenticate(token)).key_limits.max_concurrent is None
            same = {"limits": {"max_concurrent": 3}}
            assert (await call(client, "PATCH", path, admin, same))[0] == 200
            await announced(seen, key_id(token).encode())
            async with asyncio.timeout(T):
                assert (await auth.authenticate(token)).key_limits.max_concurrent == 3
        finally:
            await unsubscribe()


async def test_limits_set_on_one_gateway_reach_another_without_restart(
    db_url: str, tmp_path: Path
) -> None:
    # PostgreSQL replicas hear the change (NOTIFY), so their cache may live long; SQLite
    # has no cross-process channel, so a second gateway on the file sees it when its
    # cache entry expires (AIBRIDGE_AUTH_CACHE_TTL).
    postgres = db_url.startswith("postgresql")
    ttl = 3600 if postgres else 0.5
    overrides = {"auth_cache_ttl": ttl}
    async with (
        admin_gateway(db_url, tmp_path / "a", settings_overrides=overrides) as (ca, _sa, admin),
        gateway(db_url, tmp_path / "b", settings_overrides=overrides) as (cb, sb),
    ):
        _user, token = await new_user(ca, admin, "bob")
        status, me = await call(cb, "GET", "/api/v1/me", token)
        assert status == 200, me
        assert me["limits"] == ALL_NULL

        patch = {"limits": {"max_concurrent": 3, "allowed_models": ["claude-*"]}}
        assert (await call(ca, "PATCH", "/api/v1/users/bob", admin, patch))[0] == 200
        want = Limits(max_concurrent=3, allowed_models=("claude-*",))

        async def b_sees_the_user_limits() -> bool:
            return (await sb.authenticator.authenticate(token)).user_limits == want

        await poll(b_sees_the_user_limits, T, "gateway B's actor to carry the user's limits")
        # Separately: a key's change must reach B on its own announcement.
        key_patch = {"limits": {"tokens_per_minute": 500}}
        path = f"/api/v1/users/bob/keys/{key_id(token)}"
        assert (await call(ca, "PATCH", path, admin, key_patch))[0] == 200

        async def b_sees_it() -> bool:
            actor = await sb.authenticator.authenticate(token)
            return actor.user_limits == want and actor.key_limits == Limits(tokens_per_minute=500)

        await poll(b_sees_it, T, "gateway B's actor to carry the new limits")
        status, me = await call(cb, "GET", "/api/v1/me", token)
        assert me["limits"] == {**ALL_NULL, "max_concurrent": 3, "allowed_models": ["claude-*"]}
        assert me["key_limits"] == {**ALL_NULL, "tokens_per_minute": 500}


@pytest.mark.parametrize("setting", ["requests_per_minute", "allowed_models"])
async def test_stored_limits_that_no_longer_validate_are_ignored_not_fatal(
    db_url: str, tmp_path: Path, setting: str
) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, services, admin):
        _user, token = await new_user(client, admin, "bob")
        bad: dict[str, Any] = {"requests_per_minute": -1, "allowed_models": "claude-*"}
        async with services.sessions() as s, s.begin():
            user = (await s.execute(select(User).where(User.username == "bob"))).scalar_one()
            user.limits = {setting: bad[setting]}
        services.authenticator.invalidate()
        status, me = await call(client, "GET", "/api/v1/me", token)
        assert status == 200, me
        assert me["limits"] == ALL_NULL
        status, body = await call(client, "GET", "/api/v1/users/bob", admin)
        assert status == 200
        assert body["limits"] == ALL_NULL
