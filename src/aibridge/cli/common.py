"""Helpers shared by CLI commands: settings from flags, running coroutines, the store."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from functools import wraps
from typing import Any, TypeVar

import click
import orjson
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.config import Settings
from aibridge.server.runner import run
from aibridge.store.crypto import EncryptionKeyError, Encryptor
from aibridge.store.db import create_engine, migrate, session_factory

T = TypeVar("T")

CLI_ACTOR = "cli"
"""The actor name of audit rows written by CLI commands."""

database_option = click.option(
    "--database-url",
    envvar="AIBRIDGE_DATABASE_URL",
    default="",
    help="postgresql://… or sqlite:///file.db (default: SQLite in $AIBRIDGE_DATA_DIR).",
)
data_dir_option = click.option(
    "--data-dir",
    envvar="AIBRIDGE_DATA_DIR",
    default="",
    help="Directory of the SQLite database (default ./aibridge-data).",
)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment with non-empty flag values on top; exits with a
    readable message on invalid values."""
    values = {k: v for k, v in overrides.items() if v not in (None, "")}
    try:
        return Settings(**values)
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            click.echo(f"error: invalid setting {field}: {err['msg']}", err=True)
        sys.exit(2)


def fail(message: str, code: int = 1) -> None:
    """Print ``error: message`` to stderr and exit."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@asynccontextmanager
async def open_store(
    settings: Settings,
) -> AsyncIterator[tuple[async_sessionmaker[AsyncSession], Encryptor | None, str]]:
    """Migrated database session factory, encryptor and database URL for CLI commands."""
    url = settings.resolved_database_url()
    engine = create_engine(url)
    try:
        await migrate(engine)
        encryptor = Encryptor(settings.encryption_key) if settings.encryption_key else None
        yield session_factory(engine), encryptor, url
    except EncryptionKeyError as exc:
        fail(str(exc))
    finally:
        await engine.dispose()


def echo_json(data: object) -> None:
    """Print ``data`` as indented JSON."""
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def echo_table(headers: list[str], rows: list[list[str]]) -> None:
    """Print a simple aligned table."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    line = "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))
    click.echo(line.rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def async_command(fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Decorator: run an async click callback with :func:`run`."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return run(fn(*args, **kwargs))

    return wrapper


async def notify_at_commit(session: AsyncSession, channel: str, payload: str = "") -> None:
    """Queue a PostgreSQL ``NOTIFY`` for running replicas (nothing on SQLite).

    NOTIFY inside the transaction is delivered by PostgreSQL exactly when it commits (and
    never if it rolls back): the "publish after commit" rule without a second connection.
    """
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        await conn.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload}
        )
