"""A running gateway app on a real loopback port with a real database, and query counting."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from aibridge.clock import Clock
from aibridge.config import Settings
from aibridge.server import Services, create_app, create_runner, running_services
from aibridge.store.models import ApiKey, User
from aibridge.testing.databases import start_from_template
from aibridge.tokens import TOKEN_PREFIX, mint_token

TOKEN_RE = re.compile(rf"{TOKEN_PREFIX}-[0-9a-f]+-\S+")
"""A gateway API key as start-up and the CLI print it."""


class GatewayTestServer(TestServer):
    """``TestServer`` on the production runner (connection timeouts included)."""

    def __init__(self, app: web.Application, settings: Settings, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._settings = settings

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return create_runner(self.app, self._settings, **kwargs)


@asynccontextmanager
async def gateway(
    db_url: str,
    tmp_path: Path,
    *,
    environ: dict[str, str] | None = None,
    encryption_key: str = "",
    announced: list[str] | None = None,
    settings_overrides: Mapping[str, Any] | None = None,
    clock: Clock | None = None,
    recorder_options: Mapping[str, Any] | None = None,
) -> AsyncIterator[tuple[TestClient[web.Request, web.Application], Services]]:
    """Start the full gateway app on an ephemeral loopback port; yields (client, services).

    ``announced`` collects what start-up prints (e.g. the first admin key).
    ``settings_overrides`` are extra :class:`Settings` fields (e.g. ``max_body_bytes``);
    ``clock`` and ``recorder_options`` are passed to :func:`running_services`.
    """
    await start_from_template(db_url)
    settings = Settings(
        database_url=db_url,
        data_dir=tmp_path,
        encryption_key=encryption_key,
        **dict(settings_overrides or {}),
    )
    sink = announced if announced is not None else []
    async with running_services(
        settings,
        environ=environ or {},
        announce=sink.append,
        clock=clock,
        recorder_options=recorder_options,
    ) as services:
        app = create_app(services)
        server = GatewayTestServer(app, settings, host="127.0.0.1", port=0)
        client: TestClient[web.Request, web.Application] = TestClient(server)
        async with server, client:
            yield client, services


@asynccontextmanager
async def admin_gateway(
    db_url: str, tmp_path: Path, **kwargs: Any
) -> AsyncIterator[tuple[TestClient[web.Request, web.Application], Services, str]]:
    """:func:`gateway` on a fresh database, with the first admin's key it announced; yields
    (client, services, admin key). Keyword arguments go to :func:`gateway`."""
    announced: list[str] = []
    async with gateway(db_url, tmp_path, announced=announced, **kwargs) as (client, services):
        yield client, services, announced_admin_token(announced)


async def add_member(services: Services, username: str = "bob") -> str:
    """A member user with one gateway key, written straight to the database; returns the
    key. The gateway is told the key exists, as the admin API would."""
    new = mint_token()
    async with services.sessions() as s, s.begin():
        user = User(id=uuid.uuid4(), username=username, role="member", status="active")
        s.add(user)
        await s.flush()
        s.add(ApiKey(id=new.key_id, user_id=user.id, name="t", secret_hash=new.secret_hash))
    services.authenticator.invalidate(new.key_id)
    return new.token


@contextmanager
def count_queries(engine: AsyncEngine) -> Iterator[list[str]]:
    """Collect every SQL statement the engine sends while the block runs."""
    statements: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before)


def find_admin_token(lines: Iterable[str]) -> str | None:
    """The first gateway API key printed in ``lines`` (e.g. the first admin's key that
    start-up announces), or None."""
    for line in lines:
        if (match := TOKEN_RE.search(line)) is not None:
            return match.group(0)
    return None


def announced_admin_token(announced: Iterable[str]) -> str:
    """The first admin's key from what start-up announced (AssertionError when none)."""
    announced = list(announced)
    token = find_admin_token(announced)
    if token is None:
        raise AssertionError(f"no admin key announced in {announced!r}")
    return token
