"""What the admin API tests share: a gateway whose start and stop are bounded (the test
body is not), one GET with a bearer token, and following ``next_cursor`` to the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from aibridge.server import Services
from aibridge.testing.gateway import gateway

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
