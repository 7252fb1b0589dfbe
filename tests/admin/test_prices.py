"""``/api/v1/prices`` through the real gateway app (SQLite file and PostgreSQL): the shipped
defaults, create/replace/delete with audit rows, validation, roles, and the reload of the
price table on this gateway and on a second one sharing the database."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from aibridge.server import Services
from aibridge.store import config_version
from aibridge.store.models import AuditLog
from aibridge.testing.gateway import add_member, admin_gateway, gateway
from aibridge.testing.replicas import poll

T = 20.0  # seconds: upper bound for any await that could hang

SONNET = {
    "provider_type": "anthropic",
    "model": "claude-sonnet-4-5*",
    "input_per_mtok": 3,
    "output_per_mtok": 15,
    "cache_read_per_mtok": 0.3,
    "cache_write_per_mtok": 3.75,
    "effective_date": "2025-12-01",
}
PRICE = {
    "input_per_mtok": 0.4,
    "output_per_mtok": 1.6,
    "cache_read_per_mtok": 0.1,
    "cache_write_per_mtok": 0.4,
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(
    client: TestClient[Any, Any], method: str, path: str, token: str | None, body: Any = None
) -> tuple[int, Any]:
    async with asyncio.timeout(T):
        resp = await client.request(method, path, json=body, headers=bearer(token) if token else {})
        text = await resp.text()
    return resp.status, (await resp.json()) if text else None


async def audit_rows(services: Services) -> list[AuditLog]:
    async with services.sessions() as s:
        stmt = (
            select(AuditLog)
            .where(AuditLog.resource_type == "model_price")
            .order_by(AuditLog.created_at, AuditLog.id)
        )
        return list((await s.scalars(stmt)).all())


async def test_prices_ship_with_defaults_and_are_created_replaced_and_deleted_by_admins(
    db_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, services, admin):
        member = await add_member(services)
        status, body = await call(client, "GET", "/api/v1/prices", None)
        assert status == 401, body
        # Any authenticated user reads prices (members see the cost of their own usage).
        status, body = await call(client, "GET", "/api/v1/prices", member)
        assert status == 200, body
        listed = body["prices"]
        assert SONNET in listed
        assert {p["provider_type"] for p in listed} == {"anthropic", "openai"}
        assert listed == sorted(listed, key=lambda p: (p["provider_type"], p["model"]))
        gpt5 = next(p for p in listed if p["model"] == "gpt-5")
        assert (gpt5["input_per_mtok"], gpt5["cache_read_per_mtok"]) == (1.25, 0.125)
        status, body = await call(client, "GET", "/api/v1/prices?provider_type=openai", member)
        assert status == 200 and {p["provider_type"] for p in body["prices"]} == {"openai"}
        # The running gateway prices with exactly what is stored.
        assert len(services.prices.table) == len(listed)

        path = "/api/v1/prices/openrouter/qwen/qwen3-coder"
        status, body = await call(client, "PUT", path, member, PRICE)
        assert status == 403, body
        status, body = await call(client, "PUT", path, None, PRICE)
        assert status == 401, body
        status, body = await call(client, "DELETE", path, member)
        assert status == 403, body

        # A model name with a slash is the rest of the path; the date defaults to today.
        status, created = await call(client, "PUT", path, admin, PRICE)
        assert status == 201, created
        assert created["provider_type"] == "openrouter"
        assert created["model"] == "qwen/qwen3-coder"
        assert created["input_per_mtok"] == 0.4
        assert len(created["effective_date"]) == 10
        status, body = await call(client, "GET", path, member)
        assert (status, body) == (200, created)
        replaced = {**PRICE, "output_per_mtok": 2, "effective_date": "2026-01-15"}
        status, body = await call(client, "PUT", path, admin, replaced)
        assert status == 200, body
        assert (body["output_per_mtok"], body["effective_date"]) == (2, "2026-01-15")

        async def priced() -> bool:
            price = services.prices.table.lookup("openrouter", "qwen/qwen3-coder")
            return price is not None and price.output_micros == 2_000_000

        await poll(priced, T, "the replaced price in the price book")

        status, body = await call(client, "DELETE", path, admin)
        assert (status, body) == (204, None)
        status, body = await call(client, "DELETE", path, admin)
        assert status == 404, body
        status, body = await call(client, "GET", path, admin)
        assert status == 404, body

        async def gone() -> bool:
            return services.prices.table.lookup("openrouter", "qwen/qwen3-coder") is None

        await poll(gone, T, "the deleted price to leave the price book")

        rows = await audit_rows(services)
        assert [(r.action, r.resource_id, r.status_code) for r in rows] == [
            ("create", "openrouter/qwen/qwen3-coder", 201),
            ("update", "openrouter/qwen/qwen3-coder", 200),
            ("delete", "openrouter/qwen/qwen3-coder", 204),
        ]
        assert rows[1].diff["before"]["output_per_mtok"] == 1.6
        assert rows[1].diff["after"]["output_per_mtok"] == 2
        assert rows[2].diff["after"] is None
        assert all(r.actor_username == "admin" for r in rows)

        # A default deleted by an admin stays deleted: nothing re-seeds it.
        status, _ = await call(client, "DELETE", "/api/v1/prices/openai/gpt-5", admin)
        assert status == 204
    async with gateway(db_url, tmp_path) as (client, services):
        async with services.sessions() as s:
            assert await config_version.read(s, config_version.PRICES) == 4
        assert services.prices.table.lookup("openai", "gpt-5") is None
        assert services.prices.table.lookup("openai", "gpt-5-mini") is not None


async def test_bad_prices_are_refused_with_every_field_named(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(sqlite_url, tmp_path) as (client, services, admin):
        cases: list[tuple[str, Any, dict[str, str]]] = [
            (
                "/api/v1/prices/gemini/gemini-pro",
                PRICE,
                {"provider_type": "openai, anthropic, azure"},
            ),
            ("/api/v1/prices/openai/gpt-*-mini", PRICE, {"model": "last character"}),
            ("/api/v1/prices/openai/%20gpt-5", PRICE, {"model": "white space"}),
            ("/api/v1/prices/openai/" + "m" * 201, PRICE, {"model": "at most 200"}),
            (
                "/api/v1/prices/openai/gpt-x",
                {**PRICE, "input_per_mtok": -1},
                {"input_per_mtok": "at least 0"},
            ),
            (
                "/api/v1/prices/openai/gpt-x",
                {**PRICE, "output_per_mtok": "0.0000001"},
                {"output_per_mtok": "6 decimal places"},
            ),
            (
                "/api/v1/prices/openai/gpt-x",
                {**PRICE, "cache_read_per_mtok": True},
                {"cache_read_per_mtok": "number of US dollars"},
            ),
            (
                "/api/v1/prices/openai/gpt-x",
                {k: v for k, v in PRICE.items() if k != "cache_write_per_mtok"},
                {"cache_write_per_mtok": "required"},
            ),
            (
                "/api/v1/prices/openai/gpt-x",
                {**PRICE, "effective_date": "2025-02-30"},
                {"effective_date": "YYYY-MM-DD"},
            ),
            (
                "/api/v1/prices/openai/gpt-x",
                {**PRICE, "input": 1},
                {"input": "not a price field"},
            ),
            (
                "/api/v1/prices/openai/gpt-x",
                {**PRICE, "model": "gpt-y"},
                {"model": "in the path"},
            ),
            (
                "/api/v1/prices/bogus/gpt-x",
                {"input_per_mtok": "x"},
                {
                    "provider_type": "one of",
                    "input_per_mtok": "number",
                    "output_per_mtok": "required",
                    "cache_read_per_mtok": "required",
                    "cache_write_per_mtok": "required",
                },
            ),
        ]
        for path, body, expected in cases:
            status, answer = await call(client, "PUT", path, admin, body)
            assert status == 400, (path, body, answer)
            got = {v["field"]: v["detail"] for v in answer["validations"]}
            assert set(got) == set(expected), (path, got)
            for field, needle in expected.items():
                assert needle in got[field], (path, field, got[field])
        status, answer = await call(client, "PUT", "/api/v1/prices/openai/gpt-x", admin, [1])
        assert status == 400, answer
        status, answer = await call(client, "DELETE", "/api/v1/prices/nope/gpt-5", admin)
        assert status == 400 and answer["validations"][0]["field"] == "provider_type"
        status, answer = await call(client, "GET", "/api/v1/prices?provider_type=x", admin)
        assert status == 400, answer
        assert await audit_rows(services) == []


async def test_a_second_gateway_reloads_prices_from_the_shared_database(
    db_url: str, tmp_path: Path
) -> None:
    # SQLite: no cross-process notification, the reconcile poll heals; PostgreSQL:
    # LISTEN/NOTIFY delivers the hint (the poll interval is long enough not to matter).
    interval = 0.2 if db_url.startswith("sqlite") else 60.0
    settings = {"reconcile_interval": interval}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    url = db_url if not db_url.startswith("sqlite") else f"sqlite:///{tmp_path / 'shared.db'}"
    async with (
        admin_gateway(url, tmp_path / "a", settings_overrides=settings) as (client, _a, admin),
        gateway(url, tmp_path / "b", settings_overrides=settings) as (_client_b, b),
    ):
        assert b.prices.table.lookup("anthropic", "claude-opus-4-5-20251101") is not None
        status, body = await call(
            client, "PUT", "/api/v1/prices/anthropic/claude-next", admin, PRICE
        )
        assert status == 201, body

        async def seen() -> bool:
            return b.prices.table.lookup("anthropic", "claude-next") is not None

        await poll(seen, T, "the second gateway to load the new price")
        price = b.prices.table.lookup("anthropic", "claude-next")
        assert price is not None
        assert (price.input_micros, price.cache_read_micros) == (400_000, 100_000)
