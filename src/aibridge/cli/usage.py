"""``aibridge usage``: token usage totals straight from the database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from aibridge.cli import main
from aibridge.cli.common import (
    async_command,
    database_option,
    echo_json,
    echo_table,
    fail,
    load_settings,
    open_store,
)
from aibridge.store.interceptions import GROUP_BY, TOKEN_FIELDS, InterceptionFilter, parse_time
from aibridge.store.interceptions import usage as usage_query


def _time(name: str, value: str) -> datetime | None:
    if not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        fail(f"--{name} {value!r} is not a date (2025-01-31) or RFC 3339 time", code=2)
        raise  # unreachable: fail() exits


def _totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {f: sum(r[f] for r in rows) for f in ("interceptions", *TOKEN_FIELDS)}


@main.command()
@click.option(
    "--group-by",
    type=click.Choice(GROUP_BY),
    default="user",
    show_default=True,
    help="What each row totals.",
)
@click.option("--since", default="", help="Only interceptions started at/after this date or time.")
@click.option("--until", default="", help="Only interceptions started before this date or time.")
@click.option("--user", default="", help="Only this user (username or id).")
@click.option("--provider", default="", help="Only this provider name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@database_option
@async_command
async def usage(
    group_by: str,
    since: str,
    until: str,
    user: str,
    provider: str,
    as_json: bool,
    database_url: str,
) -> None:
    """Show interceptions and tokens (uncached input, output, cache read/write, reasoning)."""
    settings = load_settings(database_url=database_url)
    f = InterceptionFilter(
        user=user or None,
        provider=provider or None,
        since=_time("since", since),
        until=_time("until", until),
    )
    async with open_store(settings) as (sessions, _encryptor, _url), sessions() as session:
        rows = await usage_query(session, group_by, f)
    totals = _totals(rows)
    if as_json:
        echo_json({"group_by": group_by, "rows": rows, "totals": totals})
        return
    headers = [group_by, "interceptions", *TOKEN_FIELDS]
    fields = ("interceptions", *TOKEN_FIELDS)
    table = [[r["key"], *(str(r[k]) for k in fields)] for r in rows]
    table.append(["TOTAL", *(str(totals[k]) for k in fields)])
    echo_table(headers, table)
