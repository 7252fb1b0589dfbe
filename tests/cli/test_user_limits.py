"""``aibridge users limits set|show`` against a real SQLite file, and against PostgreSQL
with a running gateway that hears the change (sync tests: the CLI runs its own loop)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from aibridge.actor import Actor
from aibridge.auth import Authenticator
from aibridge.cli import main
from aibridge.limits import Budget, Limits
from aibridge.store.db import create_engine, session_factory
from aibridge.store.models import AuditLog
from aibridge.store.urls import normalize_database_url
from aibridge.testing.gateway import gateway
from aibridge.testing.replicas import poll

TIMEOUT = 60.0
NULLS = dict.fromkeys(
    ["requests_per_minute", "tokens_per_minute", "max_concurrent", "allowed_models", "budget"]
)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def cli(db: str, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``aibridge ARGS --database-url DB`` with a clean AIBRIDGE_* environment."""
    clean = {"AIBRIDGE_DATABASE_URL": db, "AIBRIDGE_DATA_DIR": "", "AIBRIDGE_ENCRYPTION_KEY": ""}
    return CliRunner().invoke(
        main, [*args, "--database-url", db], env=clean | (env or {}), catch_exceptions=False
    )


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def show(db: str, user: str = "bob", env: dict[str, str] | None = None) -> dict[str, Any]:
    return dict(json.loads(ok(cli(db, "users", "limits", "show", user, "--json", env=env)).stdout))


def new_user(db: str, name: str = "bob") -> str:
    """Create ``name`` with a first key; returns the token."""
    return ok(cli(db, "users", "create", name)).stdout.rstrip("\n").splitlines()[-1]


def authenticate(db: str, token: str) -> Actor:
    async def go() -> Actor:
        engine = create_engine(normalize_database_url(db))
        try:
            async with asyncio.timeout(TIMEOUT):
                return await Authenticator(session_factory(engine)).authenticate(token)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def audit_diffs(db: str) -> list[tuple[str, str, Any]]:
    async def go() -> list[tuple[str, str, Any]]:
        engine = create_engine(normalize_database_url(db))
        try:
            async with session_factory(engine)() as s:
                rows = await s.execute(
                    select(AuditLog)
                    .where(AuditLog.action == "update")
                    .order_by(AuditLog.created_at)
                )
                return [(r.actor_username, r.resource_type, r.diff) for r in rows.scalars()]
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_set_changes_only_the_flags_given_and_the_actor_carries_them(db: str) -> None:
    token = new_user(db)
    result = ok(
        cli(
            db,
            *("users", "limits", "set", "bob", "--rpm", "60", "--budget", "50/month"),
            *("--models", "claude-*,openai/gpt-5*", "--models", "gemini-*"),
        )
    )
    assert "Changed the limits of user 'bob': requests_per_minute" in result.stdout
    assert "50/month" in result.stdout
    want = {
        "requests_per_minute": 60,
        "tokens_per_minute": None,
        "max_concurrent": None,
        "allowed_models": ["claude-*", "openai/gpt-5*", "gemini-*"],
        "budget": {"amount_usd": 50, "period": "month"},
    }
    assert show(db)["limits"] == want

    ok(cli(db, "users", "limits", "set", "bob", "--concurrent", "3", "--rpm", "none"))
    want |= {"max_concurrent": 3, "requests_per_minute": None}
    assert show(db)["limits"] == want
    ok(cli(db, "users", "limits", "set", "bob", "--clear", "budget", "--clear", "models"))
    want |= {"budget": None, "allowed_models": None}
    assert show(db)["limits"] == want
    assert authenticate(db, token).user_limits == Limits(max_concurrent=3)

    result = ok(cli(db, "users", "limits", "set", "bob", "--concurrent", "3"))
    assert "nothing changed" in result.stdout
    result = ok(cli(db, "users", "limits", "set", "bob", "--clear", "all", "--json"))
    assert json.loads(result.stdout) == {
        "user": "bob",
        "key_id": None,
        "limits": NULLS,
        "changed": {"max_concurrent": {"old": 3, "new": None}},
    }
    diffs = audit_diffs(db)
    assert [(actor, kind) for actor, kind, _ in diffs] == [("cli", "user")] * 4
    assert diffs[-1][2] == {"limits": {"max_concurrent": {"old": 3, "new": None}}}


def test_a_keys_own_limits_are_set_with_key_and_shown_per_key(db: str) -> None:
    token = new_user(db)
    key_id = token.split("-")[1]
    args = ("users", "limits", "set", "bob", "--key", key_id)
    ok(cli(db, *args, "--budget", "2.5/day", "--tpm", "1000"))
    shown = show(db)
    assert shown["limits"] == NULLS
    assert shown["keys"] == [
        {
            "id": key_id,
            "name": "default",
            "status": "active",
            "limits": NULLS
            | {"tokens_per_minute": 1000, "budget": {"amount_usd": 2.5, "period": "day"}},
        }
    ]
    actor = authenticate(db, token)
    assert actor.key_limits == Limits(tokens_per_minute=1000, budget=Budget(Decimal("2.5"), "day"))
    assert actor.user_limits == Limits()
    kind, diff = audit_diffs(db)[-1][1:]
    assert kind == "api_key"
    assert diff["username"] == "bob"
    assert set(diff["limits"]) == {"tokens_per_minute", "budget"}

    text = ok(cli(db, "users", "limits", "show", "bob")).stdout
    assert f"{key_id}  default  active  tpm=1000 budget=2.5/day" in text


def test_show_lists_the_defaults_from_the_environment_and_what_applies(db: str) -> None:
    new_user(db)
    ok(cli(db, "users", "limits", "set", "bob", "--rpm", "5"))
    env = {"AIBRIDGE_DEFAULT_REQUESTS_PER_MINUTE": "100", "AIBRIDGE_DEFAULT_BUDGET": "10/week"}
    shown = show(db, env=env)
    assert shown["defaults"] == NULLS | {
        "requests_per_minute": 100,
        "budget": {"amount_usd": 10, "period": "week"},
    }
    assert shown["effective"] == NULLS | {
        "requests_per_minute": 5,
        "budget": {"amount_usd": 10, "period": "week"},
    }
    text = ok(cli(db, "users", "limits", "show", "bob", env=env)).stdout
    assert "requests_per_minute  5     100      5" in text
    assert "budget               -     10/week  10/week" in text


@pytest.mark.parametrize(
    ("args", "lines"),
    [
        (
            ["--rpm", "abc", "--budget", "5/year", "--tpm", "0"],
            [
                "  --budget: must be one of day, week, month",
                "  --rpm (requests_per_minute): must be a whole number or none",
                "  --tpm (tokens_per_minute): must be between 1 and 1000000000000000, or none",
            ],
        ),
        (["--budget", "50"], ['  --budget: must be AMOUNT/PERIOD, e.g. "50/month" or "2.5/day"']),
        (["--models", "a b"], ["  --models (allowed_models[0]): must be MODEL-GLOB or"]),
        (["--rpm", "5", "--clear", "rpm"], ["  --clear: rpm is also set with --rpm"]),
        (["--clear", "speed"], ["  --clear: unknown limit 'speed'; use one of rpm, tpm,"]),
        ([], ["  pass at least one option; see `aibridge users limits set --help`"]),
    ],
)
def test_bad_flags_exit_2_naming_each_flag_and_change_nothing(
    db: str, args: list[str], lines: list[str]
) -> None:
    new_user(db)
    result = cli(db, "users", "limits", "set", "bob", *args)
    assert result.exit_code == 2, result.output
    for line in lines:
        assert any(out.startswith(line) for out in result.stderr.splitlines()), result.stderr
    assert show(db)["limits"] == NULLS
    assert audit_diffs(db) == []


def test_unknown_users_and_keys_exit_1_saying_where_to_look(db: str) -> None:
    new_user(db)
    carol_key = new_user(db, "carol").split("-")[1]
    result = cli(db, "users", "limits", "set", "nobody", "--rpm", "1")
    assert result.exit_code == 1
    assert "no user 'nobody'; list users with `aibridge users list`" in result.stderr
    result = cli(db, "users", "limits", "show", "nobody")
    assert result.exit_code == 1
    result = cli(db, "users", "limits", "set", "bob", "--key", carol_key, "--rpm", "1")
    assert result.exit_code == 1
    assert f"no API key '{carol_key}' of user 'bob'" in result.stderr
    assert "`aibridge keys list --user bob`" in result.stderr
    assert show(db, "carol")["keys"][0]["limits"] == NULLS


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["users", "limits"], "the stricter wins"),
        (["users", "limits", "set"], "only the limits given change"),
        (["users", "limits", "show"], "the defaults its unset limits take"),
    ],
)
def test_every_limits_command_has_help(args: list[str], phrase: str) -> None:
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.stdout
    assert phrase in " ".join(result.stdout.split())


async def test_a_running_postgres_gateway_applies_cli_limits_at_once(
    pg_url: str, tmp_path: Path
) -> None:
    token = (await asyncio.to_thread(new_user, pg_url)).strip()
    key_id = token.split("-")[1]
    # A cache that would hold the old limits for an hour: only the NOTIFY can help.
    async with gateway(pg_url, tmp_path, settings_overrides={"auth_cache_ttl": 3600}) as (
        _client,
        services,
    ):
        auth = services.authenticator
        async with asyncio.timeout(TIMEOUT):
            assert (await auth.authenticate(token)).user_limits == Limits()
        result = await asyncio.to_thread(cli, pg_url, "users", "limits", "set", "bob", "--rpm", "9")
        ok(result)

        async def user_limits_arrived() -> bool:
            return (await auth.authenticate(token)).user_limits == Limits(requests_per_minute=9)

        await poll(user_limits_arrived, TIMEOUT, "the gateway to apply the user's limits")
        result = await asyncio.to_thread(
            cli, pg_url, "users", "limits", "set", "bob", "--key", key_id, "--concurrent", "1"
        )
        ok(result)

        async def key_limits_arrived() -> bool:
            return (await auth.authenticate(token)).key_limits == Limits(max_concurrent=1)

        await poll(key_limits_arrived, TIMEOUT, "the gateway to apply the key's limits")
