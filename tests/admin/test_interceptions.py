"""``GET /api/v1/interceptions`` and ``/api/v1/usage`` through the real gateway app, and
``aibridge usage`` on the command line (SQLite file and PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from aiohttp.test_utils import TestClient
from click.testing import CliRunner
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.cli import main
from aibridge.cli.usage import usage as usage_command
from aibridge.limits import usd_number
from aibridge.store.db import create_engine, migrate, session_factory
from aibridge.store.models import (
    Interception,
    ModelThought,
    TokenUsage,
    ToolUsage,
    User,
    UserPrompt,
)
from aibridge.store.urls import normalize_database_url
from tests.admin.api_client import add_users, all_pages, bounded_gateway, get

TOKENS = ("input", "output", "cache_read", "cache_write", "reasoning")
BASE = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
ERRORS = {4: ("rate_limited", "429"), 9: ("upstream_error", "502")}
"""The failed interceptions of :func:`seed` (by index): error type and message."""


@dataclass
class Seeded:
    """What :func:`seed` inserted, to compute expected answers from."""

    users: dict[str, User] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    key_ids: dict[str, str] = field(default_factory=dict)
    interceptions: list[Interception] = field(default_factory=list)
    sums: dict[uuid.UUID, dict[str, int]] = field(default_factory=dict)
    costs: dict[uuid.UUID, tuple[int, bool]] = field(default_factory=dict)
    """Pico-USD of the priced token rows, and whether some row had no price."""


def row_cost(n: int, k: int) -> int | None:
    """The recorded cost of token row ``k`` of interception ``n``: None (unpriced) for
    one of alice's rows and both of bob's last interception's; sub-micro-dollar digits
    elsewhere, so a float anywhere on the way would show."""
    if (n, k) == (5, 1) or n == 10:
        return None
    return (n * 10 + k) * 3_000_000 + (n + 1) * 15_000_000 + 123


def usd(pusd: int) -> int | float:
    """What the API shows for ``pusd`` pico-USD."""
    return usd_number(Decimal(pusd).scaleb(-12))


async def seed(sessions: async_sessionmaker[AsyncSession]) -> Seeded:
    """Two members (alice: 7 interceptions, bob: 4), one extra admin, with children."""
    data = Seeded()
    async with sessions() as s, s.begin():
        roles = {"alice": "member", "bob": "member", "root": "admin"}
        for name, added in (await add_users(s, roles)).items():
            data.users[name] = added.user
            data.tokens[name] = added.token
            data.key_ids[name] = added.key_id
        specs: list[tuple[str, str, str, str, str, datetime]] = []
        for n in range(7):
            # Two of alice's interceptions share a start time: paging must break the tie.
            started = BASE + timedelta(days=n // 2, hours=0 if n in (2, 3) else n)
            model = "claude-a" if n % 2 else "claude-b"
            specs.append(("alice", "anthropic", model, "claude-code", f"sa{n % 2}", started))
        for n in range(4):
            specs.append(
                ("bob", "openai", "gpt-5", "codex", "sb", BASE + timedelta(days=n, hours=3))
            )
        for n, (name, provider, model, client, session, started) in enumerate(specs):
            i = Interception(
                id=uuid.uuid4(),
                initiator_id=data.users[name].id,
                api_key_id=data.key_ids[name],
                provider=provider,
                provider_name=provider,
                model=model,
                started_at=started,
                ended_at=started + timedelta(seconds=5) if n != 3 else None,
                client=client,
                client_session_id=session,
                error_type=ERRORS.get(n, (None, None))[0],
                error_message=ERRORS.get(n, (None, None))[1],
                # bob brings his own key; alice's requests use the pool (one without a
                # hint: it ended before a key was picked).
                credential_kind="byok" if name == "bob" else "centralized",
                credential_hint=f"{name[:2]}-...{n:04d}" if n != 5 else None,
            )
            s.add(i)
            data.interceptions.append(i)
            total = dict.fromkeys(TOKENS, 0)
            cost, unpriced = 0, False
            for k in range(2):
                values = [n * 10 + k, n + 1, 100 * k, 7 * n, k]
                s.add(
                    TokenUsage(
                        id=uuid.uuid4(),
                        interception_id=i.id,
                        provider_response_id=f"msg_{n}_{k}",
                        input_tokens=values[0],
                        output_tokens=values[1],
                        cache_read_input_tokens=values[2],
                        cache_write_input_tokens=values[3],
                        reasoning_tokens=values[4],
                        cost_pusd=row_cost(n, k),
                        created_at=started,
                    )
                )
                for key, v in zip(TOKENS, values, strict=True):
                    total[key] += v
                recorded = row_cost(n, k)
                cost += recorded or 0
                unpriced = unpriced or recorded is None
            data.sums[i.id] = total
            data.costs[i.id] = (cost, unpriced)
            if n % 3 == 0:
                s.add(UserPrompt(id=uuid.uuid4(), interception_id=i.id, prompt=f"prompt {n}"))
            if n == 1:
                s.add_all(
                    [
                        ToolUsage(
                            id=uuid.uuid4(),
                            interception_id=i.id,
                            tool="Read",
                            provider_tool_call_id="call_a",
                            input='{"path": "x.py"}',
                            created_at=started + timedelta(seconds=1),
                        ),
                        ToolUsage(
                            id=uuid.uuid4(),
                            interception_id=i.id,
                            tool="mcp_search",
                            provider_tool_call_id="call_b",
                            server_url="https://mcp.example",
                            input="{not json",
                            injected=True,
                            invocation_error="boom",
                            created_at=started + timedelta(seconds=2),
                        ),
                    ]
                )
                s.add_all(
                    ModelThought(id=uuid.uuid4(), interception_id=i.id, content=f"t{k}")
                    for k in range(3)
                )
    return data


def newest_first(interceptions: list[Interception]) -> list[str]:
    ordered = sorted(interceptions, key=lambda i: (i.started_at, str(i.id).replace("-", "")))
    return [str(i.id) for i in reversed(ordered)]


def expected_usage(
    data: Seeded,
    key: Any,
    only: set[str] | None = None,
    named: Any = None,
) -> list[dict[str, Any]]:
    """The usage rows of ``data`` grouped by ``key(interception)``; ``named`` adds the
    fields it returns for an interception (the key's name and user)."""
    rows: dict[str, dict[str, Any]] = defaultdict(
        lambda: dict.fromkeys(("interceptions", *TOKENS, "cost", "unpriced"), 0)
    )
    for i in data.interceptions:
        if only is not None and str(i.initiator_id) not in only:
            continue
        row = rows[key(i)]
        if named is not None:
            row.update(named(i))
        row["interceptions"] += 1
        for t in TOKENS:
            row[t] += data.sums[i.id][t]
        row["cost"] += data.costs[i.id][0]
        row["unpriced"] = bool(row["unpriced"] or data.costs[i.id][1])
    out = []
    for k, v in sorted(rows.items()):
        cost = v.pop("cost")
        unpriced = v.pop("unpriced")
        out.append({"key": k, **v, "cost_usd": usd(cost), "unpriced": unpriced})
    return out


async def test_interceptions_are_listed_filtered_paged_and_summed_for_the_caller_only(
    db_url: str, tmp_path: Path
) -> None:
    async with bounded_gateway(db_url, tmp_path) as (client, services):
        data = await seed(services.sessions)
        await check_listing(client, data)
        await check_filters(client, data)
        await check_member_isolation(client, data)
        await check_usage(client, data)
        await check_validation(client, data)


async def check_listing(client: TestClient, data: Seeded) -> None:
    root = data.tokens["root"]
    for path in ("/api/v1/interceptions", "/api/v1/usage"):
        status, body = await get(client, path, None)
        assert status == 401, body
        status, _ = await get(client, path, "aib-nope-nope")
        assert status == 401
    status, body = await get(client, "/api/v1/interceptions", root)
    assert status == 200
    assert body["next_cursor"] is None
    assert [i["id"] for i in body["interceptions"]] == newest_first(data.interceptions)
    for limit in ("1", "2", "3", "5", "11", "500"):
        paged = await all_pages(client, "/api/v1/interceptions", "interceptions", root, limit=limit)
        assert [i["id"] for i in paged] == newest_first(data.interceptions), limit
    status, body = await get(client, "/api/v1/interceptions", root, limit="11")
    assert body["next_cursor"] is None  # exactly at the end: no empty trailing page

    by_id = {i["id"]: i for i in body["interceptions"]}
    alice = data.users["alice"]
    with_tools = data.interceptions[1]
    item = by_id[str(with_tools.id)]
    assert item == {
        "id": str(with_tools.id),
        "user": {"id": str(alice.id), "username": "alice"},
        "provider": "anthropic",
        "provider_name": "anthropic",
        "model": "claude-a",
        "client": "claude-code",
        "session_id": "sa1",
        "started_at": with_tools.started_at.isoformat(),
        "ended_at": (with_tools.started_at + timedelta(seconds=5)).isoformat(),
        "error_type": None,
        "error_message": None,
        "credential_kind": "centralized",
        "credential_hint": "al-...0001",
        "tokens": data.sums[with_tools.id],
        "cost_usd": usd(data.costs[with_tools.id][0]),
        "unpriced": False,
        "prompt": None,
        "tool_calls": [
            {
                "name": "Read",
                "call_id": "call_a",
                "injected": False,
                "server_url": None,
                "arguments": {"path": "x.py"},
                "error": None,
            },
            {
                "name": "mcp_search",
                "call_id": "call_b",
                "injected": True,
                "server_url": "https://mcp.example",
                "arguments": "{not json",
                "error": "boom",
            },
        ],
        "thought_count": 3,
    }
    in_flight = by_id[str(data.interceptions[3].id)]
    assert (in_flight["ended_at"], in_flight["prompt"], in_flight["tool_calls"]) == (
        None,
        "prompt 3",
        [],
    )
    failed = by_id[str(data.interceptions[4].id)]
    assert (failed["error_type"], failed["error_message"]) == ("rate_limited", "429")
    # Every interception shows the credential it went upstream with, whatever its type.
    assert {
        i["id"]: (i["credential_kind"], i["credential_hint"]) for i in body["interceptions"]
    } == {str(i.id): (i.credential_kind, i.credential_hint) for i in data.interceptions}
    assert {i["credential_kind"] for i in body["interceptions"]} == {"centralized", "byok"}
    assert by_id[str(data.interceptions[5].id)]["credential_hint"] is None
    # Cost: the priced rows' sum, flagged when a row had no price (never guessed).
    assert {i["id"]: (i["cost_usd"], i["unpriced"]) for i in body["interceptions"]} == {
        str(i.id): (usd(data.costs[i.id][0]), data.costs[i.id][1]) for i in data.interceptions
    }
    assert by_id[str(data.interceptions[5].id)]["unpriced"] is True
    assert by_id[str(data.interceptions[10].id)]["cost_usd"] == 0


async def check_filters(client: TestClient, data: Seeded) -> None:
    root = data.tokens["root"]
    alice, bob = data.users["alice"], data.users["bob"]

    def ids(pred: Any) -> list[str]:
        return newest_first([i for i in data.interceptions if pred(i)])

    cases: list[tuple[dict[str, str], list[str]]] = [
        ({"user": "alice"}, ids(lambda i: i.initiator_id == alice.id)),
        ({"user": str(bob.id)}, ids(lambda i: i.initiator_id == bob.id)),
        ({"user": "nobody"}, []),
        ({"provider": "openai"}, ids(lambda i: i.provider_name == "openai")),
        ({"model": "claude-a"}, ids(lambda i: i.model == "claude-a")),
        ({"client": "codex"}, ids(lambda i: i.client == "codex")),
        ({"session": "sa0"}, ids(lambda i: i.client_session_id == "sa0")),
        (
            {"since": "2025-03-02T00:00:00Z", "until": "2025-03-03T00:00:00+00:00"},
            ids(
                lambda i: (
                    datetime(2025, 3, 2, tzinfo=UTC)
                    <= i.started_at
                    < datetime(2025, 3, 3, tzinfo=UTC)
                )
            ),
        ),
        (
            {"since": "2025-03-04", "user": "bob"},
            ids(lambda i: i.initiator_id == bob.id and i.started_at.day >= 4),
        ),
        ({"model": "claude-b", "session": "sa1"}, []),
    ]
    for params, expected in cases:
        status, body = await get(client, "/api/v1/interceptions", root, **params)
        assert status == 200, (params, body)
        assert [i["id"] for i in body["interceptions"]] == expected, params
    assert cases[0][1] and cases[3][1] and cases[7][1] and cases[8][1]  # non-trivial cases
    paged = await all_pages(
        client, "/api/v1/interceptions", "interceptions", root, limit="2", user="alice"
    )
    assert [i["id"] for i in paged] == cases[0][1]

    # Outcome filters, applied by the database (so paging sees only matching rows).
    failed = ids(lambda i: i.error_type is not None)
    succeeded = ids(lambda i: i.error_type is None)
    assert len(failed) == 2 and len(succeeded) == len(data.interceptions) - 2
    outcome: list[tuple[dict[str, str], list[str]]] = [
        ({"status": "error"}, failed),
        ({"status": "ok"}, succeeded),
        ({"error_type": "rate_limited"}, ids(lambda i: i.error_type == "rate_limited")),
        ({"status": "error", "error_type": "upstream_error"}, [str(data.interceptions[9].id)]),
        ({"status": "error", "user": "bob"}, [str(data.interceptions[9].id)]),
        ({"error_type": "rate_limited", "user": "bob"}, []),
        ({"error_type": "no_such_type"}, []),
    ]
    for params, expected in outcome:
        status, body = await get(client, "/api/v1/interceptions", root, **params)
        assert status == 200, (params, body)
        assert [i["id"] for i in body["interceptions"]] == expected, params
    assert [
        i["id"]
        for i in await all_pages(
            client, "/api/v1/interceptions", "interceptions", root, limit="1", status="error"
        )
    ] == failed
    assert [
        i["id"]
        for i in await all_pages(
            client, "/api/v1/interceptions", "interceptions", root, limit="3", status="ok"
        )
    ] == succeeded
    # A member's outcome filter still sees only their own rows.
    status, body = await get(client, "/api/v1/interceptions", data.tokens["alice"], status="error")
    assert [i["id"] for i in body["interceptions"]] == [str(data.interceptions[4].id)]


async def check_member_isolation(client: TestClient, data: Seeded) -> None:
    alice, bob = data.users["alice"], data.users["bob"]
    own = newest_first([i for i in data.interceptions if i.initiator_id == alice.id])
    paged = await all_pages(
        client, "/api/v1/interceptions", "interceptions", data.tokens["alice"], limit="3"
    )
    assert [i["id"] for i in paged] == own
    for params in ({"user": "bob"}, {"user": str(bob.id)}, {"provider": "openai"}):
        status, body = await get(client, "/api/v1/interceptions", data.tokens["alice"], **params)
        assert status == 200, body
        assert body["interceptions"] == []
    status, body = await get(client, "/api/v1/usage", data.tokens["bob"], group_by="user")
    assert status == 200
    assert body["rows"] == expected_usage(data, lambda i: "bob", only={str(bob.id)})
    status, body = await get(
        client, "/api/v1/usage", data.tokens["bob"], group_by="user", user="alice"
    )
    assert (status, body["rows"]) == (200, [])


async def check_usage(client: TestClient, data: Seeded) -> None:
    root = data.tokens["root"]
    names = {u.id: name for name, u in data.users.items()}
    keys = {
        "user": lambda i: names[i.initiator_id],
        "model": lambda i: i.model,
        "provider": lambda i: i.provider_name,
        "day": lambda i: i.started_at.strftime("%Y-%m-%d"),
    }
    for group_by, key in keys.items():
        status, body = await get(client, "/api/v1/usage", root, group_by=group_by)
        assert status == 200, body
        assert body == {"group_by": group_by, "rows": expected_usage(data, key)}, group_by
    status, body = await get(client, "/api/v1/usage", root, group_by="key")
    assert status == 200, body
    key_ids = data.key_ids
    by_key = expected_usage(
        data,
        lambda i: i.api_key_id,
        named=lambda i: {"name": "", "user": names[i.initiator_id]},
    )
    assert body == {"group_by": "key", "rows": by_key}
    assert {r["key"] for r in by_key} == {key_ids["alice"], key_ids["bob"]}
    # Both groupings flag the unpriced calls: alice's one row, bob's last interception.
    assert [(r["user"], r["unpriced"]) for r in by_key if r["user"] == "alice"] == [("alice", True)]
    assert len(expected_usage(data, keys["day"])) == 4
    status, body = await get(
        client, "/api/v1/usage", root, group_by="model", provider="anthropic", since="2025-03-02"
    )
    assert status == 200, body
    kept = [
        i for i in data.interceptions if i.provider_name == "anthropic" and i.started_at.day >= 2
    ]
    filtered = expected_usage(
        Seeded(data.users, data.tokens, data.key_ids, kept, data.sums, data.costs), keys["model"]
    )
    assert body["rows"] == filtered
    assert filtered != expected_usage(data, keys["model"])  # the filters removed something


async def check_validation(client: TestClient, data: Seeded) -> None:
    root = data.tokens["root"]
    bad: list[tuple[str, dict[str, str], str]] = [
        ("/api/v1/interceptions", {"since": "yesterday"}, "since"),
        ("/api/v1/interceptions", {"until": "2025-03-01T00:00:00"}, "until"),
        ("/api/v1/interceptions", {"limit": "0"}, "limit"),
        ("/api/v1/interceptions", {"limit": "501"}, "limit"),
        ("/api/v1/interceptions", {"limit": "ten"}, "limit"),
        ("/api/v1/interceptions", {"cursor": "garbage!"}, "cursor"),
        ("/api/v1/interceptions", {"since": "2025-03-05", "until": "2025-03-01"}, "until"),
        ("/api/v1/interceptions", {"status": "failed"}, "status"),
        ("/api/v1/interceptions", {"status": "ok", "error_type": "rate_limited"}, "error_type"),
        ("/api/v1/usage", {"group_by": "week"}, "group_by"),
        ("/api/v1/usage", {"group_by": "day", "since": "2025-13-01"}, "since"),
    ]
    for path, params, field_name in bad:
        status, body = await get(client, path, root, **params)
        assert status == 400, (params, body)
        assert [v["field"] for v in body["validations"]] == [field_name], body
    status, body = await get(client, "/api/v1/usage", root, group_by="week")
    detail = body["validations"][0]["detail"]
    assert all(g in detail for g in ("user", "model", "provider", "day")), detail


# --------------------------------------------------------------------------- CLI


def test_aibridge_usage_prints_totals_per_model_or_user_and_rejects_a_bad_since(
    sqlite_url: str,
) -> None:
    async def prepare() -> Seeded:
        engine = create_engine(normalize_database_url(sqlite_url))
        try:
            await migrate(engine)
            return await seed(session_factory(engine))
        finally:
            await engine.dispose()

    data = asyncio.run(prepare())
    assert main.commands.get("usage") is usage_command
    runner = CliRunner()
    result = runner.invoke(
        main, ["usage", "--database-url", sqlite_url, "--group-by", "model", "--json"]
    )
    assert result.exit_code == 0, result.output
    out = orjson.loads(result.output)
    rows = expected_usage(data, lambda i: i.model)
    assert out["rows"] == rows
    assert out["totals"] == {k: sum(r[k] for r in rows) for k in ("interceptions", *TOKENS)} | {
        "cost_usd": usd(sum(c for c, _ in data.costs.values())),
        "unpriced": True,
    }
    result = runner.invoke(
        main, ["usage", "--database-url", sqlite_url, "--group-by", "user", "--user", "bob"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    bob_row = expected_usage(data, lambda i: "bob", only={str(data.users["bob"].id)})[0]
    assert lines[0].split() == [
        "USER",
        "INTERCEPTIONS",
        "INPUT",
        "OUTPUT",
        "CACHE_READ",
        "CACHE_WRITE",
        "REASONING",
        "COST_USD",
    ]
    # Bob's last interception had no price: his cost is flagged, exactly the priced sum.
    bob_cost = f"{Decimal(str(bob_row['cost_usd'])):f}*"
    assert (
        bob_cost
        == f"{Decimal(sum(row_cost(n, k) or 0 for n in (7, 8, 9) for k in (0, 1))).scaleb(-12):f}*"
    )
    counts = [str(bob_row[k]) for k in ("interceptions", *TOKENS)]
    assert lines[1].split() == ["bob", *counts, bob_cost]
    assert lines[2].split() == ["TOTAL", *counts, bob_cost]
    assert "without a price" in result.stderr
    result = runner.invoke(main, ["usage", "--database-url", sqlite_url, "--since", "soon"])
    assert result.exit_code == 2
    assert "--since" in result.output
    result = runner.invoke(main, ["usage", "--help"])
    assert result.exit_code == 0 and "--group-by" in result.output
