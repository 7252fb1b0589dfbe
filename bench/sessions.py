"""Sessions API on PostgreSQL with 100,000 interceptions, through the real HTTP API.

    AIBRIDGE_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\
        .venv/bin/python -m bench.sessions [--interceptions 100000] [--calls 40] [--database NAME]

Creates a scratch database on that server (dropped afterwards), migrates it, bulk-loads
interceptions with token usages, prompts and tool usages (COPY), runs VACUUM ANALYZE,
starts the gateway on loopback (in this process, on uvloop, its garbage collector tuned as
``aibridge serve`` tunes it) and times, over ``--calls`` calls each, as an admin and as a
member: the first page of ``GET /api/v1/sessions``, filtered pages, a page deep behind a
cursor, and ``GET /api/v1/sessions/{id}`` of random sessions and of the longest one.
Prints p50/p95/max milliseconds per case and the median time per call spent in database
calls (statement sent to rows fetched, as the gateway sees it), with the load average
before and after; the goal is p95 < 100 ms.

``--database NAME`` keeps the database (created and loaded the first time, reused as it
is afterwards, not migrated, with freshly minted keys) so its plans can be studied with
``EXPLAIN (ANALYZE, BUFFERS)`` in psql and re-runs skip the load; drop it by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from aibridge.eventloop import run as run_loop
from aibridge.server.runner import tune_gc
from aibridge.store.db import create_engine, session_factory
from aibridge.store.models import ApiKey, User
from aibridge.store.urls import normalize_database_url
from aibridge.testing.databases import (
    PG_ENV,
    migrated_engine,
    pg_database,
    plain_url,
    postgres_admin_url,
)
from aibridge.testing.gateway import gateway
from aibridge.tokens import mint_token

USERS = 50
DAYS = 30
MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5", "gpt-5", "gpt-5-mini")
CLIENTS = ("claude-code", "codex", "opencode", None)
GOAL_MS = 100.0
INTERCEPTION_COLUMNS = [
    "id",
    "initiator_id",
    "api_key_id",
    "provider",
    "provider_name",
    "model",
    "started_at",
    "ended_at",
    "metadata",
    "client",
    "client_session_id",
    "credential_kind",
    "error_type",
    "error_message",
]


def plan(total: int, users: list[uuid.UUID], rng: random.Random) -> list[tuple[Any, ...]]:
    """Interception rows: sessions of 1-40 turns (a few of 500) a minute apart, 5% of the
    interceptions without a session id, 2% failed, spread over :data:`DAYS` days."""
    rows: list[tuple[Any, ...]] = []
    end = datetime(2026, 12, 1, tzinfo=UTC)
    while len(rows) < total:
        user = rng.choice(users)
        start = end - timedelta(seconds=rng.uniform(0, DAYS * 86400))
        model = rng.choice(MODELS)
        client = rng.choice(CLIENTS)
        provider = "openai" if model.startswith("gpt") else "anthropic"
        if rng.random() < 0.05:
            turns, session = 1, None
        else:
            turns = 500 if rng.random() < 0.002 else rng.randint(1, 40)
            session = str(uuid.uuid4())
        for n in range(min(turns, total - len(rows))):
            at = start + timedelta(minutes=n, seconds=rng.uniform(0, 30))
            failed = rng.random() < 0.02
            rows.append(
                (
                    uuid.uuid4(),
                    user,
                    None,
                    provider,
                    provider,
                    model,
                    at,
                    at + timedelta(milliseconds=rng.randint(200, 20000)),
                    "{}",
                    client,
                    session,
                    "centralized",
                    "upstream_error" if failed else None,
                    "502 from upstream" if failed else None,
                )
            )
    return rows


async def load(url: str, total: int) -> tuple[str, str]:
    """Migrate and fill the database; returns an admin's key and a member's (user1)."""
    rng = random.Random(15)
    async with migrated_engine(url) as engine:
        sessions = session_factory(engine)
        tokens: list[str] = []
        ids: list[uuid.UUID] = []
        async with sessions() as s, s.begin():
            for n in range(USERS + 1):
                user = User(username=f"user{n}", role="admin" if n == 0 else "member")
                s.add(user)
                await s.flush()
                minted = mint_token()
                s.add(ApiKey(id=minted.key_id, user_id=user.id, secret_hash=minted.secret_hash))
                tokens.append(minted.token)
                ids.append(user.id)
    rows = plan(total, ids[1:], rng)
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_records_to_table(
            "interceptions", records=rows, columns=INTERCEPTION_COLUMNS
        )
        await conn.copy_records_to_table(
            "token_usages",
            records=[
                (
                    uuid.uuid4(),
                    r[0],
                    "",
                    rng.randint(10, 5000),
                    rng.randint(10, 2000),
                    rng.randint(0, 100_000),
                    rng.randint(0, 5000),
                    0,
                    "{}",
                    rng.randint(1, 10**9),
                    "{}",
                    r[6],
                )
                for r in rows
            ],
            columns=[
                "id",
                "interception_id",
                "provider_response_id",
                "input_tokens",
                "output_tokens",
                "cache_read_input_tokens",
                "cache_write_input_tokens",
                "reasoning_tokens",
                "extra_token_types",
                "cost_pusd",
                "metadata",
                "created_at",
            ],
        )
        await conn.copy_records_to_table(
            "user_prompts",
            records=[(uuid.uuid4(), r[0], "", f"please fix bug {n}", "{}", r[6])
                     for n, r in enumerate(rows)],
            columns=["id", "interception_id", "provider_response_id", "prompt", "metadata",
                     "created_at"],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "tool_usages",
            records=[
                (uuid.uuid4(), r[0], "", f"toolu_{n}", "Read", '{"file_path": "src/x.py"}',
                 False, "{}", r[6])
                for n, r in enumerate(rows)
                if n % 2 == 0
            ],
            columns=["id", "interception_id", "provider_response_id", "provider_tool_call_id",
                     "tool", "input", "injected", "metadata", "created_at"],
        )  # fmt: skip
        # VACUUM too: production's autovacuum would have set the visibility map after
        # such a load (index-only scans); this test server runs with autovacuum off.
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return tokens[0], tokens[1]


@asynccontextmanager
async def kept_database(name: str) -> AsyncIterator[tuple[str, bool]]:
    """``(url, created)`` of the database ``name`` on the server, created when missing and
    never dropped (see ``--database``)."""
    if not name.replace("_", "").isalnum():
        raise SystemExit("--database takes letters, digits and underscores only")
    admin = plain_url(postgres_admin_url())
    conn = await asyncpg.connect(admin)
    try:
        found = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not found:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield f"{admin.rpartition('/')[0]}/{name}", not found


async def new_keys(url: str) -> tuple[str, str]:
    """Fresh keys of the admin (user0) and the member user1 of a loaded database: the
    tokens minted at load time are not stored, only their hashes. Not migrated: the
    database is measured as it is (so an older tree can be run against it)."""
    engine = create_engine(normalize_database_url(url))
    try:
        sessions = session_factory(engine)
        tokens: list[str] = []
        async with sessions() as s, s.begin():
            for username in ("user0", "user1"):
                user = (await s.execute(select(User).where(User.username == username))).scalar_one()
                minted = mint_token()
                s.add(ApiKey(id=minted.key_id, user_id=user.id, secret_hash=minted.secret_hash))
                tokens.append(minted.token)
    finally:
        await engine.dispose()
    return tokens[0], tokens[1]


class SqlClock:
    """Milliseconds the gateway's engine spends in its statements (``before`` to ``after``
    cursor execute: with asyncpg that includes fetching the rows), summed since ``reset``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.ms = 0.0
        self._started: dict[int, float] = {}
        event.listen(engine.sync_engine, "before_cursor_execute", self._before)
        event.listen(engine.sync_engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, *_args: Any) -> None:
        self._started[id(conn)] = time.perf_counter()

    def _after(self, conn: Any, *_args: Any) -> None:
        self.ms += (time.perf_counter() - self._started.pop(id(conn))) * 1000

    def reset(self) -> float:
        """The milliseconds since the last reset."""
        ms, self.ms = self.ms, 0.0
        return ms


async def timed(client: TestClient, token: str, path: str, params: dict[str, str]) -> float:
    """Milliseconds of one GET (status must be 200)."""
    t0 = time.perf_counter()
    async with asyncio.timeout(30):
        resp = await client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
        await resp.read()
    elapsed = (time.perf_counter() - t0) * 1000
    if resp.status != 200:
        raise RuntimeError(f"{path} {params}: {resp.status} {await resp.text()}")
    return elapsed


async def body(client: TestClient, token: str, path: str, **params: str) -> Any:
    """The JSON of one GET."""
    async with asyncio.timeout(30):
        resp = await client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
        return await resp.json()


def p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank)."""
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def line(name: str, values: list[float], sql: list[float]) -> str:
    """One table row: p50 / p95 / max in milliseconds, median SQL milliseconds."""
    ordered = sorted(values)
    ok = "yes" if p95(values) < GOAL_MS else "NO"
    return (
        f"| {name} | {statistics.median(ordered):.1f} | {p95(values):.1f} | {ordered[-1]:.1f} "
        f"| {statistics.median(sql):.1f} | {ok} |"
    )


async def measure(
    client: TestClient,
    clock: SqlClock,
    token: str,
    paths: list[tuple[str, dict[str, str]]],
    calls: int,
) -> tuple[list[float], list[float]]:
    """``calls`` timed GETs cycling through ``paths`` after one warm-up call: the
    milliseconds of each, and the SQL milliseconds of each."""
    await timed(client, token, *paths[0])
    values: list[float] = []
    sql: list[float] = []
    for n in range(calls):
        clock.reset()
        values.append(await timed(client, token, *paths[n % len(paths)]))
        sql.append(clock.reset())
    return values, sql  # fmt: skip


@asynccontextmanager
async def loaded(total: int, database: str | None) -> AsyncIterator[tuple[str, str, str]]:
    """``(url, admin key, member key)`` of a loaded database: a scratch one, or the kept
    ``database`` (loaded only when it was just created)."""
    if database is None:
        async with pg_database() as url:
            t0 = time.perf_counter()
            admin, member = await load(url, total)
            print(f"loaded {total} interceptions in {time.perf_counter() - t0:.1f} s")
            yield url, admin, member
        return
    async with kept_database(database) as (url, created):
        if created:
            t0 = time.perf_counter()
            admin, member = await load(url, total)
            print(
                f"loaded {total} interceptions into {database} in {time.perf_counter() - t0:.1f} s"
            )
        else:
            admin, member = await new_keys(url)
            print(f"reusing database {database} as loaded (--interceptions ignored)")
        yield url, admin, member


async def run(total: int, calls: int, database: str | None) -> int:
    async with loaded(total, database) as (url, admin, member):
        with tempfile.TemporaryDirectory() as tmp:
            async with gateway(url, Path(tmp)) as (client, services):
                clock = SqlClock(services.engine)
                # As `aibridge serve` runs: start-up heap frozen, larger generation 0.
                tune_gc()
                first = await body(client, admin, "/api/v1/sessions", limit="50")
                cursor: str | None = None
                depth = 0
                for depth in range(1, 21):  # noqa: B007 (depth is read after the loop)
                    page = await body(
                        client, admin, "/api/v1/sessions", limit="50",
                        **({"cursor": cursor} if cursor else {}),
                    )  # fmt: skip
                    if page["next_cursor"] is None:
                        break
                    cursor = page["next_cursor"]
                assert cursor is not None, "too few sessions for a cursor page"
                sample = [e["id"] for e in first["sessions"]]
                biggest = await body(client, admin, "/api/v1/sessions", limit="500")
                longest = max(biggest["sessions"], key=lambda e: e["interception_count"])
                cases: list[tuple[str, str, list[dict[str, str]]]] = [
                    ("list, admin, first page (50)", admin, [{"limit": "50"}]),
                    ("list, member, first page (50)", member, [{"limit": "50"}]),
                    ("list, admin, model + client filter", admin,
                     [{"limit": "50", "model": "gpt-5", "client": "codex"}]),
                    ("list, admin, has_errors=true", admin,
                     [{"limit": "50", "has_errors": "true"}]),
                    ("list, admin, user + 7-day range", admin,
                     [{"limit": "50", "user": "user7", "since": "2026-11-20T00:00:00Z",
                       "until": "2026-11-27T00:00:00Z"}]),
                    (f"list, admin, page {depth + 1} (cursor)", admin,
                     [{"limit": "50", "cursor": cursor}]),
                ]  # fmt: skip
                print(f"longest session in the first 500: {longest['interception_count']} turns")
                print()
                print(f"load average before: {load_average()}")
                print()
                print("| case | p50 ms | p95 ms | max ms | SQL p50 ms | p95 < 100 ms |")
                print("|---|---:|---:|---:|---:|---|")
                failed = 0
                for name, token, params in cases:
                    paths = [("/api/v1/sessions", params[0])]
                    values, sql = await measure(client, clock, token, paths, calls)
                    print(line(name, values, sql))
                    failed += p95(values) >= GOAL_MS
                detail_cases = [
                    ("detail, random sessions of page 1", sample),
                    (
                        f"detail, longest session ({longest['interception_count']} turns)",
                        [longest["id"]],
                    ),
                ]
                for name, ids in detail_cases:
                    paths = [(f"/api/v1/sessions/{i}", {}) for i in ids]
                    values, sql = await measure(client, clock, admin, paths, calls)
                    print(line(name, values, sql))
                    failed += p95(values) >= GOAL_MS
                print()
                print(f"load average after: {load_average()}")
                return 1 if failed else 0


def load_average() -> str:
    """The 1/5/15-minute load averages (the machine is shared: say how busy it was)."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interceptions", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument(
        "--database",
        help="keep (and reuse) this database on the server instead of a scratch one",
    )
    args = parser.parse_args(argv)
    if not os.environ.get(PG_ENV):
        parser.error(f"set {PG_ENV}=postgresql://user@host:port/db")
    # uvloop, as `aibridge serve` runs.
    return run_loop(run(args.interceptions, args.calls, args.database))


if __name__ == "__main__":
    raise SystemExit(main())
