"""``aibridge users …`` / ``aibridge keys …`` against a real SQLite file (sync tests: the
CLI runs its own event loop)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from aibridge.actor import Actor
from aibridge.auth import Authenticator, AuthError
from aibridge.cli import main
from aibridge.store.db import create_engine, session_factory
from aibridge.store.models import ApiKey, AuditLog
from aibridge.store.urls import normalize_database_url

TIMEOUT = 60.0


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def cli(db: str, *args: str) -> Result:
    """Run ``aibridge ARGS --database-url DB`` with a clean AIBRIDGE_* environment."""
    runner = CliRunner()
    env = {"AIBRIDGE_DATABASE_URL": db, "AIBRIDGE_DATA_DIR": "", "AIBRIDGE_ENCRYPTION_KEY": ""}
    return runner.invoke(main, [*args, "--database-url", db], env=env, catch_exceptions=False)


def last_line(result: Result) -> str:
    return result.stdout.rstrip("\n").splitlines()[-1]


def authenticate(db: str, token: str) -> Actor:
    """Resolve ``token`` with a fresh Authenticator on the same database."""

    async def go() -> Actor:
        engine = create_engine(normalize_database_url(db))
        try:
            async with asyncio.timeout(TIMEOUT):
                return await Authenticator(session_factory(engine)).authenticate(token)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def rejected(db: str, token: str) -> str:
    with pytest.raises(AuthError) as info:
        authenticate(db, token)
    return str(info.value)


def db_rows(db: str, model: type) -> list:
    async def go() -> list:
        engine = create_engine(normalize_database_url(db))
        try:
            async with session_factory(engine)() as s:
                return list((await s.execute(select(model))).scalars())
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_users_create_prints_working_token_last(db: str) -> None:
    result = cli(db, "users", "create", "bob", "--email", "bob@example.com")
    assert result.exit_code == 0, result.output
    lines = result.stdout.rstrip("\n").splitlines()
    assert len(lines) > 1, "human text comes before the token"
    assert "bob" in lines[0]
    token = last_line(result)
    assert token.startswith("aib-")
    assert " " not in token
    actor = authenticate(db, token)
    assert (actor.username, actor.role) == ("bob", "member")


def test_users_create_admin_prints_an_admin_token(db: str) -> None:
    result = cli(db, "users", "create", "root", "--admin")
    assert result.exit_code == 0, result.output
    assert authenticate(db, last_line(result)).role == "admin"


def test_a_refused_users_create_says_why_and_leaves_nothing_behind(db: str) -> None:
    assert cli(db, "users", "create", "bob").exit_code == 0
    dup = cli(db, "users", "create", "bob")
    assert dup.exit_code != 0
    assert dup.stderr.startswith("error: ")
    assert "already exists" in dup.stderr
    assert "keys create --user bob" in dup.stderr
    assert "aib-" not in dup.stdout
    bad = cli(db, "users", "create", "Bob!")
    assert bad.exit_code != 0
    assert bad.stderr.startswith("error: ")
    assert "must match" in bad.stderr
    email = cli(db, "users", "create", "carol", "--email", "nope")
    assert email.exit_code != 0
    assert "email" in email.stderr
    # None of the failures left a user or key behind.
    listed = cli(db, "users", "list", "--json")
    assert [u["username"] for u in json.loads(listed.stdout)] == ["bob"]
    assert len(db_rows(db, ApiKey)) == 1


def test_users_list_prints_a_table_or_json(db: str) -> None:
    cli(db, "users", "create", "bob")
    cli(db, "users", "create", "alice", "--admin", "--email", "a@example.com")
    table = cli(db, "users", "list")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["USERNAME", "ROLE", "STATUS"]
    assert lines[1].split()[:4] == ["alice", "admin", "active", "a@example.com"]
    assert lines[2].split()[:3] == ["bob", "member", "active"]
    data = json.loads(cli(db, "users", "list", "--json").stdout)
    assert [(u["username"], u["role"]) for u in data] == [("alice", "admin"), ("bob", "member")]


def test_keys_are_created_listed_without_secrets_and_revoked_at_once(db: str) -> None:
    first = last_line(cli(db, "users", "create", "bob"))
    result = cli(db, "keys", "create", "--user", "bob", "--name", "ci", "--expires-in-days", "7")
    assert result.exit_code == 0, result.output
    token = last_line(result)
    actor = authenticate(db, token)
    assert actor.username == "bob"
    listed = cli(db, "keys", "list", "--user", "bob", "--json")
    assert listed.exit_code == 0
    assert token not in listed.stdout
    assert token.split("-", 2)[2] not in listed.stdout
    assert "hash" not in listed.stdout
    keys = json.loads(listed.stdout)
    assert [k["name"] for k in keys] == ["default", "ci"]
    assert keys[0]["expires_at"] is None
    assert keys[1]["expires_at"] is not None
    table = cli(db, "keys", "list", "--user", "bob")
    assert actor.key_id in table.stdout
    revoke = cli(db, "keys", "revoke", actor.key_id)
    assert revoke.exit_code == 0, revoke.output
    assert "Revoked" in revoke.stdout
    assert "revoked" in rejected(db, token)
    assert authenticate(db, first).username == "bob"  # the other key is untouched
    again = cli(db, "keys", "revoke", actor.key_id)
    assert again.exit_code == 0
    assert "already revoked" in again.stdout
    keys = json.loads(cli(db, "keys", "list", "--user", "bob", "--json").stdout)
    assert [k["status"] for k in keys] == ["active", "revoked"]


def test_bad_keys_commands_exit_non_zero_saying_what_to_fix(db: str) -> None:
    cli(db, "users", "create", "bob")
    nouser = cli(db, "keys", "create", "--user", "nobody")
    assert nouser.exit_code != 0
    assert nouser.stderr.startswith("error: no user 'nobody'")
    assert "users create nobody" in nouser.stderr
    assert cli(db, "keys", "list", "--user", "nobody").exit_code != 0
    nokey = cli(db, "keys", "revoke", "deadbeef0000")
    assert nokey.exit_code != 0
    assert "no API key 'deadbeef0000'" in nokey.stderr
    days = cli(db, "keys", "create", "--user", "bob", "--expires-in-days", "0")
    assert days.exit_code != 0
    assert "expires-in-days" in days.stderr
    missing = cli(db, "keys", "create")
    assert missing.exit_code != 0
    assert "--user" in missing.stderr


def test_a_suspended_user_is_refused_until_activated(db: str) -> None:
    cli(db, "users", "create", "root", "--admin")
    token = last_line(cli(db, "users", "create", "bob"))
    result = cli(db, "users", "suspend", "bob")
    assert result.exit_code == 0, result.output
    assert "Suspended" in result.stdout
    assert "suspended" in rejected(db, token)
    again = cli(db, "users", "suspend", "bob")
    assert again.exit_code == 0
    assert "already suspended" in again.stdout
    result = cli(db, "users", "activate", "bob")
    assert result.exit_code == 0
    assert authenticate(db, token).username == "bob"
    missing = cli(db, "users", "suspend", "nobody")
    assert missing.exit_code != 0
    assert "no user 'nobody'" in missing.stderr


def test_cannot_suspend_last_admin(db: str) -> None:
    token = last_line(cli(db, "users", "create", "root", "--admin"))
    result = cli(db, "users", "suspend", "root")
    assert result.exit_code != 0
    assert "last active admin" in result.stderr
    assert authenticate(db, token).username == "root"


def test_cli_writes_audit_rows_by_cli_without_secrets(db: str) -> None:
    token = last_line(cli(db, "users", "create", "bob"))
    cli(db, "users", "create", "root", "--admin")
    cli(db, "users", "suspend", "bob")
    key_id = token.split("-")[1]
    cli(db, "keys", "revoke", key_id)
    rows = db_rows(db, AuditLog)
    assert {r.actor_username for r in rows} == {"cli"}
    actions = sorted((r.action, r.resource_type) for r in rows)
    assert actions == [
        ("create", "api_key"),
        ("create", "api_key"),
        ("create", "user"),
        ("create", "user"),
        ("revoke", "api_key"),
        ("update", "user"),
    ]
    for r in rows:
        assert token.split("-", 2)[2] not in json.dumps(r.diff)


@pytest.mark.parametrize(
    "args",
    [
        ["users"],
        ["users", "create"],
        ["users", "list"],
        ["users", "suspend"],
        ["users", "activate"],
        ["keys"],
        ["keys", "create"],
        ["keys", "list"],
        ["keys", "revoke"],
    ],
)
def test_every_users_and_keys_command_has_help(args: list[str]) -> None:
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.stdout
    assert len(result.stdout.splitlines()) > 3


async def test_revoke_and_suspend_notify_postgres_replicas(pg_url: str) -> None:
    """On PostgreSQL the CLI tells running replicas (api_keys_changed) to drop cached keys."""
    import asyncpg

    from aibridge.store.pubsub import API_KEYS_CHANGED

    token = last_line(await asyncio.to_thread(cli, pg_url, "users", "create", "bob"))
    await asyncio.to_thread(cli, pg_url, "users", "create", "root", "--admin")
    received: asyncio.Queue[str] = asyncio.Queue()
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.add_listener(API_KEYS_CHANGED, lambda *args: received.put_nowait(args[3]))
        key_id = token.split("-")[1]
        result = await asyncio.to_thread(cli, pg_url, "keys", "revoke", key_id)
        assert result.exit_code == 0, result.output
        async with asyncio.timeout(TIMEOUT):
            assert await received.get() == key_id
        result = await asyncio.to_thread(cli, pg_url, "users", "suspend", "bob")
        assert result.exit_code == 0, result.output
        async with asyncio.timeout(TIMEOUT):
            payload = await received.get()
        users = json.loads((await asyncio.to_thread(cli, pg_url, "users", "list", "--json")).stdout)
        bob = next(u for u in users if u["username"] == "bob")
        assert payload == f"user:{bob['id']}"
        # A no-op (already revoked) sends nothing: the next message is from a real change.
        await asyncio.to_thread(cli, pg_url, "keys", "revoke", key_id)
        await asyncio.to_thread(cli, pg_url, "users", "activate", "bob")
        async with asyncio.timeout(TIMEOUT):
            assert await received.get() == f"user:{bob['id']}"
    finally:
        await conn.close()


async def test_created_keys_notify_postgres_replicas(pg_url: str) -> None:
    """Authenticators remember which key ids exist, so a new key is announced too."""
    import asyncpg

    from aibridge.store.pubsub import API_KEYS_CHANGED

    await asyncio.to_thread(cli, pg_url, "users", "list")  # migrates the new database
    received: asyncio.Queue[str] = asyncio.Queue()
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.add_listener(API_KEYS_CHANGED, lambda *args: received.put_nowait(args[3]))
        first = last_line(await asyncio.to_thread(cli, pg_url, "users", "create", "carol"))
        async with asyncio.timeout(TIMEOUT):
            assert await received.get() == first.split("-")[1]
        result = await asyncio.to_thread(cli, pg_url, "keys", "create", "--user", "carol")
        assert result.exit_code == 0, result.output
        async with asyncio.timeout(TIMEOUT):
            assert await received.get() == last_line(result).split("-")[1]
    finally:
        await conn.close()
