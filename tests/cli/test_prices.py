"""``aibridge prices …`` through click's test runner against real databases, and a running
gateway that reloads what the CLI wrote."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from click.testing import CliRunner, Result

from aibridge.cli import main
from aibridge.testing.gateway import gateway
from aibridge.testing.replicas import poll

TIMEOUT = 60.0


def cli(url: str, *args: str) -> Result:
    """Invoke ``aibridge ARGS`` on database ``url``."""
    return CliRunner().invoke(
        main, list(args), env={"AIBRIDGE_DATABASE_URL": url}, catch_exceptions=False
    )


SET_SONNET_LIKE = (
    "prices",
    "set",
    "anthropic",
    "claude-house-*",
    "--input",
    "3",
    "--output",
    "15",
    "--cache-read",
    "0.3",
    "--cache-write",
    "3.75",
    "--effective-date",
    "2026-01-02",
)


def test_every_prices_command_has_help(sqlite_url: str) -> None:
    for args in ([], ["list"], ["set"], ["delete"]):
        result = cli(sqlite_url, "prices", *args, "--help")
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.stdout
    assert "--cache-write" in cli(sqlite_url, "prices", "set", "--help").stdout


def test_prices_are_listed_set_replaced_and_deleted(sqlite_url: str) -> None:
    result = cli(sqlite_url, "prices", "list", "--provider-type", "openai", "--json")
    assert result.exit_code == 0, result.output
    listed = orjson.loads(result.stdout)
    assert {p["provider_type"] for p in listed} == {"openai"}
    assert {
        "provider_type": "openai",
        "model": "gpt-5-mini",
        "input_per_mtok": 0.25,
        "output_per_mtok": 2,
        "cache_read_per_mtok": 0.025,
        "cache_write_per_mtok": 0.25,
        "effective_date": "2025-12-01",
    } in listed

    result = cli(sqlite_url, *SET_SONNET_LIKE)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].split() == [
        "anthropic",
        "claude-house-*",
        "3",
        "15",
        "0.3",
        "3.75",
        "2026-01-02",
    ]
    assert "Created." in result.stderr
    result = cli(sqlite_url, *SET_SONNET_LIKE[:-2], "--json")
    assert result.exit_code == 0, result.output
    assert "Replaced." in result.stderr
    assert orjson.loads(result.stdout)["effective_date"] != "2026-01-02"  # today

    result = cli(sqlite_url, "prices", "list")
    assert result.exit_code == 0
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0][:2] == ["PROVIDER_TYPE", "MODEL"]
    assert ["anthropic", "claude-house-*"] in [r[:2] for r in rows]

    result = cli(sqlite_url, "prices", "delete", "anthropic", "claude-house-*")
    assert result.exit_code == 0, result.output
    result = cli(sqlite_url, "prices", "delete", "anthropic", "claude-house-*")
    assert result.exit_code == 1
    assert "no price" in result.stderr and "aibridge prices list" in result.stderr


def test_bad_prices_exit_2_naming_every_field(sqlite_url: str) -> None:
    result = cli(
        sqlite_url,
        "prices",
        "set",
        "gemini",
        "g*x",
        "--input",
        "-1",
        "--output",
        "1.0000001",
        "--cache-read",
        "a",
        "--cache-write",
        "1",
        "--effective-date",
        "tomorrow",
    )
    assert result.exit_code == 2, result.output
    for needle in (
        "provider_type: must be one of openai, anthropic",
        "model: '*' is only allowed as the last character",
        "input_per_mtok: must be a finite amount of at least 0",
        "output_per_mtok: must have at most 6 decimal places",
        "cache_read_per_mtok: must be a number",
        "effective_date: must be a date YYYY-MM-DD",
    ):
        assert needle in result.stderr, (needle, result.stderr)
    result = cli(sqlite_url, "prices", "list", "--provider-type", "nope")
    assert result.exit_code == 2 and "provider_type" in result.stderr


async def test_a_running_gateway_reloads_a_price_the_cli_set(db_url: str, tmp_path: Path) -> None:
    # PostgreSQL: the NOTIFY queued in the CLI's transaction; SQLite: the reconcile poll.
    interval = 0.2 if db_url.startswith("sqlite") else 60.0
    async with gateway(db_url, tmp_path, settings_overrides={"reconcile_interval": interval}) as (
        _client,
        services,
    ):
        assert services.prices.table.lookup("anthropic", "claude-house-1") is None
        result = await asyncio.wait_for(asyncio.to_thread(cli, db_url, *SET_SONNET_LIKE), TIMEOUT)
        assert result.exit_code == 0, result.output

        async def loaded() -> bool:
            return services.prices.table.lookup("anthropic", "claude-house-1") is not None

        await poll(loaded, TIMEOUT, "the gateway to load the price the CLI set")
        price = services.prices.table.lookup("anthropic", "claude-house-1")
        assert price is not None and price.cache_write_micros == 3_750_000
        result = await asyncio.wait_for(
            asyncio.to_thread(cli, db_url, "prices", "delete", "anthropic", "claude-house-*"),
            TIMEOUT,
        )
        assert result.exit_code == 0, result.output

        async def unloaded() -> bool:
            return services.prices.table.lookup("anthropic", "claude-house-1") is None

        await poll(unloaded, TIMEOUT, "the gateway to drop the price the CLI deleted")
