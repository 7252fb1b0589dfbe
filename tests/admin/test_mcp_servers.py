"""The MCP server admin API and the per-user credentials end to end (real app, real SQLite
file and PostgreSQL)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select, text

from aibridge.secrets_mask import mask_secret
from aibridge.server import Services
from aibridge.store import config_version
from aibridge.store import mcp_servers as repo
from aibridge.store.crypto import EncryptionKeyError
from aibridge.store.models import AuditLog
from aibridge.store.pubsub import MCP_CREDENTIALS_CHANGED, MCP_SERVERS_CHANGED
from aibridge.testing.gateway import add_member, admin_gateway, gateway

URL = "/api/v1/mcp-servers"
HEADER_SECRET = "hdr-secret-aaaaaaaaaaaaaaaa1111"
HEADER_SECRET_2 = "hdr-secret-bbbbbbbbbbbbbbbb2222"
TOKEN_BOB = "tok-bob-cccccccccccccccccccc3333"
TOKEN_BOB_2 = "tok-bob-dddddddddddddddddddd4444"
ENC_KEY = "m" * 40
TIMEOUT = 60.0

Client = TestClient[web.Request, web.Application]


async def call(
    client: Client, method: str, path: str, token: str | None, body: Any = None
) -> tuple[int, Any, bytes]:
    """One request (no Authorization header when ``token`` is None); (status, JSON, raw)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        headers["Content-Type"] = "application/json"
    async with asyncio.timeout(TIMEOUT):
        resp = await client.request(method, path, data=data, headers=headers)
        raw = await resp.read()
    return resp.status, (orjson.loads(raw) if raw else None), raw


def fields(body: Any) -> set[str]:
    return {v["field"] for v in body.get("validations", [])}


async def user_id_of(services: Services, token: str) -> uuid.UUID:
    async with asyncio.timeout(TIMEOUT):
        return (await services.authenticator.authenticate(token)).user_id


async def version(services: Services) -> int:
    async with services.sessions() as s:
        return await config_version.read(s)


async def test_a_server_is_created_read_patched_renamed_and_deleted_by_id_or_name(
    db_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, services, token):
        v0 = await version(services)
        status, created, _ = await call(
            client, "POST", URL, token, {"name": "tools", "url": "http://127.0.0.1:9/mcp"}
        )
        assert status == 201, created
        assert created["name"] == "tools" and created["url"] == "http://127.0.0.1:9/mcp"
        assert created["enabled"] is True  # default
        assert created["tool_allow"] is None and created["tool_deny"] is None
        assert created["auth"] == {"type": "none"}  # default
        assert "has_credential" not in created  # only per_user servers have one
        assert created["created_at"].endswith("Z")
        sid = created["id"]
        assert await version(services) == v0 + 1

        for ref in ("tools", sid):
            status, got, _ = await call(client, "GET", f"{URL}/{ref}", token)
            assert status == 200 and got == created

        patch = {
            "url": "https://mcp.example.com/v2/mcp",
            "enabled": False,
            "tool_allow": "^read_",
            "tool_deny": "delete",
            "auth": {"type": "header", "name": "X-Api-Key", "value": HEADER_SECRET},
        }
        status, patched, _ = await call(client, "PATCH", f"{URL}/tools", token, patch)
        assert status == 200, patched
        assert patched["url"] == patch["url"] and patched["enabled"] is False
        assert (patched["tool_allow"], patched["tool_deny"]) == ("^read_", "delete")
        assert patched["auth"] == {
            "type": "header",
            "name": "X-Api-Key",
            "masked": mask_secret(HEADER_SECRET),
        }
        assert await version(services) == v0 + 2

        # A header patch without a value keeps the stored one; null clears a regex; rename.
        status, patched, _ = await call(
            client,
            "PATCH",
            f"{URL}/{sid}",
            token,
            {"name": "tools-2", "tool_allow": None, "auth": {"type": "header", "name": "X-Key"}},
        )
        assert status == 200, patched
        assert patched["name"] == "tools-2" and patched["tool_allow"] is None
        assert patched["tool_deny"] == "delete"
        assert patched["auth"]["name"] == "X-Key"
        assert patched["auth"]["masked"] == mask_secret(HEADER_SECRET)
        async with services.sessions() as s:
            stored = await repo.get_server(s, services.encryptor, uuid.UUID(sid))
        assert stored is not None and stored.auth.header_value == HEADER_SECRET

        # header -> per_user -> none: each change replaces the auth entirely.
        status, patched, _ = await call(
            client, "PATCH", f"{URL}/tools-2", token, {"auth": {"type": "per_user"}}
        )
        assert status == 200 and patched["auth"] == {"type": "per_user"}
        assert patched["has_credential"] is False
        async with services.sessions() as s:
            stored = await repo.get_server(s, services.encryptor, uuid.UUID(sid))
        assert stored is not None and stored.auth.header_value is None
        status, patched, _ = await call(
            client, "PATCH", f"{URL}/tools-2", token, {"auth": {"type": "none"}}
        )
        assert status == 200 and patched["auth"] == {"type": "none"}

        status, listed, _ = await call(client, "GET", URL, token)
        assert status == 200 and [s["id"] for s in listed] == [sid]

        status, _, raw = await call(client, "DELETE", f"{URL}/{sid}", token)
        assert status == 204 and raw == b""
        for method, ref in (("GET", sid), ("GET", "tools-2"), ("DELETE", "tools-2")):
            status, body, _ = await call(client, method, f"{URL}/{ref}", token)
            assert status == 404 and body["message"] == "MCP server not found.", (method, ref)
        status, listed, _ = await call(client, "GET", URL, token)
        assert listed == []

        # Delete by name too.
        body = {"name": "other", "url": "http://127.0.0.1:9/mcp"}
        assert (await call(client, "POST", URL, token, body))[0] == 201
        assert (await call(client, "DELETE", f"{URL}/other", token))[0] == 204
        assert (await call(client, "GET", f"{URL}/other", token))[0] == 404


INVALID_CREATES: list[tuple[dict[str, Any], str]] = [
    ({"url": "http://h/mcp"}, "name"),
    ({"name": "Bad_Name", "url": "http://h/mcp"}, "name"),
    ({"name": "a" * 64, "url": "http://h/mcp"}, "name"),
    ({"name": 7, "url": "http://h/mcp"}, "name"),
    ({"name": "s"}, "url"),
    ({"name": "s", "url": "ftp://h/mcp"}, "url"),
    ({"name": "s", "url": "http://user:pw-sekrit@h/mcp"}, "url"),
    ({"name": "s", "url": "http://h/mcp?key=sekrit"}, "url"),
    ({"name": "s", "url": "http://h/mcp#x"}, "url"),
    ({"name": "s", "url": "http://h/" + "a" * 2048}, "url"),
    ({"name": "s", "url": "not a url"}, "url"),
    ({"name": "s", "url": ["http://h"]}, "url"),
    ({"name": "s", "url": "http://h/mcp", "tool_allow": "("}, "tool_allow"),
    ({"name": "s", "url": "http://h/mcp", "tool_allow": "a" * 1025}, "tool_allow"),
    ({"name": "s", "url": "http://h/mcp", "tool_allow": 5}, "tool_allow"),
    ({"name": "s", "url": "http://h/mcp", "tool_deny": "[z-a]"}, "tool_deny"),
    ({"name": "s", "url": "http://h/mcp", "tool_deny": "a{99999999999}"}, "tool_deny"),
    ({"name": "s", "url": "http://h/mcp", "enabled": "yes"}, "enabled"),
    ({"name": "s", "url": "http://h/mcp", "auth": "none"}, "auth"),
    ({"name": "s", "url": "http://h/mcp", "auth": {"type": "oauth"}}, "auth.type"),
    ({"name": "s", "url": "http://h/mcp", "auth": {"type": "none", "x": 1}}, "auth.x"),
    (
        {"name": "s", "url": "http://h/mcp", "auth": {"type": "header", "value": "v"}},
        "auth.name",
    ),
    (
        {
            "name": "s",
            "url": "http://h/mcp",
            "auth": {"type": "header", "name": "Bad Header", "value": "v"},
        },
        "auth.name",
    ),
    (
        {
            "name": "s",
            "url": "http://h/mcp",
            "auth": {"type": "header", "name": "Content-Type", "value": "v"},
        },
        "auth.name",
    ),
    (
        {"name": "s", "url": "http://h/mcp", "auth": {"type": "header", "name": "X-K"}},
        "auth.value",
    ),
    (
        {
            "name": "s",
            "url": "http://h/mcp",
            "auth": {"type": "header", "name": "X-K", "value": "a\r\nInjected: 1"},
        },
        "auth.value",
    ),
    (
        {
            "name": "s",
            "url": "http://h/mcp",
            "auth": {"type": "header", "name": "X-K", "value": "v" * 8193},
        },
        "auth.value",
    ),
    ({"name": "s", "url": "http://h/mcp", "colour": "red"}, "colour"),
]


async def test_invalid_create_bodies_get_a_400_naming_the_field_and_create_nothing(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(sqlite_url, tmp_path) as (client, services, token):
        v0 = await version(services)
        for body, field in INVALID_CREATES:
            status, resp, raw = await call(client, "POST", URL, token, body)
            assert status == 400, (body, resp)
            assert resp["message"] == "Invalid MCP server request."
            assert fields(resp) == {field}, (body, resp)
            # Messages never repeat a secret or the URL.
            assert b"sekrit" not in raw and b"Injected" not in raw, raw
        status, listed, _ = await call(client, "GET", URL, token)
        assert listed == [] and await version(services) == v0


async def test_invalid_patches_get_a_400_and_change_nothing(db_url: str, tmp_path: Path) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, _services, token):
        status, created, _ = await call(
            client, "POST", URL, token, {"name": "s", "url": "http://h/mcp"}
        )
        assert status == 201
        for body, field in (
            ({"url": "gopher://h"}, "url"),
            ({"name": "UPPER"}, "name"),
            ({"tool_deny": "(?P<"}, "tool_deny"),
            ({"enabled": 1}, "enabled"),
            ({"type": "x"}, "type"),
            # Switching to header auth needs the value (it has none to keep).
            ({"auth": {"type": "header", "name": "X-K"}}, "auth.value"),
        ):
            status, resp, _ = await call(client, "PATCH", f"{URL}/s", token, body)
            assert status == 400, (body, resp)
            assert fields(resp) == {field}, resp
        status, resp, _ = await call(client, "PATCH", f"{URL}/s", token, {})
        assert status == 400 and resp["message"] == "At least one field must be provided."
        for raw_body in (b"", b"not json", b"[1]"):
            status, resp, _ = await call(client, "PATCH", f"{URL}/s", token, raw_body or None)
            assert status == 400, raw_body
        status, resp, _ = await call(client, "GET", f"{URL}/Not_A_Name", token)
        assert status == 400 and "Invalid MCP server id or name" in resp["message"]
        status, got, _ = await call(client, "GET", f"{URL}/s", token)
        assert got == created


async def test_a_duplicate_name_is_a_409_on_create_and_on_rename(
    db_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, _services, token):
        for name in ("a", "b"):
            body = {"name": name, "url": "http://h/mcp"}
            assert (await call(client, "POST", URL, token, body))[0] == 201
        status, resp, _ = await call(
            client, "POST", URL, token, {"name": "a", "url": "http://other/mcp"}
        )
        assert status == 409 and resp["message"] == 'MCP server "a" already exists.'
        status, resp, _ = await call(client, "PATCH", f"{URL}/b", token, {"name": "a"})
        assert status == 409, resp
        status, listed, _ = await call(client, "GET", URL, token)
        assert [(s["name"], s["url"]) for s in listed] == [
            ("a", "http://h/mcp"),
            ("b", "http://h/mcp"),
        ]


async def test_server_routes_are_401_without_a_key_and_403_for_members(
    db_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, services, token):
        body = {"name": "p", "url": "http://h/mcp", "auth": {"type": "per_user"}}
        status, created, _ = await call(client, "POST", URL, token, body)
        assert status == 201
        member = await add_member(services)
        requests: list[tuple[str, str, Any]] = [
            ("GET", URL, None),
            ("POST", URL, {"name": "m", "url": "http://h/mcp"}),
            ("GET", f"{URL}/p", None),
            ("PATCH", f"{URL}/p", {"enabled": False}),
            ("DELETE", f"{URL}/p", None),
        ]
        for method, path, req_body in requests:
            status, resp, _ = await call(client, method, path, None, req_body)
            assert status == 401 and resp["message"] == "Unauthorized.", (method, path)
            status, _, _ = await call(client, method, path, token + "x", req_body)
            assert status == 401, (method, path)
            status, resp, _ = await call(client, method, path, member, req_body)
            assert status == 403 and resp["message"] == "Forbidden.", (method, path)
        # The credential routes need a key but no role.
        cred = f"{URL}/p/credentials"
        for method, req_body in (("GET", None), ("PUT", {"token": TOKEN_BOB}), ("DELETE", None)):
            status, _, _ = await call(client, method, cred, None, req_body)
            assert status == 401, method
        status, got, _ = await call(client, "GET", f"{URL}/p", token)
        assert got == created


async def test_each_user_sets_their_own_token_which_is_never_readable_back(
    db_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, services, admin):
        bob = await add_member(services, "bob")
        carol = await add_member(services, "carol")
        bob_id, carol_id = await user_id_of(services, bob), await user_id_of(services, carol)
        per_user = {"name": "gh", "url": "http://h/mcp", "auth": {"type": "per_user"}}
        status, server, _ = await call(client, "POST", URL, admin, per_user)
        assert status == 201 and server["has_credential"] is False
        header = {
            "name": "shared",
            "url": "http://h/mcp",
            "auth": {"type": "header", "name": "Authorization", "value": HEADER_SECRET},
        }
        assert (await call(client, "POST", URL, admin, header))[0] == 201
        cred = f"{URL}/gh/credentials"

        status, got, _ = await call(client, "GET", cred, bob)
        assert status == 200 and got == {
            "server_id": server["id"],
            "server": "gh",
            "has_credential": False,
        }
        status, got, raw = await call(client, "PUT", cred, bob, {"token": TOKEN_BOB})
        assert status == 200, got
        assert got["has_credential"] is True and got["updated_at"].endswith("Z")
        assert TOKEN_BOB.encode() not in raw and TOKEN_BOB[-4:].encode() not in raw
        status, got, raw = await call(client, "GET", cred, bob)
        assert got["has_credential"] is True and TOKEN_BOB[-4:].encode() not in raw
        # Replace it; carol's status is her own.
        assert (await call(client, "PUT", cred, bob, {"token": TOKEN_BOB_2}))[0] == 200
        status, got, _ = await call(client, "GET", cred, carol)
        assert got["has_credential"] is False
        # The admin's view of the server says whether *the admin* has one.
        status, got, _ = await call(client, "GET", f"{URL}/gh", admin)
        assert got["has_credential"] is False
        assert (await call(client, "PUT", cred, admin, {"token": "admin-token-0001"}))[0] == 200
        status, listed, _ = await call(client, "GET", URL, admin)
        assert {s["name"]: s.get("has_credential") for s in listed} == {
            "gh": True,
            "shared": None,
        }

        assert dict(await services.mcp_user_tokens(bob_id)) == {
            uuid.UUID(server["id"]): TOKEN_BOB_2
        }
        assert dict(await services.mcp_user_tokens(carol_id)) == {}

        # 409 for a server that does not take per-user tokens, 404 for an unknown one.
        status, resp, _ = await call(
            client, "PUT", f"{URL}/shared/credentials", bob, {"token": TOKEN_BOB}
        )
        assert status == 409 and "does not take per-user credentials" in resp["message"]
        status, resp, _ = await call(
            client, "PUT", f"{URL}/nope/credentials", bob, {"token": TOKEN_BOB}
        )
        assert status == 404
        for body, field in (
            ({}, "token"),
            ({"token": ""}, "token"),
            ({"token": 5}, "token"),
            ({"token": "t" * 8193}, "token"),
            ({"token": "line\nbreak"}, "token"),
            ({"token": " padded "}, "token"),
            ({"token": "ok-token", "user": "carol"}, "user"),
        ):
            status, resp, _ = await call(client, "PUT", cred, carol, body)
            assert status == 400 and fields(resp) == {field}, (body, resp)
        assert dict(await services.mcp_user_tokens(carol_id)) == {}

        # A disabled server's token is kept but not loaded.
        assert (await call(client, "PATCH", f"{URL}/gh", admin, {"enabled": False}))[0] == 200
        assert dict(await services.mcp_user_tokens(bob_id)) == {}
        assert (await call(client, "PATCH", f"{URL}/gh", admin, {"enabled": True}))[0] == 200
        assert len(await services.mcp_user_tokens(bob_id)) == 1

        status, _, raw = await call(client, "DELETE", cred, bob)
        assert status == 204 and raw == b""
        status, resp, _ = await call(client, "DELETE", cred, bob)
        assert status == 404 and resp["message"] == "MCP credential not found."
        assert dict(await services.mcp_user_tokens(bob_id)) == {}

        # Leaving per_user drops every user's token (the admin's here), with an audit note.
        status, _, _ = await call(client, "PATCH", f"{URL}/gh", admin, {"auth": {"type": "none"}})
        assert status == 200
        admin_id = await user_id_of(services, admin)
        assert dict(await services.mcp_user_tokens(admin_id)) == {}
        async with services.sessions() as s:
            update = (
                await s.scalars(
                    select(AuditLog)
                    .where(AuditLog.resource_type == "mcp_server", AuditLog.action == "update")
                    .order_by(AuditLog.created_at.desc())
                )
            ).first()
        assert update is not None and update.diff["credentials_dropped"] == 1
        status, _, _ = await call(
            client, "PATCH", f"{URL}/gh", admin, {"auth": {"type": "per_user"}}
        )
        assert dict(await services.mcp_user_tokens(admin_id)) == {}, "a dropped token came back"


async def test_secrets_never_appear_in_responses_audit_rows_or_logs(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The gateway's own loggers and aiohttp's (the database driver's DEBUG log prints SQL
    # parameters, so a secret stored without an encryption key shows there by design).
    for name in ("aibridge", "aiohttp"):
        caplog.set_level(logging.DEBUG, logger=name)
    bodies: list[bytes] = []
    async with admin_gateway(db_url, tmp_path) as (client, services, admin):
        bob = await add_member(services)

        async def req(method: str, path: str, token: str, body: Any = None) -> Any:
            status, parsed, raw = await call(client, method, path, token, body)
            bodies.append(raw)
            assert status < 300, (method, path, parsed)
            return parsed

        auth = {"type": "header", "name": "Authorization", "value": HEADER_SECRET}
        await req("POST", URL, admin, {"name": "h", "url": "http://h/mcp", "auth": auth})
        await req("GET", URL, admin)
        await req("GET", f"{URL}/h", admin)
        auth2 = {"type": "header", "name": "Authorization", "value": HEADER_SECRET_2}
        await req("PATCH", f"{URL}/h", admin, {"auth": auth2})
        await req("PATCH", f"{URL}/h", admin, {"auth": {"type": "per_user"}})
        await req("PUT", f"{URL}/h/credentials", bob, {"token": TOKEN_BOB})
        await req("GET", f"{URL}/h/credentials", bob)
        await req("PUT", f"{URL}/h/credentials", bob, {"token": TOKEN_BOB_2})
        await req("DELETE", f"{URL}/h/credentials", bob)
        await req("DELETE", f"{URL}/h", admin)

        async with services.sessions() as s:
            audit = (await s.scalars(select(AuditLog).order_by(AuditLog.created_at))).all()
        secrets = (HEADER_SECRET, HEADER_SECRET_2, TOKEN_BOB, TOKEN_BOB_2)
        dumped = orjson.dumps([r.diff for r in audit])
        logged = "\n".join(
            f"{r.getMessage()} {r.__dict__}"
            for r in caplog.records
            if r.name.startswith(("aibridge", "aiohttp"))
        )
        assert logged, "nothing was logged: the check below would be vacuous"
        for secret in secrets:
            assert all(secret.encode() not in raw for raw in bodies), secret
            assert secret.encode() not in dumped, secret
            assert secret not in logged, secret
        server_rows = [r for r in audit if r.resource_type == "mcp_server"]
        assert [r.action for r in server_rows] == ["create", "update", "update", "delete"]
        assert server_rows[0].diff["auth"]["masked"] == mask_secret(HEADER_SECRET)
        changes = server_rows[1].diff["changes"]["auth"]
        assert changes["old"]["masked"] == mask_secret(HEADER_SECRET)
        assert changes["new"]["masked"] == mask_secret(HEADER_SECRET_2)
        cred_rows = [r for r in audit if r.resource_type == "mcp_user_credential"]
        assert [r.action for r in cred_rows] == ["create", "update", "delete"]
        assert all(r.actor_username == "bob" for r in cred_rows)
        assert cred_rows[0].diff["masked"] == mask_secret(TOKEN_BOB)


async def test_header_values_and_tokens_are_encrypted_at_rest_and_need_the_key(
    db_url: str, tmp_path: Path
) -> None:
    auth = {"type": "header", "name": "X-Api-Key", "value": HEADER_SECRET}
    async with admin_gateway(db_url, tmp_path, encryption_key=ENC_KEY) as (
        client,
        services,
        admin,
    ):
        bob = await add_member(services)
        bob_id = await user_id_of(services, bob)
        assert (
            await call(client, "POST", URL, admin, {"name": "h", "url": "http://h/m", "auth": auth})
        )[0] == 201
        per_user = {"name": "p", "url": "http://h/m", "auth": {"type": "per_user"}}
        assert (await call(client, "POST", URL, admin, per_user))[0] == 201
        assert (await call(client, "PUT", f"{URL}/p/credentials", bob, {"token": TOKEN_BOB}))[
            0
        ] == 200
        async with services.engine.connect() as conn:
            server_rows = (
                await conn.execute(text("SELECT name, auth, auth_key_id FROM mcp_servers"))
            ).all()
            cred_rows = (
                await conn.execute(
                    text("SELECT credential, credential_key_id FROM mcp_user_credentials")
                )
            ).all()
        assert services.encryptor is not None
        stored = {name: (value, key_id) for name, value, key_id in server_rows}
        assert stored["p"] == (None, None)
        value, key_id = stored["h"]
        assert value is not None and HEADER_SECRET not in value and "X-Api-Key" not in value
        assert key_id == services.encryptor.key_id
        assert len(cred_rows) == 1
        assert TOKEN_BOB not in cred_rows[0][0]
        assert cred_rows[0][1] == services.encryptor.key_id

    # The stored secrets refuse a start without the key, or with another one.
    with pytest.raises(EncryptionKeyError, match="AIBRIDGE_ENCRYPTION_KEY"):
        async with gateway(db_url, tmp_path):
            pass
    with pytest.raises(EncryptionKeyError, match="AIBRIDGE_ENCRYPTION_KEY"):
        async with gateway(db_url, tmp_path, encryption_key="z" * 40):
            pass

    async with gateway(db_url, tmp_path, encryption_key=ENC_KEY) as (client, services):
        status, got, _ = await call(client, "GET", f"{URL}/h", admin)
        assert status == 200 and got["auth"]["masked"] == mask_secret(HEADER_SECRET)
        assert dict(await services.mcp_user_tokens(bob_id)) != {}
        (header_server,) = [s for s in services.pool.snapshot.mcp_servers if s.name == "h"]
        assert header_server.header_name == "X-Api-Key"
        assert header_server.header_value == HEADER_SECRET
        assert list(dict(await services.mcp_user_tokens(bob_id)).values()) == [TOKEN_BOB]


async def test_every_write_publishes_after_its_commit(db_url: str, tmp_path: Path) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, services, admin):
        bob = await add_member(services)
        bob_id = await user_id_of(services, bob)
        servers: asyncio.Queue[list[str]] = asyncio.Queue()
        credentials: asyncio.Queue[tuple[bytes, bool]] = asyncio.Queue()

        async def on_servers(_payload: bytes, _error: Exception | None) -> None:
            # A fresh session: only committed data is visible here.
            async with services.sessions() as s:
                await servers.put([r.name for r in await repo.list_servers(s, None)])

        async def on_credentials(payload: bytes, _error: Exception | None) -> None:
            async with services.sessions() as s:
                found = await repo.get_credential(s, None, server_id, bob_id)
            await credentials.put((payload, found is not None))

        unsubscribes = [
            await services.pubsub.subscribe(MCP_SERVERS_CHANGED, on_servers),
            await services.pubsub.subscribe(MCP_CREDENTIALS_CHANGED, on_credentials),
        ]
        try:
            body = {"name": "p", "url": "http://h/m", "auth": {"type": "per_user"}}
            status, created, _ = await call(client, "POST", URL, admin, body)
            assert status == 201
            server_id = uuid.UUID(created["id"])
            async with asyncio.timeout(TIMEOUT):
                assert await servers.get() == ["p"]
            assert (await call(client, "PATCH", f"{URL}/p", admin, {"name": "q"}))[0] == 200
            async with asyncio.timeout(TIMEOUT):
                assert await servers.get() == ["q"]

            cred = f"{URL}/q/credentials"
            assert (await call(client, "PUT", cred, bob, {"token": TOKEN_BOB}))[0] == 200
            async with asyncio.timeout(TIMEOUT):
                assert await credentials.get() == (str(bob_id).encode(), True)
            assert (await call(client, "DELETE", cred, bob))[0] == 204
            async with asyncio.timeout(TIMEOUT):
                assert await credentials.get() == (str(bob_id).encode(), False)

            assert (await call(client, "DELETE", f"{URL}/q", admin))[0] == 204
            async with asyncio.timeout(TIMEOUT):
                assert await servers.get() == []
            # Refused writes publish nothing.
            assert (await call(client, "PUT", cred, bob, {"token": TOKEN_BOB}))[0] == 404
            assert (await call(client, "POST", URL, admin, {"name": "x"}))[0] == 400
            assert servers.empty() and credentials.empty()
        finally:
            for unsubscribe in unsubscribes:
                await unsubscribe()
