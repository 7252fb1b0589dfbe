"""``aibridge mcp-servers …`` through click's test runner against real databases."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
from click.testing import CliRunner, Result
from sqlalchemy import text

from aibridge.cli import main
from aibridge.secrets_mask import mask_secret
from aibridge.store.db import create_engine
from aibridge.store.pubsub import MCP_SERVERS_CHANGED
from aibridge.store.urls import normalize_database_url

SECRET = "hdr-cli-1111111111111111aaaa"
SECRET_2 = "hdr-cli-2222222222222222bbbb"
ENC_KEY = "c" * 40
TIMEOUT = 60.0


def cli(
    url: str, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> Result:
    """Invoke ``aibridge mcp-servers ARGS`` on database ``url``."""
    base_env = {"AIBRIDGE_ENCRYPTION_KEY": "", "AIBRIDGE_DATABASE_URL": url}
    return CliRunner().invoke(
        main,
        ["mcp-servers", *args],
        env={**base_env, **(env or {})},
        input=stdin,
        catch_exceptions=False,
    )


def no_secrets(result: Result) -> None:
    for secret in (SECRET, SECRET_2):
        assert secret not in result.stdout and secret not in result.stderr


def test_every_mcp_servers_command_has_help(sqlite_url: str) -> None:
    for args in ([], ["list"], ["create"], ["update"], ["delete"]):
        result = cli(sqlite_url, *args, "--help")
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.stdout
    text_ = " ".join(cli(sqlite_url, "create", "--help").stdout.split())
    for option in ("--name", "--url", "--allow", "--deny", "--header", "--per-user"):
        assert option in text_


def test_servers_are_created_listed_updated_and_deleted_with_masked_headers(
    sqlite_url: str,
) -> None:
    result = cli(sqlite_url, "list")
    assert result.exit_code == 0 and "No MCP servers" in result.stderr

    result = cli(
        sqlite_url,
        "create",
        "--name",
        "tools",
        "--url",
        "https://mcp.example.com/mcp",
        "--allow",
        "^read_",
        "--deny",
        "delete",
        "--header",
        f"Authorization=Bearer {SECRET}",
        "--json",
    )
    assert result.exit_code == 0, result.output
    no_secrets(result)
    created = orjson.loads(result.stdout)
    assert (created["name"], created["enabled"]) == ("tools", True)
    assert (created["tool_allow"], created["tool_deny"]) == ("^read_", "delete")
    assert created["auth"] == {
        "type": "header",
        "name": "Authorization",
        "masked": mask_secret(f"Bearer {SECRET}"),
    }
    assert "reconcile interval" in result.stderr

    result = cli(sqlite_url, "list")
    assert result.exit_code == 0, result.output
    no_secrets(result)
    header, row = result.stdout.splitlines()
    assert header.split() == ["NAME", "STATUS", "URL", "ALLOW", "DENY", "AUTH"]
    assert row.split()[:5] == [
        "tools",
        "enabled",
        "https://mcp.example.com/mcp",
        "^read_",
        "delete",
    ]

    # Header value from stdin, filters cleared, disabled, renamed.
    result = cli(
        sqlite_url,
        "update",
        "tools",
        "--name",
        "tools-2",
        "--header-file",
        "X-Api-Key=-",
        "--allow",
        "",
        "--disable",
        "--json",
        stdin=f"{SECRET_2}\n",
    )
    assert result.exit_code == 0, result.output
    no_secrets(result)
    updated = orjson.loads(result.stdout)
    assert updated["name"] == "tools-2" and updated["enabled"] is False
    assert updated["tool_allow"] is None and updated["tool_deny"] == "delete"
    assert updated["auth"]["masked"] == mask_secret(SECRET_2)

    result = cli(sqlite_url, "update", created["id"], "--per-user", "--json")
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["auth"] == {"type": "per_user"}
    result = cli(sqlite_url, "update", "tools-2", "--no-auth", "--enable", "--json")
    assert result.exit_code == 0, result.output
    got = orjson.loads(result.stdout)
    assert got["auth"] == {"type": "none"} and got["enabled"] is True

    result = cli(sqlite_url, "delete", "tools-2")
    assert result.exit_code == 0, result.output
    assert f'Deleted MCP server "tools-2" ({created["id"]})' in result.stdout
    result = cli(sqlite_url, "list", "--json")
    assert orjson.loads(result.stdout) == []


def test_bad_commands_exit_non_zero_saying_what_to_fix(sqlite_url: str) -> None:
    base = ["create", "--name", "s", "--url", "http://h/mcp"]
    for args, code, expected in (
        (["create", "--name", "Bad_Name", "--url", "http://h/mcp"], 2, "name: name must match"),
        (["create", "--name", "s", "--url", "ftp://h"], 2, "url: url scheme must be http"),
        ([*base, "--allow", "("], 2, "tool_allow: tool_allow is not a valid regular"),
        ([*base, "--deny", "[z-a]"], 2, "tool_deny: tool_deny is not a valid regular"),
        ([*base, "--header", "no-equals-sign"], 2, "--header takes NAME=VALUE"),
        ([*base, "--header", "Bad Name=v"], 2, "auth.name: auth.name is not a valid HTTP"),
        ([*base, "--header", "X=v", "--per-user"], 2, "give one of --header"),
        ([*base, "--header-file", "X=/nonexistent/file"], 2, "cannot read /nonexistent/file"),
        (["update", "s"], 2, "At least one field must be provided."),
        (["update", "nope", "--enable"], 1, 'no MCP server "nope"'),
        (["update", "Bad_Ref", "--enable"], 2, "Invalid MCP server id or name"),
        (["delete", "nope"], 1, 'no MCP server "nope"'),
    ):
        result = cli(sqlite_url, *args)
        assert result.exit_code == code, (args, result.output)
        assert expected in result.stderr, (args, result.stderr)
    assert cli(sqlite_url, *base).exit_code == 0
    result = cli(sqlite_url, *base)
    assert result.exit_code == 1 and 'MCP server "s" already exists' in result.stderr
    result = cli(sqlite_url, "update", "s", "--no-auth", "--per-user")
    assert result.exit_code == 2 and "--no-auth cannot be combined" in result.stderr
    result = cli(sqlite_url, "list", "--json")
    assert [s["name"] for s in orjson.loads(result.stdout)] == ["s"]


async def test_header_values_written_by_the_cli_are_encrypted_and_need_the_key(
    sqlite_url: str,
) -> None:
    env = {"AIBRIDGE_ENCRYPTION_KEY": ENC_KEY}
    args = ["create", "--name", "s", "--url", "http://h/mcp", "--header", f"X-K={SECRET}"]
    result = await asyncio.to_thread(cli, sqlite_url, *args, env=env)
    assert result.exit_code == 0, result.output
    engine = create_engine(normalize_database_url(sqlite_url))
    try:
        async with engine.connect() as conn:
            stored, key_id = (
                await conn.execute(text("SELECT auth, auth_key_id FROM mcp_servers"))
            ).one()
    finally:
        await engine.dispose()
    assert SECRET not in stored and key_id is not None
    result = await asyncio.to_thread(cli, sqlite_url, "list")
    assert result.exit_code == 1 and "AIBRIDGE_ENCRYPTION_KEY" in result.stderr
    result = await asyncio.to_thread(cli, sqlite_url, "list", "--json", env=env)
    assert result.exit_code == 0
    assert orjson.loads(result.stdout)[0]["auth"]["masked"] == mask_secret(SECRET)


async def test_postgres_writes_notify_replicas(pg_url: str) -> None:
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(pg_url)
    try:
        await listener.add_listener(
            MCP_SERVERS_CHANGED, lambda _c, _pid, _ch, payload: received.put_nowait(payload)
        )
        args = ["create", "--name", "pg-one", "--url", "http://h/mcp"]
        result = await asyncio.to_thread(cli, pg_url, *args)
        assert result.exit_code == 0, result.output
        assert "notified" in result.stderr
        async with asyncio.timeout(TIMEOUT):
            await received.get()
        # A failed write (duplicate name) notifies nobody.
        assert (await asyncio.to_thread(cli, pg_url, *args)).exit_code == 1
        for change in (["update", "pg-one", "--disable"], ["delete", "pg-one"]):
            result = await asyncio.to_thread(cli, pg_url, *change)
            assert result.exit_code == 0, result.output
        sender = await asyncpg.connect(pg_url)
        try:
            await sender.execute(f"NOTIFY {MCP_SERVERS_CHANGED}, 'sentinel'")
        finally:
            await sender.close()
        payloads = []
        async with asyncio.timeout(TIMEOUT):
            while (payload := await received.get()) != "sentinel":
                payloads.append(payload)
        assert payloads == ["", ""]  # the update and the delete only
    finally:
        await listener.close()
