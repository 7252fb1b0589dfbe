"""``aibridge serve`` and ``aibridge migrate``."""

from __future__ import annotations

import sys

import click

from aibridge.cli import main
from aibridge.cli.common import async_command, database_option, fail, load_settings, run
from aibridge.config import Settings
from aibridge.secrets_mask import mask_url
from aibridge.server import StartupError, running_services, serve_forever
from aibridge.server.tracing import TracingConfigError
from aibridge.server.workers import run_workers
from aibridge.store.crypto import EncryptionKeyError
from aibridge.store.db import create_engine, migrate, migration_status
from aibridge.telemetry import setup_logging


@main.command()
@click.option(
    "--listen", envvar="AIBRIDGE_LISTEN", default="", help="HOST:PORT (default 127.0.0.1:8080)."
)
@database_option
@click.option(
    "--data-dir",
    envvar="AIBRIDGE_DATA_DIR",
    default="",
    help="Directory for the SQLite database (default ./aibridge-data).",
)
@click.option(
    "--log-level",
    envvar="AIBRIDGE_LOG_LEVEL",
    default=None,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log level (default info).",
)
@click.option(
    "--log-format",
    envvar="AIBRIDGE_LOG_FORMAT",
    default=None,
    type=click.Choice(["text", "json"]),
    help="Log format (default text; json: one JSON object per line).",
)
@click.option(
    "--log-levels",
    envvar="AIBRIDGE_LOG_LEVELS",
    default="",
    help="Per-logger levels over --log-level, e.g. aibridge.pool=debug,aiosqlite=info.",
)
@click.option(
    "--workers",
    envvar="AIBRIDGE_WORKERS",
    default=None,
    type=click.IntRange(1, 64),
    help="Worker processes sharing the port (default 1).",
)
@click.option(
    "--proxy-listen",
    envvar="AIBRIDGE_PROXY_LISTEN",
    default="",
    help="Also run the HTTPS proxy on HOST:PORT in this process (see `aibridge proxy`).",
)
def serve(
    listen: str,
    database_url: str,
    data_dir: str,
    log_level: str | None,
    log_format: str | None,
    log_levels: str,
    workers: int | None,
    proxy_listen: str,
) -> None:
    """Run the gateway (migrates the database first)."""
    settings = load_settings(
        proxy_listen=proxy_listen,
        listen=listen,
        database_url=database_url,
        data_dir=data_dir,
        log_level=log_level,
        log_format=log_format,
        log_levels=log_levels,
        workers=workers,
    )
    setup_logging(
        settings.log_level,
        settings.log_format,
        bad_request_log_interval=settings.bad_request_log_interval,
        levels=settings.logger_levels(),
        secrets=settings.log_secrets(),
    )
    try:
        if settings.workers > 1:
            if settings.proxy_listen:
                fail(
                    "--proxy-listen runs in one process; with --workers, run "
                    "`aibridge proxy --listen HOST:PORT --gateway-url URL` beside the gateway"
                )
            # Migrate, bootstrap and seed once, before the workers race for it.
            run(prepare(settings))
            sys.exit(run_workers(settings))
        run(serve_forever(settings))
    except (EncryptionKeyError, StartupError, TracingConfigError) as exc:
        fail(str(exc))


async def prepare(settings: Settings) -> None:
    """One full start-up and shutdown: migrations, first admin, provider seeding."""
    async with running_services(settings):
        pass


@main.command()
@database_option
@click.option("--status", is_flag=True, help="Only print the current and latest revision.")
@async_command
async def migrate_cmd(database_url: str, status: bool) -> None:
    """Apply database migrations (serve does this automatically)."""
    settings = load_settings(database_url=database_url)
    engine = create_engine(settings.resolved_database_url())
    try:
        if not status:
            click.echo(f"migrating {mask_url(settings.resolved_database_url())} …", err=True)
            await migrate(engine)
        current, head = await migration_status(engine)
        click.echo(f"current revision: {current or 'none'}; latest: {head}")
    except OSError as exc:
        fail(f"cannot reach the database: {exc}; check --database-url")
    finally:
        await engine.dispose()


migrate_cmd.name = "migrate"
