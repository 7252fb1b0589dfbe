"""``GET /api/v1/sessions``, ``/api/v1/sessions/{id}``, ``/api/v1/interceptions/{id}`` and
the usage additions (``group_by=client``, ``interval=day``) through the real gateway app on
a SQLite file and PostgreSQL."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.store.models import (
    Interception,
    ModelThought,
    TokenUsage,
    ToolUsage,
    User,
    UserPrompt,
)
from aibridge.store.sessions import SessionKey, encode_session_id
from tests.admin.api_client import add_users, all_pages, bounded_gateway, get
from tests.admin.test_interceptions import usd

T0 = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
TOKENS = ("input", "output", "cache_read", "cache_write", "reasoning")


@dataclass
class Turn:
    """One seeded interception and what it should add up to."""

    name: str
    user: str
    session: str | None
    at: timedelta
    tokens: tuple[int, int, int, int, int]
    cost_pusd: int | None
    model: str = "claude-a"
    provider: str = "anthropic"
    client: str | None = "claude-code"
    error: str | None = None
    row: Interception | None = None


@dataclass
class Seeded:
    """Users, their tokens, and the seeded turns by name."""

    users: dict[str, User] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    turns: dict[str, Turn] = field(default_factory=dict)


# Alice's session "s1" has three turns whose cache share goes 0 -> 0.98 -> 0.02 (a break
# on the third); bob uses the same client session id "s1": a different session.
TURNS = [
    Turn("a1", "alice", "s1", timedelta(0), (2000, 50, 0, 3000, 0), 7_000_000_123),
    Turn("a2", "alice", "s1", timedelta(minutes=1), (100, 60, 5000, 0, 5), 2_000_000_001,
         error="rate_limited"),
    Turn("a3", "alice", "s1", timedelta(minutes=2), (5000, 70, 100, 10, 0), None),
    Turn("solo1", "alice", None, timedelta(seconds=30), (10, 1, 0, 0, 0), 5, client=None),
    Turn("solo2", "alice", None, timedelta(minutes=5), (20, 2, 0, 0, 0), 6, error="upstream"),
    Turn("b1", "bob", "s1", timedelta(seconds=90), (300, 3, 0, 0, 0), 11,
         "gpt-5", "openai", "codex"),
    Turn("b2", "bob", "s1", timedelta(minutes=3), (400, 4, 0, 0, 0), 13,
         "gpt-5", "openai", "codex"),
    Turn("a9", "alice", "s2", timedelta(hours=-1), (1, 1, 1, 1, 1), 17, client="codex"),
]  # fmt: skip
NEWEST_FIRST = [["solo2"], ["b1", "b2"], ["a1", "a2", "a3"], ["solo1"], ["a9"]]


async def seed(sessions: async_sessionmaker[AsyncSession]) -> Seeded:
    """Three users (alice and bob members, root admin) and :data:`TURNS`."""
    data = Seeded()
    async with sessions() as s, s.begin():
        roles = {"alice": "member", "bob": "member", "root": "admin"}
        for name, added in (await add_users(s, roles)).items():
            data.users[name] = added.user
            data.tokens[name] = added.token
        for turn in TURNS:
            started = T0 + turn.at
            row = Interception(
                id=uuid.uuid4(),
                initiator_id=data.users[turn.user].id,
                provider=turn.provider,
                provider_name=turn.provider,
                model=turn.model,
                started_at=started,
                ended_at=started + timedelta(milliseconds=1500),
                client=turn.client,
                client_session_id=turn.session,
                error_type=turn.error,
                error_message="boom" if turn.error else None,
            )
            s.add(row)
            turn.row = row
            data.turns[turn.name] = turn
            i, o, cr, cw, r = turn.tokens
            s.add(
                TokenUsage(
                    id=uuid.uuid4(),
                    interception_id=row.id,
                    input_tokens=i,
                    output_tokens=o,
                    cache_read_input_tokens=cr,
                    cache_write_input_tokens=cw,
                    reasoning_tokens=r,
                    cost_pusd=turn.cost_pusd,
                    created_at=started,
                )
            )
            s.add(UserPrompt(id=uuid.uuid4(), interception_id=row.id, prompt=f"do {turn.name}"))
        a2 = data.turns["a2"].row
        assert a2 is not None
        s.add_all(
            [
                ToolUsage(
                    id=uuid.uuid4(),
                    interception_id=a2.id,
                    tool="Read",
                    provider_tool_call_id="toolu_1",
                    input='{"file_path": "x.py"}',
                    created_at=T0 + timedelta(minutes=1, seconds=1),
                ),
                ToolUsage(
                    id=uuid.uuid4(),
                    interception_id=a2.id,
                    tool="mcp_search",
                    provider_tool_call_id="toolu_2",
                    server_url="https://mcp.example",
                    input='{"q": "<script>"}',
                    injected=True,
                    invocation_error="timeout",
                    created_at=T0 + timedelta(minutes=1, seconds=2),
                ),
                ModelThought(id=uuid.uuid4(), interception_id=a2.id, content="first"),
                ModelThought(
                    id=uuid.uuid4(),
                    interception_id=a2.id,
                    content="second",
                    created_at=datetime.now(UTC) + timedelta(seconds=1),
                ),
            ]
        )
    return data


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def expected_entry(data: Seeded, names: list[str]) -> dict[str, Any]:
    """The list entry of the session made of turns ``names`` (all of them matching)."""
    turns = [data.turns[n] for n in names]
    tokens = {k: sum(t.tokens[n] for t in turns) for n, k in enumerate(TOKENS)}
    first = turns[0].row
    assert first is not None
    return {
        "client_session_id": turns[0].session,
        "user": {"id": str(first.initiator_id), "username": turns[0].user},
        "client": max((t.client for t in turns if t.client), default=None),
        "first_at": min(T0 + t.at for t in turns),
        "last_at": max(T0 + t.at for t in turns),
        "interception_count": len(turns),
        "tokens": tokens,
        "cost_usd": usd(sum(t.cost_pusd or 0 for t in turns)),
        "unpriced": any(t.cost_pusd is None for t in turns),
        "error_count": sum(1 for t in turns if t.error),
    }


def comparable(entry: dict[str, Any]) -> dict[str, Any]:
    """``entry`` without its opaque id, times parsed."""
    out = {k: v for k, v in entry.items() if k not in ("id", "interceptions")}
    for k in ("first_at", "last_at"):
        out[k] = datetime.fromisoformat(out[k])
    return out


async def test_sessions_are_grouped_paged_filtered_and_private(db_url: str, tmp_path: Path) -> None:
    async with bounded_gateway(db_url, tmp_path) as (client, services):
        data = await seed(services.sessions)
        await check_listing(client, data)
        await check_filters(client, data)
        await check_detail(client, data)
        await check_interception_record(client, data)
        await check_usage_additions(client, data)


async def check_listing(client: TestClient, data: Seeded) -> None:
    root = data.tokens["root"]
    status, body = await get(client, "/api/v1/sessions", root)
    assert status == 200, body
    assert body["next_cursor"] is None
    assert [comparable(e) for e in body["sessions"]] == [
        expected_entry(data, names) for names in NEWEST_FIRST
    ]
    ids = [e["id"] for e in body["sessions"]]
    assert len(set(ids)) == len(ids)
    for limit in ("1", "2", "4"):
        assert [
            e["id"]
            for e in await all_pages(client, "/api/v1/sessions", "sessions", root, limit=limit)
        ] == ids
    # Members see their own sessions only, paged the same way.
    alice = [e for e in body["sessions"] if e["user"]["username"] == "alice"]
    got = await all_pages(client, "/api/v1/sessions", "sessions", data.tokens["alice"], limit="2")
    assert got == alice
    assert len(got) == 4
    status, body = await get(client, "/api/v1/sessions", data.tokens["bob"], user="alice")
    assert (status, body) == (200, {"sessions": [], "next_cursor": None}), "filter is ANDed"
    status, body = await get(client, "/api/v1/sessions", data.tokens["bob"])
    assert [e["user"]["username"] for e in body["sessions"]] == ["bob"]


async def check_filters(client: TestClient, data: Seeded) -> None:
    root = data.tokens["root"]

    async def names(**params: str) -> list[dict[str, Any]]:
        status, body = await get(client, "/api/v1/sessions", root, **params)
        assert status == 200, body
        return [comparable(e) for e in body["sessions"]]

    assert await names(model="gpt-5") == [expected_entry(data, ["b1", "b2"])]
    assert await names(provider="openai") == [expected_entry(data, ["b1", "b2"])]
    assert await names(client="codex") == [
        expected_entry(data, ["b1", "b2"]),
        expected_entry(data, ["a9"]),
    ]
    assert await names(user="bob") == [expected_entry(data, ["b1", "b2"])]
    assert await names(has_errors="true") == [
        expected_entry(data, ["solo2"]),
        expected_entry(data, ["a1", "a2", "a3"]),
    ]
    assert await names(has_errors="false") == [
        expected_entry(data, ["b1", "b2"]),
        expected_entry(data, ["solo1"]),
        expected_entry(data, ["a9"]),
    ]
    # A time range keeps the sessions active in it and sums only the turns inside it.
    since = (T0 + timedelta(seconds=60)).isoformat()
    until = (T0 + timedelta(minutes=4)).isoformat()
    assert await names(since=since, until=until) == [
        expected_entry(data, ["b1", "b2"]),
        expected_entry(data, ["a2", "a3"]),
    ]
    # has_errors looks at the matching turns only: the error of a2 is outside this range.
    assert await names(has_errors="true", since=(T0 + timedelta(seconds=61)).isoformat()) == [
        expected_entry(data, ["solo2"])
    ]
    for params, field_name in (
        ({"has_errors": "maybe"}, "has_errors"),
        ({"limit": "0"}, "limit"),
        ({"cursor": "nope"}, "cursor"),
        ({"since": "yesterday"}, "since"),
    ):
        status, body = await get(client, "/api/v1/sessions", root, **params)
        assert status == 400, body
        assert [v["field"] for v in body["validations"]] == [field_name]


async def check_detail(client: TestClient, data: Seeded) -> None:
    root, alice, bob = (data.tokens[n] for n in ("root", "alice", "bob"))
    status, body = await get(client, "/api/v1/sessions", root)
    by_names = {tuple(n): e["id"] for n, e in zip(NEWEST_FIRST, body["sessions"], strict=True)}
    sid = by_names[("a1", "a2", "a3")]
    status, detail = await get(client, f"/api/v1/sessions/{sid}", root)
    assert status == 200, detail
    assert comparable(detail) == expected_entry(data, ["a1", "a2", "a3"])
    turns = detail["interceptions"]
    assert [t["id"] for t in turns] == [str(data.turns[n].row.id) for n in ("a1", "a2", "a3")]  # type: ignore[union-attr]
    assert [t["prompt"] for t in turns] == ["do a1", "do a2", "do a3"]
    assert [t["cache_read_share"] for t in turns] == [0.0, 5000 / 5100, 100 / 5110]
    assert [t["cache_break"] for t in turns] == [False, False, True]
    assert [t["duration_ms"] for t in turns] == [1500, 1500, 1500]
    assert [t["error_type"] for t in turns] == [None, "rate_limited", None]
    assert [t["cost_usd"] for t in turns] == [usd(7_000_000_123), usd(2_000_000_001), 0]
    assert [t["unpriced"] for t in turns] == [False, False, True]
    assert turns[1]["tokens"] == dict(zip(TOKENS, (100, 60, 5000, 0, 5), strict=True))
    assert turns[1]["thoughts"] == ["first", "second"]
    assert turns[1]["tool_calls"] == [
        {
            "name": "Read",
            "call_id": "toolu_1",
            "injected": False,
            "server_url": None,
            "arguments": {"file_path": "x.py"},
            "error": None,
        },
        {
            "name": "mcp_search",
            "call_id": "toolu_2",
            "injected": True,
            "server_url": "https://mcp.example",
            "arguments": {"q": "<script>"},
            "error": "timeout",
        },
    ]
    # The owner sees it; another member gets a 404 (not a 403: existence is not revealed).
    status, own = await get(client, f"/api/v1/sessions/{sid}", alice)
    assert (status, own) == (200, detail)
    status, body = await get(client, f"/api/v1/sessions/{sid}", bob)
    assert status == 404, body
    # A one-interception session.
    solo = by_names[("solo2",)]
    status, body = await get(client, f"/api/v1/sessions/{solo}", alice)
    assert status == 200, body
    assert [t["prompt"] for t in body["interceptions"]] == ["do solo2"]
    assert body["client_session_id"] is None
    # Bob's "s1" is his own session, not alice's.
    status, body = await get(client, f"/api/v1/sessions/{by_names[('b1', 'b2')]}", bob)
    assert [t["prompt"] for t in body["interceptions"]] == ["do b1", "do b2"]
    unknown = encode_session_id(SessionKey(uuid.uuid4(), None, uuid.uuid4()))
    for bad, code in (("nope", 400), (b64(b'["i","123"]'), 400), (unknown, 404)):
        status, body = await get(client, f"/api/v1/sessions/{bad}", root)
        assert status == code, (bad, body)


async def check_interception_record(client: TestClient, data: Seeded) -> None:
    row = data.turns["a2"].row
    assert row is not None
    status, body = await get(client, f"/api/v1/interceptions/{row.id}", data.tokens["alice"])
    assert status == 200, body
    assert body["id"] == str(row.id)
    assert body["thoughts"] == ["first", "second"]
    assert body["thought_count"] == 2
    assert body["duration_ms"] == 1500
    assert body["prompt"] == "do a2"
    assert [c["arguments"] for c in body["tool_calls"]] == [
        {"file_path": "x.py"},
        {"q": "<script>"},
    ]
    status, listed = await get(client, "/api/v1/interceptions", data.tokens["alice"])
    item = next(i for i in listed["interceptions"] if i["id"] == str(row.id))
    assert {k: v for k, v in body.items() if k not in ("thoughts", "duration_ms")} == item
    status, body = await get(client, f"/api/v1/interceptions/{row.id}", data.tokens["bob"])
    assert status == 404, body
    status, body = await get(client, f"/api/v1/interceptions/{uuid.uuid4()}", data.tokens["root"])
    assert status == 404, body
    status, body = await get(client, "/api/v1/interceptions/not-a-uuid", data.tokens["root"])
    assert status == 400, body


async def check_usage_additions(client: TestClient, data: Seeded) -> None:
    root = data.tokens["root"]
    status, body = await get(client, "/api/v1/usage", root, group_by="client")
    assert status == 200, body
    by_client = {r["key"]: r for r in body["rows"]}
    assert sorted(by_client) == ["-", "claude-code", "codex"]
    assert by_client["codex"]["interceptions"] == 3
    assert by_client["-"]["input"] == 10
    status, series = await get(client, "/api/v1/usage", root, group_by="client", interval="day")
    assert status == 200, series
    assert series["interval"] == "day"
    assert [(r["day"], r["key"]) for r in series["rows"]] == [
        ("2025-03-01", "-"),
        ("2025-03-01", "claude-code"),
        ("2025-03-01", "codex"),
    ]
    # The series adds up to the totals (here: everything on one day).
    assert [{k: v for k, v in r.items() if k != "day"} for r in series["rows"]] == body["rows"]
    status, series = await get(client, "/api/v1/usage", root, group_by="model", interval="day")
    assert status == 200
    assert {r["key"] for r in series["rows"]} == {"claude-a", "gpt-5"}
    for params in ({"interval": "week"}, {"interval": "day", "group_by": "day"}):
        status, body = await get(client, "/api/v1/usage", root, **params)
        assert status == 400, body
        assert [v["field"] for v in body["validations"]] == ["interval"]
