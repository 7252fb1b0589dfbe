"""``aibridge usage``: token and cost totals straight from the database."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
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
from aibridge.limits import usd_number
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


UNPRICED_NOTE = (
    "* some calls used models without a price and count as 0 here; set one with "
    "`aibridge prices set` (see `aibridge prices list`)"
)


def _usd(value: int | float) -> Decimal:
    # The API's numbers carry at most 15 significant digits, so str() is the exact decimal.
    return Decimal(str(value))


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {f: sum(r[f] for r in rows) for f in ("interceptions", *TOKEN_FIELDS)}
    # Summed as decimals, not floats, so the total is exactly the sum of the rows.
    totals["cost_usd"] = usd_number(sum((_usd(r["cost_usd"]) for r in rows), Decimal(0)))
    totals["unpriced"] = any(r["unpriced"] for r in rows)
    return totals


def _cost_cell(row: dict[str, Any]) -> str:
    return f"{_usd(row['cost_usd']):f}" + ("*" if row["unpriced"] else "")


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
    """Show interceptions, tokens (uncached input, output, cache read/write, reasoning) and
    cost in USD per user, gateway key, model, provider or day (UTC).

    Cost is the sum of the recorded cost of every upstream call (tokens times the price
    in force when the call was recorded). Calls of models without a price count as 0 and
    are flagged with '*' (and "unpriced": true with --json), never guessed.
    """
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
    # A key id alone says little: its row also names the key and its user.
    named = group_by == "key"
    headers = [group_by, *(["name", "user"] if named else []), "interceptions", *TOKEN_FIELDS]
    headers.append("cost_usd")
    fields = ("interceptions", *TOKEN_FIELDS)
    table = [
        [
            r["key"],
            *([r["name"] or "-", r["user"]] if named else []),
            *(str(r[k]) for k in fields),
            _cost_cell(r),
        ]
        for r in rows
    ]
    table.append(["TOTAL", *(["", ""] if named else []), *(str(totals[k]) for k in fields)])
    table[-1].append(_cost_cell(totals))
    echo_table(headers, table)
    if totals["unpriced"]:
        click.echo(UNPRICED_NOTE, err=True)
