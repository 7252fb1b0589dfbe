"""What the admin API tests share: a gateway whose start and stop are bounded (the test
body is not), one GET with a bearer token, following ``next_cursor`` to the end, and users
with a key each seeded straight into the database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncSession

from aibridge.server import Services
from aibridge.store.models import ApiKey, User
from aibridge.testing.gateway import gateway
from aibridge.tokens import mint_token

T = 20
"""Seconds: the upper bound of any single await that could hang."""


@asynccontextmanager
async def bounded_gateway(
    db_url: str, tmp_path: Path, **kwargs: Any
) -> AsyncIterator[tuple[TestClient[web.Request, web.Application], Services]]:
    """:func:`~aibridge.testing.gateway.gateway` with its start and its stop each bounded
    by :data:`T` seconds (a test's own checks may take longer)."""
    async with asyncio.timeout(T):
        cm = gateway(db_url, tmp_path, **kwargs)
        client, services = await cm.__aenter__()
    try:
        yield client, services
    finally:
        async with asyncio.timeout(T):
            await cm.__aexit__(None, None, None)


async def get(
    client: TestClient[web.Request, web.Application],
    path: str,
    token: str | None,
    /,
    **params: str,
) -> tuple[int, Any]:
    """GET ``path`` with ``params`` (and the bearer ``token`` when given): status and JSON."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with asyncio.timeout(T):
        resp = await client.get(path, params=params, headers=headers)
        return resp.status, await resp.json()


async def all_pages(
    client: TestClient[web.Request, web.Application],
    path: str,
    key: str,
    token: str,
    **params: str,
) -> list[dict[str, Any]]:
    """Every item under ``key`` of ``path``'s pages, following ``next_cursor``; every page
    a cursor promised must be non-empty."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        status, body = await get(client, path, token, **query)
        assert status == 200, body
        assert body[key], "a page promised by next_cursor must not be empty"
        items += body[key]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("paging did not end")


@dataclass(frozen=True)
class SeededUser:
    """A user added by :func:`add_users` with its one key."""

    user: User
    token: str
    key_id: str


async def add_users(session: AsyncSession, roles: Mapping[str, str]) -> dict[str, SeededUser]:
    """Add a user per ``{username: role}`` with one API key each (in ``session``'s
    transaction); by username."""
    added: dict[str, SeededUser] = {}
    for name, role in roles.items():
        user = User(username=name, role=role)
        session.add(user)
        await session.flush()
        minted = mint_token()
        session.add(ApiKey(id=minted.key_id, user_id=user.id, secret_hash=minted.secret_hash))
        added[name] = SeededUser(user, minted.token, minted.key_id)
    return added
