"""Helpers shared by CLI commands: settings from flags, running coroutines, the store."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import orjson
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.config import Settings
from aibridge.eventloop import run
from aibridge.inputcheck import EMPTY_PATCH, InputError
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


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` to stderr and exit."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


class CLIFailure(Exception):
    """A user-facing error raised inside the event loop and reported outside it as
    ``error: …`` with exit status ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def settings_from_flags(database_url: str, data_dir: str) -> Settings:
    """Settings for a command that uses the database: the flags over the environment; exits
    with the reason when the database URL cannot be used."""
    settings = load_settings(database_url=database_url, data_dir=Path(data_dir) if data_dir else "")
    try:
        settings.resolved_database_url()
    except ValueError as exc:
        fail(str(exc))
    return settings


def input_failure(err: InputError, command: str) -> CLIFailure:
    """Invalid input as the lines a user reads (exit status 2); ``command`` (``providers
    update``) is named when nothing was given to change."""
    lines = [err.message]
    lines += [f"  {e.field}: {e.detail}" for e in err.errors]
    if err.message == EMPTY_PATCH:
        lines.append(f"  pass at least one option; see `aibridge {command} --help`")
    return CLIFailure("\n".join(lines), code=2)


def validated(check: Callable[[Any], T], body: Any, command: str) -> T:
    """``check(body)`` (a validation function), or exit 2 saying what to fix."""
    try:
        return check(body)
    except InputError as exc:
        failure = input_failure(exc, command)
        fail(str(failure), failure.code)


def run_command(
    coro: Coroutine[Any, Any, T],
    command: str = "",
    reported: tuple[type[Exception], ...] = (),
) -> T:
    """Run a command's coroutine, turning the errors a user can fix into ``error: …`` and
    a non-zero exit (2 for invalid input, 1 otherwise). ``reported``: more exception types
    whose message is the whole story."""
    try:
        return run(coro)
    except CLIFailure as exc:
        fail(str(exc), exc.code)
    except reported as exc:
        fail(str(exc))
    except InputError as exc:
        failure = input_failure(exc, command)
        fail(str(failure), failure.code)
    except EncryptionKeyError as exc:
        fail(str(exc))
    except (OSError, DBAPIError) as exc:
        reason = getattr(exc, "orig", None) or exc
        fail(
            f"cannot use the database: {reason}; check --database-url / AIBRIDGE_DATABASE_URL "
            "(or --data-dir)"
        )


def tell_running_gateways(url: str, settings: Settings) -> None:
    """Say when running gateways see a configuration change written to ``url``."""
    if url.startswith("postgresql"):
        click.echo("Running gateways were notified and reload now.", err=True)
    else:
        click.echo(
            "Running gateways pick the change up within their reconcile interval "
            f"({settings.reconcile_interval:g}s, AIBRIDGE_RECONCILE_INTERVAL).",
            err=True,
        )


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
