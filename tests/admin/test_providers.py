"""The provider admin API end to end (real app, real SQLite file and PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select, text

from aibridge.secrets_mask import mask_secret
from aibridge.server import Services
from aibridge.store import config_version
from aibridge.store import providers as repo
from aibridge.store.crypto import EncryptionKeyError
from aibridge.store.db import create_engine, migrate, session_factory
from aibridge.store.models import AIProvider, ApiKey, AuditLog, User
from aibridge.store.pubsub import PROVIDERS_CHANGED
from aibridge.store.urls import normalize_database_url
from aibridge.testing.gateway import admin_gateway, gateway
from aibridge.tokens import mint_token

URL = "/api/v1/providers"
SECRET_A = "sk-test-aaaaaaaaaaaaaaaaaaaa1111"
SECRET_B = "sk-test-bbbbbbbbbbbbbbbbbbbb2222"
SECRET_C = "sk-test-cccccccccccccccccccc3333"
ENC_KEY = "k" * 40
TIMEOUT = 60.0


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_member(services: Services, username: str = "bob") -> str:
    """A member user with one key, created directly in the database."""
    new = mint_token()
    async with services.sessions() as s, s.begin():
        user = User(id=uuid.uuid4(), username=username, role="member", status="active")
        s.add(user)
        await s.flush()
        s.add(ApiKey(id=new.key_id, user_id=user.id, name="t", secret_hash=new.secret_hash))
    # Announced as the admin API does: authenticators remember which key ids exist.
    services.authenticator.invalidate(new.key_id)
    return new.token


async def call(
    client: TestClient, method: str, path: str, token: str, body: Any = None
) -> tuple[int, Any, bytes]:
    """One request; returns (status, parsed JSON or None, raw body)."""
    kwargs: dict[str, Any] = {"headers": auth(token)}
    if body is not None:
        kwargs["data"] = body if isinstance(body, bytes) else orjson.dumps(body)
        kwargs["headers"]["Content-Type"] = "application/json"
    async with asyncio.timeout(TIMEOUT):
        resp = await client.request(method, path, **kwargs)
        raw = await resp.read()
    return resp.status, (orjson.loads(raw) if raw else None), raw


def openai_body(name: str = "main-openai", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "openai",
        "name": name,
        "base_url": "https://api.openai.com/v1",
        "api_keys": [SECRET_A, SECRET_B],
    }
    body.update(extra)
    return body


def validations(body: Any) -> set[tuple[str, str]]:
    return {(v["field"], v["detail"]) for v in body.get("validations", [])}


async def test_a_provider_is_created_read_patched_and_soft_deleted_and_its_name_freed(
    db_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, services, token):
        async with services.sessions() as s:
            version0 = await config_version.read(s)

        status, created, _ = await call(client, "POST", URL, token, openai_body())
        assert status == 201, created
        assert created["type"] == "openai"
        assert created["name"] == "main-openai"
        assert created["display_name"] == "main-openai"  # empty display name → name
        assert created["enabled"] is True  # default when absent
        assert created["icon"] == ""
        assert created["settings"] is None
        assert created["created_at"].endswith("Z") and created["updated_at"].endswith("Z")
        assert [k["masked"] for k in created["api_keys"]] == [
            mask_secret(SECRET_A),
            mask_secret(SECRET_B),
        ]
        key_a, key_b = (k["id"] for k in created["api_keys"])
        pid = created["id"]
        async with services.sessions() as s:
            assert await config_version.read(s) == version0 + 1

        for ref in ("main-openai", pid):
            status, got, _ = await call(client, "GET", f"{URL}/{ref}", token)
            assert status == 200
            assert got == created

        status, listed, _ = await call(client, "GET", URL, token)
        assert status == 200 and [p["id"] for p in listed] == [pid]

        # Keep A, drop B, add C; change a few fields.
        patch = {
            "api_keys": [{"id": key_a}, {"api_key": SECRET_C}],
            "display_name": "Main OpenAI",
            "enabled": False,
            "settings": {"upstream_timeout_seconds": 600, "circuit_breaker": {"enabled": True}},
        }
        status, patched, _ = await call(client, "PATCH", f"{URL}/{pid}", token, patch)
        assert status == 200, patched
        assert patched["display_name"] == "Main OpenAI"
        assert patched["enabled"] is False
        assert patched["settings"] == patch["settings"]
        assert next(k["id"] for k in patched["api_keys"]) == key_a  # oldest stays primary
        assert [k["masked"] for k in patched["api_keys"]] == [
            mask_secret(SECRET_A),
            mask_secret(SECRET_C),
        ]
        assert key_b not in {k["id"] for k in patched["api_keys"]}
        assert patched["updated_at"] >= created["updated_at"]

        # display_name "" resets to the name; settings null clears.
        status, patched, _ = await call(
            client, "PATCH", f"{URL}/main-openai", token, {"display_name": "", "settings": None}
        )
        assert status == 200
        assert patched["display_name"] == "main-openai" and patched["settings"] is None

        # An empty key list clears all keys.
        status, patched, _ = await call(client, "PATCH", f"{URL}/{pid}", token, {"api_keys": []})
        assert status == 200 and patched["api_keys"] == []

        status, body, raw = await call(client, "DELETE", f"{URL}/{pid}", token)
        assert status == 204 and raw == b"" and body is None
        for method, ref, patch_body in (
            ("GET", pid, None),
            ("GET", "main-openai", None),
            ("DELETE", "main-openai", None),
            ("PATCH", pid, {"enabled": True}),
        ):
            status, body, _ = await call(client, method, f"{URL}/{ref}", token, patch_body)
            assert status == 404, (method, ref)
            assert body["message"] == "AI provider not found."
        status, listed, _ = await call(client, "GET", URL, token)
        assert listed == []

        # The name is free again after a soft delete.
        status, again, _ = await call(client, "POST", URL, token, openai_body())
        assert status == 201 and again["id"] != pid

        async with services.sessions() as s:
            rows = (await s.scalars(select(AIProvider).order_by(AIProvider.created_at))).all()
        assert [(r.name, r.deleted, r.enabled) for r in rows] == [
            ("main-openai", True, False),
            ("main-openai", False, True),
        ]


CREATE_CASES: list[tuple[dict[str, Any], set[tuple[str, str]]]] = [
    (
        {},
        {
            ("type", "type is required"),
            ("name", "name is required"),
            ("base_url", "base_url is required"),
        },
    ),
    (openai_body(type="vertex"), {("type", 'unsupported provider type "vertex"')}),
    (openai_body(type="gemini"), {("type", 'unsupported provider type "gemini"')}),
    (openai_body(type=5), {("type", "type must be a string")}),
    (
        openai_body(name="Bad_Name"),
        {
            (
                "name",
                "name must match ^[a-z0-9]+(-[a-z0-9]+)*$ "
                "(lowercase alphanumeric, hyphens between words)",
            )
        },
    ),
    (openai_body(name="api"), {("name", 'name "api" is reserved by the gateway')}),
    (openai_body(name="metrics"), {("name", 'name "metrics" is reserved by the gateway')}),
    # GET /api/v1/providers/status is the live status, never a provider named "status".
    (openai_body(name="status"), {("name", 'name "status" is reserved by the gateway')}),
    (
        openai_body(base_url="api.example.com"),
        {("base_url", "base_url must be an absolute URL (e.g. https://api.example.com/)")},
    ),
    (
        openai_body(base_url="ftp://files.example.com"),
        {("base_url", 'base_url scheme must be http or https, got "ftp"')},
    ),
    (openai_body(api_keys=[""]), {("api_keys[0]", "api_keys entries must not be empty")}),
    (
        openai_body(api_keys=["ok-key", " sk-padded"]),
        {("api_keys[1]", "api_keys entries must not contain leading or trailing whitespace")},
    ),
    (openai_body(api_keys="sk-one"), {("api_keys", "api_keys must be an array of strings")}),
    (openai_body(enabled="yes"), {("enabled", "enabled must be a boolean (true or false)")}),
    (openai_body(display_name=3), {("display_name", "display_name must be a string")}),
    (
        openai_body(icon="a\u0000b"),
        {("icon", "icon must not contain control characters")},
    ),
    (openai_body(colour="red"), {("colour", "unknown field")}),
    (openai_body(settings=5), {("settings", "settings must be an object or null")}),
    (openai_body(settings={"nope": 1}), {("settings.nope", "unknown setting")}),
    (
        openai_body(settings={"allow_byok": "yes"}),
        {("settings.allow_byok", "allow_byok must be a boolean")},
    ),
    (
        openai_body(settings={"key_cooldown_seconds": -1}),
        {("settings.key_cooldown_seconds", "key_cooldown_seconds must be >= 0")},
    ),
    (
        openai_body(settings={"upstream_timeout_seconds": 0}),
        {("settings.upstream_timeout_seconds", "upstream_timeout_seconds must be > 0")},
    ),
    (
        openai_body(settings={"api_version": "2024-10-21"}),
        {("settings.api_version", "api_version is only valid for type=azure")},
    ),
    (
        openai_body(settings={"extra_headers": {"Authorization": "Bearer x"}}),
        {
            (
                "settings.extra_headers.Authorization",
                'header "Authorization" carries credentials; put upstream keys in api_keys instead',
            )
        },
    ),
    (
        openai_body(settings={"extra_headers": {"api-key": "x"}}),
        {
            (
                "settings.extra_headers.api-key",
                'header "api-key" carries credentials; put upstream keys in api_keys instead',
            )
        },
    ),
    (
        openai_body(settings={"extra_headers": {"X-Org": 5}}),
        {("settings.extra_headers.X-Org", "header values must be strings")},
    ),
    (
        openai_body(settings={"circuit_breaker": {"failure_threshold": 0}}),
        {("settings.circuit_breaker.failure_threshold", "failure_threshold must be >= 1")},
    ),
    (
        openai_body(settings={"circuit_breaker": {"max_requests": 1.5}}),
        {("settings.circuit_breaker.max_requests", "max_requests must be an integer")},
    ),
    (
        openai_body(settings={"circuit_breaker": {"interval_seconds": 0}}),
        {("settings.circuit_breaker.interval_seconds", "interval_seconds must be > 0")},
    ),
    (
        openai_body(settings={"circuit_breaker": {"timeout_seconds": "1"}}),
        {("settings.circuit_breaker.timeout_seconds", "timeout_seconds must be a number")},
    ),
    (
        openai_body(settings={"circuit_breaker": {"enabled": 1}}),
        {("settings.circuit_breaker.enabled", "enabled must be a boolean")},
    ),
    (
        openai_body(settings={"circuit_breaker": {"bogus": 1}}),
        {("settings.circuit_breaker.bogus", "unknown setting")},
    ),
    # The runtime could not build a breaker from these: refused up front, not skipped later.
    (
        openai_body(settings={"circuit_breaker": {"max_requests": 2**32}}),
        {("settings.circuit_breaker.max_requests", "max_requests must be <= 4294967295")},
    ),
    (
        openai_body(settings={"circuit_breaker": {"timeout_seconds": 86_400.5}}),
        {("settings.circuit_breaker.timeout_seconds", "timeout_seconds must be <= 86400")},
    ),
]


async def test_invalid_create_bodies_get_a_400_naming_every_field_and_create_nothing(
    db_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, _services, token):
        for body, expected in CREATE_CASES:
            status, resp, _ = await call(client, "POST", URL, token, body)
            assert status == 400, (body, resp)
            assert resp["message"] == "Invalid AI provider request.", body
            assert validations(resp) == expected, body

        # Not a JSON object / not JSON at all.
        status, resp, _ = await call(client, "POST", URL, token, b"[1, 2]")
        assert status == 400 and resp["message"] == "Request body must be a JSON object."
        status, resp, _ = await call(client, "POST", URL, token, b"{nope")
        assert status == 400 and resp["message"] == "Request body is not valid JSON."

        # None of the rejected bodies created anything.
        status, listed, _ = await call(client, "GET", URL, token)
        assert listed == []

        # Valid settings round-trip, including the azure-only api_version.
        settings = {
            "allow_byok": True,
            "key_cooldown_seconds": 0,
            "upstream_timeout_seconds": 1.5,
            "api_version": "2024-10-21",
            "extra_headers": {"OpenAI-Organization": "org-1"},
            "circuit_breaker": {
                "enabled": True,
                "failure_threshold": 3,
                "interval_seconds": 10,
                "timeout_seconds": 30,
                "max_requests": 1,
            },
        }
        body = {
            "type": "azure",
            "name": "az",
            "base_url": "https://x.openai.azure.com/",
            "enabled": False,
            "settings": settings,
        }
        status, created, _ = await call(client, "POST", URL, token, body)
        assert status == 201, created
        assert created["settings"] == settings and created["enabled"] is False
        # An empty settings object is stored as "no settings".
        status, created, _ = await call(
            client, "POST", URL, token, openai_body(name="empty-settings", settings={})
        )
        assert status == 201 and created["settings"] is None


async def test_invalid_patches_and_unknown_key_ids_get_a_400_and_change_nothing(
    db_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, services, token):
        status, created, _ = await call(client, "POST", URL, token, openai_body(name="p"))
        assert status == 201
        key_a = created["api_keys"][0]["id"]
        item = f"{URL}/p"

        status, resp, _ = await call(client, "PATCH", item, token, {})
        assert status == 400 and resp["message"] == "At least one field must be provided."

        cases: list[tuple[dict[str, Any], set[tuple[str, str]]]] = [
            ({"type": "anthropic"}, {("type", "type cannot be changed")}),
            ({"colour": "red"}, {("colour", "unknown field")}),
            (
                {"api_keys": [{}]},
                {("api_keys[0]", "exactly one of id or api_key must be set")},
            ),
            (
                {"api_keys": [{"id": key_a, "api_key": "sk-x"}]},
                {("api_keys[0]", "exactly one of id or api_key must be set")},
            ),
            (
                {"api_keys": [{"api_key": ""}]},
                {("api_keys[0].api_key", "api_key must not be empty")},
            ),
            (
                {"api_keys": [{"api_key": "sk-x "}]},
                {
                    (
                        "api_keys[0].api_key",
                        "api_key must not contain leading or trailing whitespace",
                    )
                },
            ),
            (
                {"api_keys": [{"id": key_a}, {"api_key": "sk-new"}, {"id": key_a}]},
                {("api_keys[2].id", f"id {key_a} already referenced at api_keys[0]")},
            ),
            ({"api_keys": [{"id": "not-a-uuid"}]}, {("api_keys[0].id", "id must be a UUID")}),
            (
                {"base_url": "nope"},
                {("base_url", "base_url must be an absolute URL (e.g. https://api.example.com/)")},
            ),
            ({"enabled": "yes"}, {("enabled", "enabled must be a boolean (true or false)")}),
            (
                {"settings": {"api_version": "2024-10-21"}},
                {("settings.api_version", "api_version is only valid for type=azure")},
            ),
            (
                {"settings": {"circuit_breaker": {"failure_threshold": 0}}},
                {("settings.circuit_breaker.failure_threshold", "failure_threshold must be >= 1")},
            ),
        ]
        for body, expected in cases:
            status, resp, _ = await call(client, "PATCH", item, token, body)
            assert status == 400, (body, resp)
            assert resp["message"] == "Invalid AI provider request.", body
            assert validations(resp) == expected, body

        async with services.sessions() as s:
            version = await config_version.read(s)
        unknown = str(uuid.uuid4())
        status, resp, _ = await call(
            client, "PATCH", item, token, {"api_keys": [{"api_key": "sk-new"}, {"id": unknown}]}
        )
        assert status == 400
        assert resp["message"] == "api_keys references an unknown id for this provider"
        # Rolled back: keys and config version unchanged.
        status, got, _ = await call(client, "GET", item, token)
        assert [k["id"] for k in got["api_keys"]] == [k["id"] for k in created["api_keys"]]
        async with services.sessions() as s:
            assert await config_version.read(s) == version

        bad_ref = "Invalid provider id or name: must be a UUID or match ^[a-z0-9]+(-[a-z0-9]+)*$."
        for method, body in (("GET", None), ("PATCH", {"enabled": True}), ("DELETE", None)):
            status, resp, _ = await call(client, method, f"{URL}/Bad_Name", token, body)
            assert status == 400 and resp["message"] == bad_ref, method
            for missing in ("nope", str(uuid.uuid4())):
                status, resp, _ = await call(client, method, f"{URL}/{missing}", token, body)
                assert status == 404, (method, missing)

        # A provider whose key the other provider tries to keep is "unknown" to it.
        status, _other, _ = await call(client, "POST", URL, token, openai_body(name="q"))
        status, resp, _ = await call(
            client, "PATCH", f"{URL}/q", token, {"api_keys": [{"id": key_a}]}
        )
        assert status == 400
        assert resp["message"] == "api_keys references an unknown id for this provider"


async def test_a_duplicate_name_is_a_409_even_when_creates_race(
    db_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, services, token):
        for name in ("race-a", "race-b", "race-c"):
            results = await asyncio.gather(
                *(call(client, "POST", URL, token, openai_body(name=name)) for _ in range(3))
            )
            statuses = sorted(r[0] for r in results)
            assert statuses == [201, 409, 409], results
            for status, body, _ in results:
                if status == 409:
                    assert body["message"] == f'AI provider "{name}" already exists.'
        async with services.sessions() as s:
            live = await repo.list_providers(s, services.encryptor)
        assert [p.name for p in live] == ["race-a", "race-b", "race-c"]
        assert all(len(p.keys) == 2 for p in live)


async def test_the_provider_api_is_401_without_a_key_and_403_for_members(
    db_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, services, token):
        status, created, _ = await call(client, "POST", URL, token, openai_body(name="p"))
        assert status == 201
        member = await make_member(services)
        requests: list[tuple[str, str, Any]] = [
            ("GET", URL, None),
            ("POST", URL, openai_body(name="m")),
            ("GET", f"{URL}/p", None),
            ("PATCH", f"{URL}/p", {"enabled": False}),
            ("DELETE", f"{URL}/p", None),
        ]
        for method, path, body in requests:
            async with asyncio.timeout(TIMEOUT):
                resp = await client.request(method, path, data=orjson.dumps(body) if body else None)
                assert resp.status == 401, (method, path)
                assert (await resp.json())["message"] == "Unauthorized."
            status, _, _ = await call(client, method, path, "aib-0123456789ab-wrongsecret", body)
            assert status == 401, (method, path)
            status, _, _ = await call(client, method, path, token + "x", body)
            assert status == 401, (method, path)
            status, resp, _ = await call(client, method, path, member, body)
            assert status == 403, (method, path)
            assert resp["message"] == "Forbidden."
        # Nothing changed.
        status, got, _ = await call(client, "GET", f"{URL}/p", token)
        assert got == created
        status, listed, _ = await call(client, "GET", URL, token)
        assert [p["name"] for p in listed] == ["p"]


async def test_keys_masked_everywhere_and_audited(db_url: str, tmp_path: Path) -> None:
    bodies: list[bytes] = []
    async with admin_gateway(db_url, tmp_path) as (client, services, token):

        async def req(method: str, path: str, body: Any = None) -> Any:
            status, parsed, raw = await call(client, method, path, token, body)
            bodies.append(raw)
            assert status < 300, (method, path, parsed)
            return parsed

        created = await req("POST", URL, openai_body(name="p"))
        key_a, key_b = (k["id"] for k in created["api_keys"])
        await req("GET", URL)
        await req("GET", f"{URL}/p")
        patched = await req(
            "PATCH", f"{URL}/p", {"api_keys": [{"id": key_b}, {"api_key": SECRET_C}]}
        )
        key_c = patched["api_keys"][1]["id"]
        await req("DELETE", f"{URL}/p")

        for raw in bodies:
            for secret in (SECRET_A, SECRET_B, SECRET_C):
                assert secret.encode() not in raw

        async with services.sessions() as s:
            rows = (await s.scalars(select(AuditLog).order_by(AuditLog.created_at))).all()
        dumped = orjson.dumps([r.diff for r in rows])
        for secret in (SECRET_A, SECRET_B, SECRET_C):
            assert secret.encode() not in dumped

        provider_rows = [r for r in rows if r.resource_type == "ai_provider"]
        assert [r.action for r in provider_rows] == ["create", "update", "delete"]
        assert all(r.actor_username == "admin" and r.actor_id is not None for r in provider_rows)
        assert all(r.resource_id == created["id"] for r in provider_rows)
        assert provider_rows[0].diff["api_keys"] == [
            {"id": key_a, "masked": mask_secret(SECRET_A)},
            {"id": key_b, "masked": mask_secret(SECRET_B)},
        ]
        update = provider_rows[1].diff
        assert update["added"] == [{"id": key_c, "masked": mask_secret(SECRET_C)}]
        assert update["removed"] == [{"id": key_a, "masked": mask_secret(SECRET_A)}]
        assert update["kept"] == 1

        key_rows = [(r.action, r.resource_id) for r in rows if r.resource_type == "ai_provider_key"]
        assert sorted(key_rows) == sorted(
            [("create", key_a), ("create", key_b), ("create", key_c), ("delete", key_a)]
        )
        for r in rows:
            if r.resource_type == "ai_provider_key":
                assert r.diff["masked"].endswith(("1111", "2222", "3333"))


async def test_keys_and_settings_are_encrypted_at_rest_and_unreadable_without_the_key(
    db_url: str, tmp_path: Path
) -> None:
    settings = {"upstream_timeout_seconds": 120, "extra_headers": {"X-Tenant": "acme"}}
    async with admin_gateway(db_url, tmp_path, encryption_key=ENC_KEY) as (client, services, token):
        status, created, raw = await call(
            client, "POST", URL, token, openai_body(name="enc", settings=settings)
        )
        assert status == 201
        assert SECRET_A.encode() not in raw
        assert [k["masked"] for k in created["api_keys"]] == [
            mask_secret(SECRET_A),
            mask_secret(SECRET_B),
        ]
        assert created["settings"] == settings
        async with services.engine.connect() as conn:
            keys = (
                await conn.execute(text("SELECT api_key, api_key_key_id FROM ai_provider_keys"))
            ).all()
            prov = (
                await conn.execute(text("SELECT settings, settings_key_id FROM ai_providers"))
            ).one()
        assert len(keys) == 2
        for stored, key_id in keys:
            assert SECRET_A not in stored and SECRET_B not in stored
            assert services.encryptor is not None and key_id == services.encryptor.key_id
        assert prov[0] is not None and "acme" not in prov[0] and prov[1] is not None

    with pytest.raises(EncryptionKeyError, match="AIBRIDGE_ENCRYPTION_KEY"):
        async with gateway(db_url, tmp_path):
            pass
    with pytest.raises(EncryptionKeyError, match="AIBRIDGE_ENCRYPTION_KEY"):
        async with gateway(db_url, tmp_path, encryption_key="z" * 40):
            pass

    async with gateway(db_url, tmp_path, encryption_key=ENC_KEY) as (client, services):
        status, got, raw = await call(client, "GET", f"{URL}/enc", token)
        assert status == 200 and got["settings"] == settings
        assert [k["masked"] for k in got["api_keys"]] == [
            mask_secret(SECRET_A),
            mask_secret(SECRET_B),
        ]
        async with services.sessions() as s:
            live = await repo.load_live_providers(s, services.encryptor)
        assert [k.secret for k in live[0].keys] == [SECRET_A, SECRET_B]


async def test_publish_happens_after_commit(db_url: str, tmp_path: Path) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, services, token):
        seen: asyncio.Queue[repo.ProviderRecord | None] = asyncio.Queue()

        async def on_change(_payload: bytes, _error: Exception | None) -> None:
            # A fresh session: only committed data is visible here.
            async with services.sessions() as s:
                await seen.put(await repo.get_provider_by_name(s, services.encryptor, "pub"))

        unsubscribe = await services.pubsub.subscribe(PROVIDERS_CHANGED, on_change)
        try:
            status, _, _ = await call(client, "POST", URL, token, openai_body(name="pub"))
            assert status == 201
            async with asyncio.timeout(TIMEOUT):
                record = await seen.get()
            assert record is not None and record.enabled

            status, _, _ = await call(client, "PATCH", f"{URL}/pub", token, {"enabled": False})
            assert status == 200
            async with asyncio.timeout(TIMEOUT):
                record = await seen.get()
            assert record is not None and record.enabled is False

            status, _, _ = await call(client, "DELETE", f"{URL}/pub", token)
            assert status == 204
            async with asyncio.timeout(TIMEOUT):
                record = await seen.get()
            assert record is None
        finally:
            await unsubscribe()


async def test_publish_failure_does_not_fail_request(db_url: str, tmp_path: Path) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, services, token):
        calls: list[str] = []

        async def broken(channel: str, payload: bytes = b"") -> None:
            calls.append(channel)
            raise ConnectionError("pubsub down")

        original = services.pubsub.publish
        services.pubsub.publish = broken  # type: ignore[method-assign]
        try:
            status, _created, _ = await call(client, "POST", URL, token, openai_body(name="x"))
        finally:
            services.pubsub.publish = original  # type: ignore[method-assign]
        assert status == 201 and calls == [PROVIDERS_CHANGED]
        status, _, _ = await call(client, "GET", f"{URL}/x", token)
        assert status == 200


async def test_the_repository_hides_deleted_rows_filters_enabled_and_keeps_key_order(
    db_url: str,
) -> None:
    engine = create_engine(normalize_database_url(db_url))
    await migrate(engine)
    sessions = session_factory(engine)
    try:
        async with sessions() as s, s.begin():
            await repo.create_provider(
                s,
                None,
                repo.ProviderSpec("anthropic", "b-live", "https://a.example", api_keys=["k1"]),
            )
            off = await repo.create_provider(
                s,
                None,
                repo.ProviderSpec("openai", "a-off", "https://o.example", enabled=False),
            )
            gone = await repo.create_provider(
                s, None, repo.ProviderSpec("openai", "c-gone", "https://o.example", api_keys=["k"])
            )
        async with sessions() as s, s.begin():
            assert await repo.delete_provider(s, gone.id) is True
        async with sessions() as s, s.begin():
            assert await repo.delete_provider(s, gone.id) is False  # repeat: no-op
            version = await config_version.read(s)
        async with sessions() as s:
            assert await config_version.read(s) == version
            live = await repo.load_live_providers(s, None)
            enabled_only = await repo.list_providers(s, None, include_disabled=False)
            everything = await repo.list_providers(s, None, include_deleted=True)
            assert await repo.get_provider(s, None, gone.id) is None
            assert await repo.get_provider_by_name(s, None, "c-gone") is None
            assert (await repo.get_provider(s, None, off.id)) == live[0]
        assert [p.name for p in live] == ["a-off", "b-live"]
        assert [p.name for p in enabled_only] == ["b-live"]
        assert [(p.name, p.deleted, p.enabled) for p in everything] == [
            ("a-off", False, False),
            ("b-live", False, True),
            ("c-gone", True, False),
        ]
        assert everything[2].keys[0].secret == "k"

        # Keys added in one write keep their order; kept keys stay ahead of new ones.
        async with sessions() as s, s.begin():
            change = await repo.update_provider(
                s,
                None,
                off.id,
                repo.ProviderPatch(
                    api_keys=[repo.KeyMutation(api_key=f"key-{i}") for i in range(5)]
                ),
            )
        assert [k.secret for k in change.after.keys] == [f"key-{i}" for i in range(5)]
        first = change.after.keys[0].id
        async with sessions() as s, s.begin():
            change = await repo.update_provider(
                s,
                None,
                off.id,
                repo.ProviderPatch(
                    api_keys=[repo.KeyMutation(api_key="newest"), repo.KeyMutation(id=first)]
                ),
            )
        assert [k.secret for k in change.after.keys] == ["key-0", "newest"]
        assert change.kept == 1 and len(change.removed) == 4 and len(change.added) == 1
        async with sessions() as s:
            fresh = await repo.get_provider(s, None, off.id)
        assert fresh == change.after
    finally:
        await engine.dispose()
