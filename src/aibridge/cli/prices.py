"""``aibridge prices …``: list, set and delete model prices directly in the database.

Same validation and messages as ``/api/v1/prices`` (:func:`aibridge.store.prices.parse_price`)
and the same audit rows (actor ``cli``). On PostgreSQL a change notification is queued in
the same transaction, so running gateways reload their prices the moment it commits; on
SQLite they pick the change up at their next reconcile poll.
"""

from __future__ import annotations

import click
from sqlalchemy.ext.asyncio import AsyncSession

from aibridge.cli import main
from aibridge.cli.common import (
    CLI_ACTOR,
    CLIFailure,
    data_dir_option,
    database_option,
    echo_json,
    echo_table,
    fail,
    input_failure,
    json_option,
    notify_at_commit,
    open_store,
    run_command,
    settings_from_flags,
    tell_running_gateways,
    validated,
)
from aibridge.inputcheck import InputError
from aibridge.store import prices as store
from aibridge.store.models import PROVIDER_TYPES
from aibridge.store.pubsub import PRICES_CHANGED

TYPES_HELP = ", ".join(PROVIDER_TYPES)


def _print(prices: list[store.StoredPrice], as_json: bool, *, single: bool = False) -> None:
    data = [p.to_json() for p in prices]
    if as_json:
        echo_json(data[0] if single else data)
        return
    echo_table(
        ["provider_type", "model", "input", "output", "cache_read", "cache_write", "since"],
        [
            [
                d["provider_type"],
                d["model"],
                *(str(d[f]) for f in store.PRICE_FIELDS),
                d["effective_date"],
            ]
            for d in data
        ],
    )


def _check_path(provider_type: str, model: str, command: str) -> None:
    errors = [
        e
        for e in (store.provider_type_error(provider_type), store.model_error(model))
        if e is not None
    ]
    if errors:
        failure = input_failure(InputError(store.INVALID_PRICE, errors), command)
        fail(str(failure), failure.code)


@main.group()
def prices() -> None:
    """Manage model prices: USD per million tokens of input, output, cache read and cache
    write, per provider type and model (works directly on the database).

    Every upstream call is recorded with its cost from these prices; a model without a
    price is recorded as unpriced (cost 0, flagged in `aibridge usage`), never guessed.
    A MODEL ending in '*' prices every model starting with the rest (dated snapshots:
    claude-sonnet-4-5*); an exact name wins over a pattern, a longer pattern over a
    shorter one. The shipped defaults are dated: check them against your contract.
    """


@prices.command("list")
@click.option("--provider-type", default=None, help=f"Only this provider type: {TYPES_HELP}.")
@json_option
@database_option
@data_dir_option
def list_cmd(provider_type: str | None, as_json: bool, database_url: str, data_dir: str) -> None:
    """List prices (USD per million tokens) by provider type and model."""
    if provider_type is not None:
        _check_path(provider_type, "x", "prices list")
    settings = settings_from_flags(database_url, data_dir)

    async def go() -> list[store.StoredPrice]:
        async with open_store(settings) as (sessions, _encryptor, _url), sessions() as session:
            return await store.list_prices(session, provider_type)

    rows = run_command(go(), "prices list")
    if not rows and not as_json:
        click.echo("No prices. Set one with `aibridge prices set --help`.", err=True)
        return
    _print(rows, as_json)


@prices.command("set")
@click.argument("provider_type")
@click.argument("model")
@click.option("--input", "input_", required=True, help="USD per million uncached input tokens.")
@click.option("--output", required=True, help="USD per million output tokens (reasoning included).")
@click.option(
    "--cache-read",
    required=True,
    help="USD per million input tokens read from the prompt cache (OpenAI: cached input).",
)
@click.option(
    "--cache-write",
    required=True,
    help="USD per million input tokens written to the prompt cache (Anthropic: the 5-minute "
    "write price; OpenAI bills none extra: give the input price).",
)
@click.option(
    "--effective-date", default=None, help="YYYY-MM-DD the price applies from (default today)."
)
@json_option
@database_option
@data_dir_option
def set_cmd(
    provider_type: str,
    model: str,
    input_: str,
    output: str,
    cache_read: str,
    cache_write: str,
    effective_date: str | None,
    as_json: bool,
    database_url: str,
    data_dir: str,
) -> None:
    """Create or replace the price of MODEL (or MODEL-PREFIX*) on PROVIDER_TYPE.

    Example: aibridge prices set anthropic 'claude-sonnet-4-5*' --input 3 --output 15
    --cache-read 0.3 --cache-write 3.75
    """
    body: dict[str, object] = {
        "input_per_mtok": input_,
        "output_per_mtok": output,
        "cache_read_per_mtok": cache_read,
        "cache_write_per_mtok": cache_write,
    }
    if effective_date is not None:
        body["effective_date"] = effective_date
    price = validated(lambda b: store.parse_price(provider_type, model, b), body, "prices set")
    settings = settings_from_flags(database_url, data_dir)

    async def go() -> tuple[store.StoredPrice | None, str]:
        async with open_store(settings) as (sessions, _encryptor, url):
            async with sessions() as session, session.begin():
                before = await store.upsert_price(session, price)
                store.audit_price(
                    session,
                    action="create" if before is None else "update",
                    before=before,
                    after=price,
                    actor_id=None,
                    actor_username=CLI_ACTOR,
                )
                await _notify(session)
            return before, url

    before, url = run_command(go(), "prices set")
    _print([price], as_json, single=True)
    click.echo("Created." if before is None else "Replaced.", err=True)
    tell_running_gateways(url, settings)


@prices.command("delete")
@click.argument("provider_type")
@click.argument("model")
@database_option
@data_dir_option
def delete_cmd(provider_type: str, model: str, database_url: str, data_dir: str) -> None:
    """Delete the price of exactly MODEL (a pattern by its own name, e.g. 'gpt-5-20*').

    Calls of the model are recorded unpriced from then on.
    """
    _check_path(provider_type, model, "prices delete")
    settings = settings_from_flags(database_url, data_dir)

    async def go() -> str:
        async with open_store(settings) as (sessions, _encryptor, url):
            async with sessions() as session, session.begin():
                before = await store.delete_price(session, provider_type, model)
                if before is None:
                    raise CLIFailure(
                        f'no price for "{model}" on {provider_type}; '
                        "list them with `aibridge prices list`"
                    )
                store.audit_price(
                    session,
                    action="delete",
                    before=before,
                    after=None,
                    actor_id=None,
                    actor_username=CLI_ACTOR,
                )
                await _notify(session)
            return url

    url = run_command(go(), "prices delete")
    click.echo(f"Deleted the price of {model} on {provider_type}.", err=True)
    tell_running_gateways(url, settings)


async def _notify(session: AsyncSession) -> None:
    await notify_at_commit(session, PRICES_CHANGED)
