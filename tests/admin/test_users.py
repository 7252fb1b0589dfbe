"""Users and API keys through the real gateway app (SQLite file and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select, update

from aibridge.server import Services
from aibridge.store import users as repo
from aibridge.store.db import create_engine, migrate, session_factory
from aibridge.store.models import ApiKey, AuditLog, User
from aibridge.store.pubsub import API_KEYS_CHANGED
from aibridge.store.types import utcnow
from aibridge.store.urls import normalize_database_url
from aibridge.testing.gateway import TOKEN_RE, announced_admin_token, gateway
from tests.admin.api_client import bounded_gateway

T = 20  # seconds: upper bound for any single await that could hang


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(
    client: TestClient,
    method: str,
    path: str,
    token: str | None = None,
    json: Any = None,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One request; returns (status, parsed JSON body or None)."""
    hdrs = dict(headers or {})
    if token is not None:
        hdrs.update(bearer(token))
    async with asyncio.timeout(T):
        resp = await client.request(method, path, json=json, data=data, headers=hdrs)
        raw = await resp.read()
    body = None
    if raw:
        assert resp.content_type == "application/json", raw
        body = await resp.json()
    return resp.status, body


@asynccontextmanager
async def started(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[TestClient, Services, str]]:
    """The gateway on a fresh database, plus the first admin's token it announced."""
    announced: list[str] = []
    async with bounded_gateway(db_url, tmp_path, announced=announced) as (client, services):
        assert len(announced) == 1, announced
        yield client, services, announced_admin_token(announced)


async def new_user(
    client: TestClient, admin: str, username: str = "bob", role: str = "member"
) -> tuple[dict[str, Any], str]:
    """Create a user and a key through the API; return (user json, token)."""
    status, user = await call(
        client,
        "POST",
        "/api/v1/users",
        admin,
        {"username": username, "email": f"{username}@example.com", "role": role},
    )
    assert status == 201, user
    status, key = await call(
        client, "POST", f"/api/v1/users/{username}/keys", admin, {"name": "laptop"}
    )
    assert status == 201, key
    return user, key["token"]


class RecordingPubSub:
    """Records publishes without delivering them, so only local invalidation can act."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, channel: str, payload: bytes = b"") -> None:
        self.published.append((channel, payload))

    async def subscribe(self, channel: str, callback: Any) -> Any:
        raise AssertionError("not used")

    async def close(self) -> None:
        return None


def record_publishes(services: Services) -> RecordingPubSub:
    recorder = RecordingPubSub()
    services.pubsub.publish = recorder.publish  # type: ignore[method-assign]
    return recorder


async def audit_rows(services: Services) -> list[AuditLog]:
    async with services.sessions() as s:
        return list((await s.execute(select(AuditLog).order_by(AuditLog.created_at))).scalars())


# --- bootstrap ----------------------------------------------------------------------


async def test_first_start_prints_admin_token_second_start_does_not(
    db_url: str, tmp_path: Path
) -> None:
    async with started(db_url, tmp_path) as (client, _services, token):
        status, me = await call(client, "GET", "/api/v1/me", token)
        assert status == 200, me
        assert me["username"] == "admin"
        assert me["role"] == "admin"
        status, keys = await call(client, "GET", "/api/v1/me/keys", token)
        assert [k["name"] for k in keys] == ["bootstrap"]
    announced: list[str] = []
    async with asyncio.timeout(T), gateway(db_url, tmp_path, announced=announced) as (client, _):
        assert announced == []
        status, me = await call(client, "GET", "/api/v1/me", token)
        assert status == 200
        assert me["username"] == "admin"


async def test_ensure_first_admin_concurrent_replicas(db_url: str) -> None:
    """Two "replicas" (separate engines) bootstrapping an empty database at once."""
    url = normalize_database_url(db_url)
    engines = [create_engine(url) for _ in range(3)]
    try:
        await migrate(engines[0])
        async with asyncio.timeout(T):
            results = await asyncio.gather(
                *(repo.ensure_first_admin(session_factory(e)) for e in engines)
            )
        assert sum(r is not None for r in results) == 1, results
        async with session_factory(engines[0])() as s:
            users = list((await s.execute(select(User))).scalars())
            keys = list((await s.execute(select(ApiKey))).scalars())
        assert [(u.username, u.role) for u in users] == [("admin", "admin")]
        assert [k.name for k in keys] == ["bootstrap"]
        async with asyncio.timeout(T):
            assert await repo.ensure_first_admin(session_factory(engines[1])) is None
    finally:
        for e in engines:
            await e.dispose()


# --- users and keys -----------------------------------------------------------------


async def test_create_user_and_key_token_works(db_url: str, tmp_path: Path) -> None:
    async with started(db_url, tmp_path) as (client, _services, admin):
        user, token = await new_user(client, admin)
        assert user["username"] == "bob"
        assert user["role"] == "member"
        assert user["status"] == "active"
        assert user["email"] == "bob@example.com"
        assert TOKEN_RE.fullmatch(token)
        status, me = await call(client, "GET", "/api/v1/me", token)
        assert status == 200
        assert me["id"] == user["id"]
        assert me["username"] == "bob"
        # X-Api-Key works too (what the Anthropic SDK sends).
        status, me = await call(client, "GET", "/api/v1/me", headers={"X-Api-Key": token})
        assert status == 200
        assert me["username"] == "bob"
        # Lookup by id and by username; listing ordered by username.
        status, by_id = await call(client, "GET", f"/api/v1/users/{user['id']}", admin)
        assert status == 200
        assert by_id == user
        status, listed = await call(client, "GET", "/api/v1/users", admin)
        assert [u["username"] for u in listed] == ["admin", "bob"]


async def test_a_created_key_returns_its_token_once_with_its_expiry(
    db_url: str, tmp_path: Path
) -> None:
    async with started(db_url, tmp_path) as (client, _services, admin):
        await new_user(client, admin)
        status, key = await call(
            client, "POST", "/api/v1/users/bob/keys", admin, {"expires_in_days": 7}
        )
        assert status == 201, key
        assert set(key) >= {"id", "name", "created_at", "expires_at", "token"}
        assert key["token"].startswith(f"aib-{key['id']}-")
        assert key["name"] == ""
        assert key["expires_at"] is not None
        expires = "2099-01-02T03:04:05Z"
        status, key2 = await call(
            client, "POST", "/api/v1/users/bob/keys", admin, {"name": "ci", "expires_at": expires}
        )
        assert status == 201, key2
        assert key2["expires_at"] == expires
        status, _me = await call(client, "GET", "/api/v1/me", key2["token"])
        assert status == 200


async def test_key_listings_never_show_secrets(db_url: str, tmp_path: Path) -> None:
    async with started(db_url, tmp_path) as (client, _services, admin):
        _user, token = await new_user(client, admin)
        secret = token.split("-", 2)[2]
        for path, who in (("/api/v1/users/bob/keys", admin), ("/api/v1/me/keys", token)):
            async with asyncio.timeout(T):
                resp = await client.get(path, headers=bearer(who))
                raw = await resp.text()
            assert resp.status == 200
            assert secret not in raw
            assert "sha256" not in raw
            assert "hash" not in raw
            # As a key ("tokens_per_minute" is a limit, not a token).
            assert '"token"' not in raw
            keys = await resp.json()
            assert [k["name"] for k in keys] == ["laptop"]
            assert keys[0]["status"] == "active"


async def test_revoke_is_immediate_and_idempotent(db_url: str, tmp_path: Path) -> None:
    async with started(db_url, tmp_path) as (client, services, admin):
        _user, token = await new_user(client, admin)
        key_id = token.split("-")[1]
        assert (await call(client, "GET", "/api/v1/me", token))[0] == 200  # now cached
        recorder = record_publishes(services)
        status, body = await call(client, "DELETE", f"/api/v1/users/bob/keys/{key_id}", admin)
        assert (status, body) == (204, None)
        assert recorder.published == [(API_KEYS_CHANGED, key_id.encode())]
        status, body = await call(client, "GET", "/api/v1/me", token)
        assert status == 401
        assert "revoked" in body["detail"]
        status, _ = await call(client, "DELETE", f"/api/v1/users/bob/keys/{key_id}", admin)
        assert status == 204
        status, keys = await call(client, "GET", "/api/v1/users/bob/keys", admin)
        assert keys[0]["status"] == "revoked"
        assert keys[0]["revoked_at"] is not None
        revokes = [r for r in await audit_rows(services) if r.action == "revoke"]
        assert len(revokes) == 1
        assert revokes[0].resource_type == "api_key"
        assert revokes[0].resource_id == key_id


async def test_revoking_an_unknown_or_another_users_key_is_404_and_revokes_nothing(
    db_url: str, tmp_path: Path
) -> None:
    async with started(db_url, tmp_path) as (client, _services, admin):
        _bob, bob_token = await new_user(client, admin, "bob")
        await new_user(client, admin, "carol")
        bob_key = bob_token.split("-")[1]
        status, body = await call(client, "DELETE", "/api/v1/users/bob/keys/nope", admin)
        assert status == 404
        assert body["message"] == "API key not found."
        # Bob's key under Carol's path: not found, and not revoked.
        status, _ = await call(client, "DELETE", f"/api/v1/users/carol/keys/{bob_key}", admin)
        assert status == 404
        assert (await call(client, "GET", "/api/v1/me", bob_token))[0] == 200
        status, _ = await call(client, "DELETE", f"/api/v1/users/nobody/keys/{bob_key}", admin)
        assert status == 404


async def test_suspend_is_immediate_and_activate_restores(db_url: str, tmp_path: Path) -> None:
    async with started(db_url, tmp_path) as (client, services, admin):
        _user, token = await new_user(client, admin)
        assert (await call(client, "GET", "/api/v1/me", token))[0] == 200  # now cached
        recorder = record_publishes(services)
        status, user = await call(
            client, "PATCH", "/api/v1/users/bob", admin, {"status": "suspended"}
        )
        assert status == 200, user
        assert user["status"] == "suspended"
        assert recorder.published == [(API_KEYS_CHANGED, f"user:{user['id']}".encode())]
        status, body = await call(client, "GET", "/api/v1/me", token)
        assert status == 401
        assert "suspended" in body["detail"]
        status, user = await call(client, "PATCH", "/api/v1/users/bob", admin, {"status": "active"})
        assert status == 200
        assert (await call(client, "GET", "/api/v1/me", token))[0] == 200
        updates = [r for r in await audit_rows(services) if r.action == "update"]
        assert [r.diff["status"] for r in updates] == [
            {"old": "active", "new": "suspended"},
            {"old": "suspended", "new": "active"},
        ]


async def test_role_change_is_immediate(db_url: str, tmp_path: Path) -> None:
    async with started(db_url, tmp_path) as (client, services, admin):
        _user, token = await new_user(client, admin, "bob", role="admin")
        assert (await call(client, "GET", "/api/v1/users", token))[0] == 200
        record_publishes(services)
        status, _ = await call(client, "PATCH", "/api/v1/users/bob", admin, {"role": "member"})
        assert status == 200
        assert (await call(client, "GET", "/api/v1/users", token))[0] == 403


async def test_expired_key_is_401(db_url: str, tmp_path: Path) -> None:
    async with started(db_url, tmp_path) as (client, services, admin):
        _user, token = await new_user(client, admin)
        key_id = token.split("-")[1]
        async with services.sessions() as s, s.begin():
            await s.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id)
                .values(expires_at=utcnow() - timedelta(minutes=1))
            )
        status, body = await call(client, "GET", "/api/v1/me", token)
        assert status == 401
        assert "expired" in body["detail"]
        status, keys = await call(client, "GET", "/api/v1/users/bob/keys", admin)
        assert keys[0]["status"] == "expired"


# --- authorization ------------------------------------------------------------------


async def test_admin_routes_are_401_without_a_key_and_403_for_members(
    db_url: str, tmp_path: Path
) -> None:
    async with started(db_url, tmp_path) as (client, _services, admin):
        _user, member = await new_user(client, admin)
        key_id = member.split("-")[1]
        admin_routes = [
            ("GET", "/api/v1/users", None),
            ("POST", "/api/v1/users", {"username": "eve"}),
            ("GET", "/api/v1/users/admin", None),
            ("PATCH", "/api/v1/users/admin", {"role": "member"}),
            ("GET", "/api/v1/users/bob/keys", None),
            ("POST", "/api/v1/users/bob/keys", {"name": "x"}),
            ("DELETE", f"/api/v1/users/bob/keys/{key_id}", None),
        ]
        for method, path, body in admin_routes:
            status, err = await call(client, method, path, member, body)
            assert status == 403, (method, path, err)
            assert err["message"] == "Forbidden."
            status, err = await call(client, method, path, None, body)
            assert status == 401, (method, path, err)
            assert "missing" in err["detail"]
        for garbage in ("garbage", "aib-zz-", f"aib-{key_id}-wrong", "aib-000000000000-x"):
            status, err = await call(client, "GET", "/api/v1/me", garbage)
            assert status == 401, garbage
            assert err["message"] == "Unauthorized."
        assert (await call(client, "GET", "/api/v1/me"))[0] == 401
        # The member's key still works for its own endpoints, and nothing changed.
        assert (await call(client, "GET", "/api/v1/me", member))[0] == 200
        assert (await call(client, "GET", "/api/v1/me/keys", member))[0] == 200
        status, users = await call(client, "GET", "/api/v1/users", admin)
        assert [u["username"] for u in users] == ["admin", "bob"]
        status, me = await call(client, "GET", "/api/v1/me", member)
        assert me["status"] == "active"


async def test_the_last_active_admin_cannot_be_demoted_but_one_of_two_can(
    db_url: str, tmp_path: Path
) -> None:
    async with started(db_url, tmp_path) as (client, services, admin):
        for body in ({"status": "suspended"}, {"role": "member"}):
            status, err = await call(client, "PATCH", "/api/v1/users/admin", admin, body)
            assert status == 400, err
            assert err["message"] == "Cannot remove the last active admin."
            assert "last active admin" in err["detail"]
        assert (await call(client, "GET", "/api/v1/users", admin))[0] == 200
        # With a second active admin, the first may step down.
        await new_user(client, admin, "root2", role="admin")
        status, user = await call(client, "PATCH", "/api/v1/users/admin", admin, {"role": "member"})
        assert status == 200, user
        assert user["role"] == "member"
        assert (await call(client, "GET", "/api/v1/users", admin))[0] == 403
        assert not [r for r in await audit_rows(services) if r.status_code >= 400]


async def test_suspended_second_admin_does_not_count(db_url: str, tmp_path: Path) -> None:
    async with started(db_url, tmp_path) as (client, _services, admin):
        await new_user(client, admin, "root2", role="admin")
        status, _ = await call(
            client, "PATCH", "/api/v1/users/root2", admin, {"status": "suspended"}
        )
        assert status == 200
        status, err = await call(client, "PATCH", "/api/v1/users/admin", admin, {"role": "member"})
        assert status == 400, err


# --- validation ---------------------------------------------------------------------


async def test_invalid_users_get_a_400_per_field_and_a_duplicate_a_409(
    db_url: str, tmp_path: Path
) -> None:
    async with started(db_url, tmp_path) as (client, _services, admin):
        cases: list[tuple[Any, dict[str, str]]] = [
            ({}, {"username": "required"}),
            ({"username": "Bob"}, {"username": "must match"}),
            ({"username": "-bob"}, {"username": "must match"}),
            ({"username": "a" * 64}, {"username": "must match"}),
            ({"username": 7}, {"username": "required"}),
            ({"username": "bob", "role": "owner"}, {"role": "admin, member"}),
            ({"username": "bob", "role": 1}, {"role": "must be one of"}),
            ({"username": "bob", "email": "not-an-email"}, {"email": "not a valid address"}),
            ({"username": "bob", "email": None}, {"email": "must be a string"}),
            ({"username": "bob", "nmae": "x"}, {"nmae": "unknown field"}),
            ({"username": "bob", "status": "active"}, {"status": "unknown field"}),
        ]
        for body, expected in cases:
            status, err = await call(client, "POST", "/api/v1/users", admin, body)
            assert status == 400, (body, err)
            assert err["message"] == "Invalid user request."
            got = {v["field"]: v["detail"] for v in err["validations"]}
            assert set(got) == set(expected), (body, got)
            for field, fragment in expected.items():
                assert fragment in got[field], (body, got)
        # Non-JSON and non-object bodies.
        status, err = await call(client, "POST", "/api/v1/users", admin, data=b"{nope")
        assert status == 400
        assert "JSON" in err["message"]
        status, err = await call(client, "POST", "/api/v1/users", admin, [1, 2])
        assert status == 400
        status, err = await call(client, "POST", "/api/v1/users", admin, data=b"")
        assert status == 400
        # Nothing was created by any of that.
        status, users = await call(client, "GET", "/api/v1/users", admin)
        assert [u["username"] for u in users] == ["admin"]
        # Valid edge names; then a duplicate is 409.
        for name in ("a", "0.x_y-z", "a" * 63):
            assert (await call(client, "POST", "/api/v1/users", admin, {"username": name}))[
                0
            ] == 201
        status, err = await call(client, "POST", "/api/v1/users", admin, {"username": "a"})
        assert status == 409
        assert err["message"] == "User already exists."


async def test_invalid_user_patches_get_a_400_and_unknown_users_a_404(
    db_url: str, tmp_path: Path
) -> None:
    async with started(db_url, tmp_path) as (client, _services, admin):
        await new_user(client, admin)
        cases: list[tuple[Any, str]] = [
            ({"status": "banned"}, "status"),
            ({"status": True}, "status"),
            ({"role": "root"}, "role"),
            ({"email": "x@"}, "email"),
            ({"email": 5}, "email"),
            ({"username": "robert"}, "username"),
            ({"colour": "red"}, "colour"),
        ]
        for body, field in cases:
            status, err = await call(client, "PATCH", "/api/v1/users/bob", admin, body)
            assert status == 400, (body, err)
            assert [v["field"] for v in err["validations"]] == [field], err
        status, err = await call(client, "PATCH", "/api/v1/users/bob", admin, {})
        assert status == 400
        assert err["message"] == "At least one field must be provided."
        status, _ = await call(client, "PATCH", "/api/v1/users/nobody", admin, {"role": "admin"})
        assert status == 404
        status, _ = await call(client, "GET", "/api/v1/users/nobody", admin)
        assert status == 404
        status, _ = await call(client, "GET", "/api/v1/users/NOT%20A%20NAME", admin)
        assert status == 404
        # A valid e-mail change (and clearing it) works.
        status, user = await call(
            client, "PATCH", "/api/v1/users/bob", admin, {"email": "robert@example.org"}
        )
        assert (status, user["email"]) == (200, "robert@example.org")
        status, user = await call(client, "PATCH", "/api/v1/users/bob", admin, {"email": ""})
        assert (status, user["email"]) == (200, "")


async def test_invalid_key_requests_get_a_400_per_field_and_create_nothing(
    db_url: str, tmp_path: Path
) -> None:
    async with started(db_url, tmp_path) as (client, _services, admin):
        await new_user(client, admin)
        past = (utcnow() - timedelta(minutes=1)).isoformat()
        cases: list[tuple[Any, str, str]] = [
            ({"expires_at": past}, "expires_at", "future"),
            ({"expires_at": "tomorrow"}, "expires_at", "RFC 3339"),
            ({"expires_at": "2099-01-01T00:00:00"}, "expires_at", "timezone"),
            ({"expires_at": 12345}, "expires_at", "string"),
            ({"expires_in_days": 0}, "expires_in_days", "integer"),
            ({"expires_in_days": -3}, "expires_in_days", "integer"),
            ({"expires_in_days": 1.5}, "expires_in_days", "integer"),
            ({"expires_in_days": True}, "expires_in_days", "integer"),
            ({"expires_in_days": "7"}, "expires_in_days", "integer"),
            ({"expires_in_days": 99999}, "expires_in_days", "integer"),
            (
                {"expires_in_days": 1, "expires_at": "2099-01-01T00:00:00Z"},
                "expires_in_days",
                "not both",
            ),
            ({"name": 5}, "name", "string"),
            ({"name": "x" * 129}, "name", "at most"),
            ({"name": "a\nb"}, "name", "single line"),
            ({"token": "aib-1-2"}, "token", "unknown field"),
        ]
        for body, field, fragment in cases:
            status, err = await call(client, "POST", "/api/v1/users/bob/keys", admin, body)
            assert status == 400, (body, err)
            assert err["message"] == "Invalid API key request."
            got = {v["field"]: v["detail"] for v in err["validations"]}
            assert list(got) == [field], (body, got)
            assert fragment in got[field], (body, got)
        status, _ = await call(client, "POST", "/api/v1/users/nobody/keys", admin, {"name": "x"})
        assert status == 404
        status, keys = await call(client, "GET", "/api/v1/users/bob/keys", admin)
        assert [k["name"] for k in keys] == ["laptop"]


# --- audit --------------------------------------------------------------------------


async def test_every_admin_write_leaves_an_audit_row_without_secrets(
    db_url: str, tmp_path: Path
) -> None:
    async with started(db_url, tmp_path) as (client, services, admin):
        user, token = await new_user(client, admin)
        key_id = token.split("-")[1]
        await call(client, "PATCH", "/api/v1/users/bob", admin, {"role": "admin"})
        await call(client, "DELETE", f"/api/v1/users/bob/keys/{key_id}", admin)
        rows = await audit_rows(services)
        admin_id = (await call(client, "GET", "/api/v1/me", admin))[1]["id"]
        summary = [(r.action, r.resource_type, r.resource_id) for r in rows]
        assert summary[0][:2] == ("create", "user")  # the bootstrap admin, by "system"
        assert rows[0].actor_username == "system"
        assert summary[1:] == [
            ("create", "user", user["id"]),
            ("create", "api_key", key_id),
            ("update", "user", user["id"]),
            ("revoke", "api_key", key_id),
        ]
        for r in rows[1:]:
            assert r.actor_username == "admin"
            assert str(r.actor_id) == admin_id
        assert rows[3].diff == {"role": {"old": "member", "new": "admin"}}
        secret = token.split("-", 2)[2]
        for r in rows:
            assert secret not in str(r.diff)
            assert "hash" not in str(r.diff)


# --- replicas -----------------------------------------------------------------------


async def test_revoke_and_suspend_reach_other_replica(db_url: str, tmp_path: Path) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("replicas share state through PostgreSQL only")
    async with started(db_url, tmp_path / "a") as (client_a, _sa, admin):
        _user, token = await new_user(client_a, admin, "bob")
        _user2, token2 = await new_user(client_a, admin, "carol")
        async with asyncio.timeout(T), gateway(db_url, tmp_path / "b") as (client_b, sb):
            seen: asyncio.Queue[bytes] = asyncio.Queue()
            unsubscribe = await sb.pubsub.subscribe(
                API_KEYS_CHANGED, lambda payload, _err: seen.put_nowait(payload)
            )
            try:
                # Cache both keys on replica B.
                assert (await call(client_b, "GET", "/api/v1/me", token))[0] == 200
                assert (await call(client_b, "GET", "/api/v1/me", token2))[0] == 200
                key_id = token.split("-")[1]
                status, _ = await call(
                    client_a, "DELETE", f"/api/v1/users/bob/keys/{key_id}", admin
                )
                assert status == 204
                async with asyncio.timeout(T):
                    assert await seen.get() == key_id.encode()
                assert (await call(client_b, "GET", "/api/v1/me", token))[0] == 401
                status, carol = await call(
                    client_a, "PATCH", "/api/v1/users/carol", admin, {"status": "suspended"}
                )
                assert status == 200
                async with asyncio.timeout(T):
                    assert await seen.get() == f"user:{carol['id']}".encode()
                assert (await call(client_b, "GET", "/api/v1/me", token2))[0] == 401
            finally:
                await unsubscribe()


async def test_concurrent_demotions_keep_one_admin(db_url: str) -> None:
    """Two admins demoting each other at the same time (separate "replicas"): one wins."""
    url = normalize_database_url(db_url)
    engines = [create_engine(url) for _ in range(2)]
    try:
        await migrate(engines[0])
        factories = [session_factory(e) for e in engines]
        async with factories[0]() as s, s.begin():
            await repo.create_user(s, "a1", role="admin")
            await repo.create_user(s, "a2", role="admin")

        async def demote(sessions: Any, name: str) -> str:
            try:
                async with sessions() as s, s.begin():
                    user = await repo.require_user(s, name)
                    await repo.update_user(s, user, role="member")
            except repo.LastAdminError:
                return "refused"
            return "done"

        async with asyncio.timeout(T):
            results = await asyncio.gather(demote(factories[0], "a1"), demote(factories[1], "a2"))
        assert sorted(results) == ["done", "refused"]
        async with factories[0]() as s:
            assert await repo.count_active_admins(s) == 1
    finally:
        for e in engines:
            await e.dispose()
