"""Test helpers: a running gateway app on a real loopback port with a real database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from aibridge.config import Settings
from aibridge.server import create_app, running_services
from aibridge.services import Services


@asynccontextmanager
async def gateway(
    db_url: str,
    tmp_path: Path,
    *,
    environ: dict[str, str] | None = None,
    encryption_key: str = "",
    announced: list[str] | None = None,
) -> AsyncIterator[tuple[TestClient[web.Request, web.Application], Services]]:
    """Start the full gateway app on an ephemeral loopback port; yields (client, services).

    ``announced`` collects what start-up prints (e.g. the first admin key).
    """
    settings = Settings(database_url=db_url, data_dir=tmp_path, encryption_key=encryption_key)
    sink = announced if announced is not None else []
    async with running_services(settings, environ=environ or {}, announce=sink.append) as services:
        app = create_app(services)
        async with (
            TestServer(app, host="127.0.0.1", port=0) as server,
            TestClient(server) as client,
        ):
            yield client, services
