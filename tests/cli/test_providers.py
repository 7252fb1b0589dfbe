"""``aibridge providers …`` through click's test runner against real databases."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import orjson
import pytest
from click.testing import CliRunner, Result

from aibridge.cli import main
from aibridge.secrets_mask import mask_secret
from aibridge.store.pubsub import PROVIDERS_CHANGED

KEY_1 = "sk-cli-1111111111111111111111aaaa"
KEY_2 = "sk-cli-2222222222222222222222bbbb"
KEY_3 = "sk-cli-3333333333333333333333cccc"
TIMEOUT = 60.0


def cli(
    url: str, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> Result:
    """Invoke ``aibridge providers ARGS`` on database ``url``."""
    runner = CliRunner()
    base_env = {"AIBRIDGE_ENCRYPTION_KEY": "", "AIBRIDGE_DATABASE_URL": url}
    return runner.invoke(
        main,
        ["providers", *args],
        env={**base_env, **(env or {})},
        input=stdin,
        catch_exceptions=False,
    )


def no_secrets(result: Result) -> None:
    for secret in (KEY_1, KEY_2, KEY_3):
        assert secret not in result.stdout and secret not in result.stderr


def test_every_providers_command_has_help_listing_the_provider_types(sqlite_url: str) -> None:
    for args in ([], ["list"], ["create"], ["update"], ["delete"]):
        result = cli(sqlite_url, *args, "--help")
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.stdout
    # Undo click's wrapping (which may break lines after a hyphen).
    text = " ".join(cli(sqlite_url, "create", "--help").stdout.split()).replace("- ", "-")
    assert "openai, anthropic, azure, openai-compat, openrouter" in text


def test_providers_are_created_listed_updated_and_deleted_with_masked_keys(
    sqlite_url: str, tmp_path: Path
) -> None:
    result = cli(sqlite_url, "list")
    assert result.exit_code == 0 and "No providers" in result.stderr

    result = cli(
        sqlite_url,
        "create",
        "team-openai",
        "--type",
        "openai",
        "--base-url",
        "https://api.openai.com/v1",
        "--api-key",
        KEY_1,
        "--api-key-file",
        "-",
        "--json",
        stdin=f"{KEY_2}\n\n",
    )
    assert result.exit_code == 0, result.output
    no_secrets(result)
    created = orjson.loads(result.stdout)
    assert created["name"] == "team-openai" and created["enabled"] is True
    assert [k["masked"] for k in created["api_keys"]] == [mask_secret(KEY_1), mask_secret(KEY_2)]
    assert "reconcile interval" in result.stderr
    key_1, key_2 = (k["id"] for k in created["api_keys"])

    result = cli(sqlite_url, "list")
    assert result.exit_code == 0
    no_secrets(result)
    header, row = result.stdout.splitlines()
    assert header.split() == ["NAME", "TYPE", "STATUS", "BASE_URL", "KEYS"]
    assert row.startswith("team-openai") and "enabled" in row
    assert f"{key_1[:8]}={mask_secret(KEY_1)}" in row

    settings_file = tmp_path / "settings.json"
    settings_file.write_text('{"upstream_timeout_seconds": 600}')
    result = cli(
        sqlite_url,
        "update",
        "team-openai",
        "--disable",
        "--display-name",
        "Team OpenAI",
        "--remove-key",
        key_1[:8],
        "--add-key",
        KEY_3,
        "--settings",
        f"@{settings_file}",
        "--json",
    )
    assert result.exit_code == 0, result.output
    no_secrets(result)
    updated = orjson.loads(result.stdout)
    assert updated["enabled"] is False and updated["display_name"] == "Team OpenAI"
    assert updated["settings"] == {"upstream_timeout_seconds": 600}
    assert updated["api_keys"][0]["id"] == key_2
    assert [k["masked"] for k in updated["api_keys"]] == [mask_secret(KEY_2), mask_secret(KEY_3)]

    result = cli(
        sqlite_url, "update", updated["id"], "--clear-keys", "--settings", "null", "--json"
    )
    assert result.exit_code == 0, result.output
    cleared = orjson.loads(result.stdout)
    assert cleared["api_keys"] == [] and cleared["settings"] is None

    result = cli(sqlite_url, "list", "--json")
    assert [p["name"] for p in orjson.loads(result.stdout)] == ["team-openai"]

    result = cli(sqlite_url, "delete", "team-openai")
    assert result.exit_code == 0, result.output
    assert 'Deleted provider "team-openai"' in result.stdout
    assert orjson.loads(cli(sqlite_url, "list", "--json").stdout) == []
    deleted = orjson.loads(cli(sqlite_url, "list", "--deleted", "--json").stdout)
    assert [(p["name"], p.get("deleted")) for p in deleted] == [("team-openai", True)]
    result = cli(sqlite_url, "list", "--deleted")
    assert "deleted" in result.stdout.splitlines()[1]

    # The name is free again (and --name works like the argument).
    result = cli(
        sqlite_url,
        "create",
        "--name",
        "team-openai",
        "--type",
        "openai",
        "--base-url",
        "http://x",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["id"] != created["id"]


def test_bad_provider_commands_exit_non_zero_saying_what_to_fix(sqlite_url: str) -> None:
    result = cli(
        sqlite_url,
        "create",
        "Bad_Name",
        "--type",
        "vertex",
        "--base-url",
        "ftp://x",
        "--api-key",
        " k",
    )
    assert result.exit_code == 2
    assert "Invalid AI provider request." in result.stderr
    assert 'type: unsupported provider type "vertex"' in result.stderr
    assert "name: name must match ^[a-z0-9]+(-[a-z0-9]+)*$" in result.stderr
    assert 'base_url: base_url scheme must be http or https, got "ftp"' in result.stderr
    assert (
        "api_keys[0]: api_keys entries must not contain leading or trailing whitespace"
        in result.stderr
    )

    result = cli(sqlite_url, "create", "--type", "openai", "--base-url", "http://x")
    assert result.exit_code == 2 and "name: name is required" in result.stderr
    result = cli(
        sqlite_url, "create", "a", "--name", "b", "--type", "openai", "--base-url", "http://x"
    )
    assert result.exit_code == 2 and "disagree" in result.stderr

    result = cli(sqlite_url, "create", "api", "--type", "openai", "--base-url", "http://x")
    assert result.exit_code == 2 and 'name "api" is reserved by the gateway' in result.stderr

    result = cli(
        sqlite_url, "create", "p", "--type", "openai", "--base-url", "http://x", "--settings", "{"
    )
    assert result.exit_code == 2 and "not valid JSON" in result.stderr

    assert (
        cli(sqlite_url, "create", "p", "--type", "openai", "--base-url", "http://x").exit_code == 0
    )
    result = cli(sqlite_url, "create", "p", "--type", "anthropic", "--base-url", "http://y")
    assert result.exit_code == 1
    assert 'provider "p" already exists' in result.stderr
    assert "aibridge providers update p" in result.stderr

    result = cli(sqlite_url, "update", "p")
    assert result.exit_code == 2
    assert "At least one field must be provided." in result.stderr

    result = cli(sqlite_url, "update", "p", "--settings", '{"api_version": "2024-10-21"}')
    assert result.exit_code == 2
    assert "settings.api_version: api_version is only valid for type=azure" in result.stderr

    result = cli(sqlite_url, "update", "p", "--remove-key", "deadbeef")
    assert result.exit_code == 1 and 'no key matching id "deadbeef"' in result.stderr

    result = cli(sqlite_url, "update", "missing", "--enable")
    assert result.exit_code == 1
    assert 'no provider "missing"' in result.stderr and "aibridge providers list" in result.stderr

    result = cli(sqlite_url, "delete", "Not A Name")
    assert result.exit_code == 2 and "Invalid provider id or name" in result.stderr

    result = cli(sqlite_url, "delete", "missing")
    assert result.exit_code == 1 and 'no provider "missing"' in result.stderr


def test_encryption_key_required_once_used(sqlite_url: str) -> None:
    enc = {"AIBRIDGE_ENCRYPTION_KEY": "e" * 40}
    result = cli(
        sqlite_url,
        "create",
        "sealed",
        "--type",
        "anthropic",
        "--base-url",
        "https://api.anthropic.com",
        "--api-key",
        KEY_1,
        env=enc,
    )
    assert result.exit_code == 0, result.output
    assert cli(sqlite_url, "list", env=enc).exit_code == 0
    result = cli(sqlite_url, "list")
    assert result.exit_code == 1
    assert "AIBRIDGE_ENCRYPTION_KEY is not set" in result.stderr


async def test_postgres_write_notifies_replicas(pg_url: str) -> None:
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(pg_url)
    try:
        await listener.add_listener(
            PROVIDERS_CHANGED, lambda _c, _pid, _ch, payload: received.put_nowait(payload)
        )
        result = await asyncio.to_thread(
            cli, pg_url, "create", "pg-one", "--type", "openai", "--base-url", "http://x"
        )
        assert result.exit_code == 0, result.output
        assert "notified" in result.stderr
        async with asyncio.timeout(TIMEOUT):
            await received.get()
        # A failed write (duplicate name) rolls back and notifies nobody; the next
        # successful write's notification is then the only one queued.
        result = await asyncio.to_thread(
            cli, pg_url, "create", "pg-one", "--type", "openai", "--base-url", "http://x"
        )
        assert result.exit_code == 1
        result = await asyncio.to_thread(cli, pg_url, "delete", "pg-one")
        assert result.exit_code == 0, result.output
        # PostgreSQL delivers notifications in commit order: a sentinel sent now arrives
        # after everything the CLI sent.
        sender = await asyncpg.connect(pg_url)
        try:
            await sender.execute(f"NOTIFY {PROVIDERS_CHANGED}, 'sentinel'")
        finally:
            await sender.close()
        payloads = []
        async with asyncio.timeout(TIMEOUT):
            while (payload := await received.get()) != "sentinel":
                payloads.append(payload)
        assert payloads == [""]  # the delete only
    finally:
        await listener.close()


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_list_shows_every_provider_by_name_in_table_and_json(sqlite_url: str, fmt: str) -> None:
    for name in ("b-two", "a-one"):
        args = ["create", name, "--type", "openai", "--base-url", "http://x", "--api-key", KEY_1]
        assert cli(sqlite_url, *args).exit_code == 0
    extra = ["--json"] if fmt == "json" else []
    result = cli(sqlite_url, "list", *extra)
    assert result.exit_code == 0
    no_secrets(result)
    if fmt == "json":
        assert [p["name"] for p in orjson.loads(result.stdout)] == ["a-one", "b-two"]
    else:
        assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ["a-one", "b-two"]
