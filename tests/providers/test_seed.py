"""First-start seeding of providers from the environment, and the encryption check."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.providers.seed import seed_providers_from_env
from aibridge.server import Services
from aibridge.store import providers as repo
from aibridge.store.crypto import EncryptionKeyError, Encryptor
from aibridge.store.db import create_engine, migrate, session_factory
from aibridge.store.models import AIProvider, AuditLog
from aibridge.store.pubsub import PROVIDERS_CHANGED, InProcessPubSub
from aibridge.store.seed import check_encryption
from aibridge.store.urls import normalize_database_url
from aibridge.testing.gateway import admin_gateway, gateway

ANTHROPIC_KEY = "sk-ant-seed-fake-aaaa"
OPENAI_KEY = "sk-openai-seed-000000000000bbbb"
ENV = {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "OPENAI_API_KEY": OPENAI_KEY}
TIMEOUT = 60.0


async def seed(services: Services, env: dict[str, str]) -> list[str]:
    """Seed with the database, encryptor and pub/sub of one running gateway."""
    return await seed_providers_from_env(
        services.sessions, services.encryptor, services.pubsub, env
    )


async def all_rows(sessions: async_sessionmaker[AsyncSession]) -> list[AIProvider]:
    async with sessions() as s:
        return list((await s.scalars(select(AIProvider).order_by(AIProvider.name))).all())


async def test_seed_once_and_never_recreated(db_url: str, tmp_path: Path) -> None:
    async with admin_gateway(db_url, tmp_path, environ=ENV) as (client, services, token):
        async with services.sessions() as s:
            live = await repo.load_live_providers(s, services.encryptor)
        assert [(p.name, p.type, p.base_url, p.enabled) for p in live] == [
            ("anthropic", "anthropic", "https://api.anthropic.com", True),
            ("openai", "openai", "https://api.openai.com/v1", True),
        ]
        assert [[k.secret for k in p.keys] for p in live] == [[ANTHROPIC_KEY], [OPENAI_KEY]]
        first_ids = [p.id for p in live]
        async with services.sessions() as s:
            audits = (
                await s.scalars(select(AuditLog).where(AuditLog.resource_type == "ai_provider"))
            ).all()
        assert sorted(a.resource_name for a in audits) == ["anthropic", "openai"]
        assert all(a.actor_username == "system" and a.actor_id is None for a in audits)

    # Second start with the same environment: nothing new.
    async with gateway(db_url, tmp_path, environ=ENV) as (client, services):
        rows = await all_rows(services.sessions)
        assert [r.id for r in rows] == first_ids
        async with asyncio.timeout(TIMEOUT):
            resp = await client.delete(
                "/api/v1/providers/anthropic", headers={"Authorization": f"Bearer {token}"}
            )
        assert resp.status == 204

    # Third start: the admin's deletion sticks; no re-creation, no new rows.
    async with gateway(db_url, tmp_path, environ=ENV) as (_client, services):
        rows = await all_rows(services.sessions)
        assert [(r.name, r.deleted) for r in rows] == [("anthropic", True), ("openai", False)]
        assert (
            await seed_providers_from_env(
                services.sessions, services.encryptor, services.pubsub, ENV
            )
            == []
        )


async def test_seed_skipped_once_anything_exists(db_url: str, tmp_path: Path) -> None:
    async with gateway(db_url, tmp_path) as (_client, services):
        assert await all_rows(services.sessions) == []  # no env keys → nothing
        async with services.sessions() as s, s.begin():
            created = await repo.create_provider(
                s, None, repo.ProviderSpec("openai", "mine", "https://o.example")
            )
            assert await repo.delete_provider(s, created.id)
        # Even a soft-deleted row means "configured by an admin".
        assert (
            await seed_providers_from_env(
                services.sessions, services.encryptor, services.pubsub, ENV
            )
            == []
        )
        assert [r.name for r in await all_rows(services.sessions)] == ["mine"]


async def test_seed_one_key_with_base_url_override(db_url: str, tmp_path: Path) -> None:
    env = {
        "ANTHROPIC_API_KEY": f"  {ANTHROPIC_KEY}\n",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9999",
        "OPENAI_API_KEY": "",
    }
    async with gateway(db_url, tmp_path) as (_client, services):
        seen: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_change(payload: bytes, _error: Exception | None) -> None:
            await seen.put(payload)

        unsubscribe = await services.pubsub.subscribe(PROVIDERS_CHANGED, on_change)
        try:
            assert await seed_providers_from_env(
                services.sessions, services.encryptor, services.pubsub, env
            ) == ["anthropic"]
            async with asyncio.timeout(TIMEOUT):
                await seen.get()
        finally:
            await unsubscribe()
        async with services.sessions() as s:
            live = await repo.load_live_providers(s, services.encryptor)
        assert [(p.name, p.base_url) for p in live] == [("anthropic", "http://127.0.0.1:9999")]
        assert live[0].keys[0].secret == ANTHROPIC_KEY  # surrounding whitespace stripped


async def test_seed_skips_invalid_base_url(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = {**ENV, "OPENAI_BASE_URL": "ftp://nope"}
    async with gateway(db_url, tmp_path) as (_client, services):
        assert await seed_providers_from_env(
            services.sessions, services.encryptor, services.pubsub, env
        ) == ["anthropic"]
    assert "OPENAI_BASE_URL" in caplog.text
    assert ANTHROPIC_KEY not in caplog.text and OPENAI_KEY not in caplog.text


async def test_seed_never_logs_the_credentials_of_a_refused_base_url(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": "https://u:pw-s3cret@llm.example/v1"}
    async with gateway(db_url, tmp_path) as (_client, services):
        assert await seed(services, env) == []
    assert "OPENAI_BASE_URL" in caplog.text and "must not contain credentials" in caplog.text
    assert "pw-s3cret" not in caplog.text


async def test_concurrent_seeding_creates_one_row_per_name(db_url: str, tmp_path: Path) -> None:
    async with gateway(db_url, tmp_path) as (_client, services):
        # Three "replicas": separate engines (connections) on the same database.
        replicas = [services]
        engines = []
        for _ in range(2):
            engine = create_engine(normalize_database_url(db_url))
            engines.append(engine)
            replicas.append(
                replace(
                    services,
                    engine=engine,
                    sessions=session_factory(engine),
                    pubsub=InProcessPubSub(),
                )
            )
        try:
            async with asyncio.timeout(TIMEOUT):
                results = await asyncio.gather(
                    *(
                        seed_providers_from_env(r.sessions, r.encryptor, r.pubsub, ENV)
                        for r in replicas
                    )
                )
        finally:
            for engine in engines:
                await engine.dispose()
        created = sorted(name for names in results for name in names)
        assert created == ["anthropic", "openai"]
        assert sum(1 for names in results if names) == 1  # one replica did all the work
        rows = await all_rows(services.sessions)
        assert [r.name for r in rows] == ["anthropic", "openai"]


async def test_encrypted_rows_need_the_key_they_were_written_with(db_url: str) -> None:
    engine = create_engine(normalize_database_url(db_url))
    await migrate(engine)
    sessions = session_factory(engine)
    key = Encryptor("a" * 32)
    try:
        await check_encryption(sessions, None)  # empty database
        async with sessions() as s, s.begin():
            await repo.create_provider(
                s, None, repo.ProviderSpec("openai", "plain", "https://o.example", api_keys=["k"])
            )
        # Plaintext rows are readable with or without a key.
        await check_encryption(sessions, None)
        await check_encryption(sessions, key)
        async with sessions() as s, s.begin():
            await repo.create_provider(
                s,
                key,
                repo.ProviderSpec(
                    "openai",
                    "sealed",
                    "https://o.example",
                    api_keys=["k"],
                    settings={"allow_byok": True},
                ),
            )
        await check_encryption(sessions, key)
        with pytest.raises(EncryptionKeyError, match="AIBRIDGE_ENCRYPTION_KEY is not set"):
            await check_encryption(sessions, None)
        with pytest.raises(EncryptionKeyError, match="different AIBRIDGE_ENCRYPTION_KEY"):
            await check_encryption(sessions, Encryptor("b" * 32))
    finally:
        await engine.dispose()
