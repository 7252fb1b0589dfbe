"""Records are never lost: real ``aibridge serve`` processes that are stopped with the
database down, or killed with SIGKILL, and started again.

Each test runs the gateway as a subprocess on a fresh PostgreSQL database or a SQLite
file (the fake upstream runs in the test process), does its damage, starts the gateway
again on the same data directory and then counts rows in the database: every
interception exactly once, each with its end and exactly one token usage. The counts
are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from aibridge.fakellm import FakeLLM, Scenario
from aibridge.testing.outage import pg_outage, sqlite_outage
from aibridge.testing.replicas import Replica, poll, start_replica

pytestmark = pytest.mark.timeout(300)

REQUEST_TIMEOUT = 60.0
REPLAY_TIMEOUT = 90.0
OUTAGE_REQUESTS = 3000
CONCURRENCY = 64
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
COUNTS = """
SELECT
  (SELECT count(*) FROM interceptions) AS interceptions,
  (SELECT count(DISTINCT id) FROM interceptions) AS distinct_ids,
  (SELECT count(*) FROM interceptions WHERE ended_at IS NOT NULL) AS ended,
  (SELECT count(*) FROM interceptions WHERE error_type IS NOT NULL) AS errors,
  (SELECT count(*) FROM token_usages) AS usages,
  (SELECT count(DISTINCT interception_id) FROM token_usages) AS with_usage,
  (SELECT count(*) FROM user_prompts) AS prompts
"""


@dataclass
class Gateway:
    """The database, data directory, fake upstream and keys shared by the runs of a test."""

    db_url: str | None
    """PostgreSQL; None for SQLite in the data directory."""
    data_dir: Path
    fake: FakeLLM
    http: aiohttp.ClientSession
    token: str = ""

    async def start(self, name: str, **kwargs: Any) -> Replica:
        """Start ``aibridge serve`` on the shared database and data directory."""
        return await start_replica(name, self.db_url, self.data_dir, **kwargs)

    async def serving(self, replica: Replica) -> None:
        """Wait (bounded poll) until ``replica`` has loaded provider "p"."""

        async def loaded() -> bool:
            async with self.http.get(f"{replica.url}/readyz") as resp:
                return "p" in (await resp.json()).get("providers", {})

        await poll(loaded, REQUEST_TIMEOUT, f"provider p on replica {replica.name}")

    async def chat(self, replica: Replica, *, stream: bool = False) -> None:
        """One chat completion through ``replica`` that must succeed."""
        async with (
            asyncio.timeout(REQUEST_TIMEOUT),
            self.http.post(
                f"{replica.url}/p/v1/chat/completions",
                json={**CHAT, "stream": stream},
                headers={"Authorization": f"Bearer {self.token}"},
            ) as resp,
        ):
            body = await resp.read()
            assert resp.status == 200, body

    async def counts(self) -> dict[str, int]:
        """Interceptions (all, distinct, ended, with an error) and usage/prompt rows."""
        if self.db_url is None:
            return await asyncio.to_thread(self._sqlite_counts)
        conn = await asyncpg.connect(self.db_url)
        try:
            row = await conn.fetchrow(COUNTS)
        finally:
            await conn.close()
        assert row is not None
        return dict(row)

    async def errors(self) -> list[tuple[Any, ...]]:
        """(error_type, error_message) of the interceptions that have one."""
        sql = "SELECT error_type, error_message FROM interceptions WHERE error_type IS NOT NULL"
        if self.db_url is None:

            def query() -> list[tuple[Any, ...]]:
                conn = sqlite3.connect(f"file:{self.data_dir / 'aibridge.db'}?mode=ro", uri=True)
                try:
                    return [tuple(r) for r in conn.execute(sql)]
                finally:
                    conn.close()

            return await asyncio.to_thread(query)
        conn = await asyncpg.connect(self.db_url)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    def _sqlite_counts(self) -> dict[str, int]:
        conn = sqlite3.connect(f"file:{self.data_dir / 'aibridge.db'}?mode=ro", uri=True)
        try:
            conn.row_factory = sqlite3.Row
            return dict(conn.execute(COUNTS).fetchone())
        finally:
            conn.close()

    @contextlib.asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        """The database is unreachable meanwhile."""
        if self.db_url is None:
            async with sqlite_outage(self.data_dir / "aibridge.db"):
                yield
        else:
            async with pg_outage(self.db_url):
                yield

    def spill_files(self) -> list[str]:
        """Spill files (live or claimed for replay) in the data directory."""
        return sorted(
            p.name
            for p in self.data_dir.glob("recording-spill.jsonl*")
            if not p.name.endswith(".rejected")
        )

    def journal_segments(self) -> list[str]:
        """Journal segments in the data directory (a stopped replica leaves none)."""
        return sorted(
            str(p.relative_to(self.data_dir))
            for p in self.data_dir.glob("recording-journal/*/*.journal")
        )


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request: pytest.FixtureRequest) -> str | None:
    """Each test on a fresh PostgreSQL database and on SQLite in the data directory."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_url")
    return url


@asynccontextmanager
async def gateway(db_url: str | None, tmp_path: Path) -> AsyncIterator[tuple[Gateway, Replica]]:
    """A first gateway run with a provider "p" on the fake upstream and the admin key."""
    async with contextlib.AsyncExitStack() as stack:
        fake = await stack.enter_async_context(FakeLLM().serve(host="127.0.0.1", port=0))
        http = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY))
        )
        g = Gateway(db_url, tmp_path / "data", fake, http)
        first = await g.start("first")
        stack.push_async_callback(first.stop)
        token = first.admin_token()
        assert token is not None, first.tail()
        g.token = token
        body = {
            "type": "openai",
            "name": "p",
            "base_url": fake.openai_url,
            "api_keys": ["sk-crash-upstream-0001"],
        }
        async with (
            asyncio.timeout(REQUEST_TIMEOUT),
            http.post(
                f"{first.url}/api/v1/providers",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            ) as resp,
        ):
            assert resp.status == 201, await resp.text()
        await g.serving(first)
        yield g, first


async def wait_recorded(g: Gateway, total: int) -> dict[str, int]:
    """Poll the database until ``total`` interceptions are ended with their usage and no
    spill or journal file is left; returns the final counts."""
    counts: dict[str, int] = {}

    async def done() -> bool:
        nonlocal counts
        counts = await g.counts()
        return counts["ended"] >= total and counts["with_usage"] >= total and not g.spill_files()

    try:
        await poll(done, REPLAY_TIMEOUT, f"{total} recorded interceptions")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}: {counts}, spill {g.spill_files()}, errors {await g.errors()}"
        ) from None
    return counts


async def restart_and_check_every_record_once(g: Gateway, total: int) -> None:
    """Start the gateway again, wait until ``total`` interceptions are recorded, stop it
    cleanly and check each was recorded exactly once with nothing left to replay."""
    second = await g.start("second")
    try:
        counts = await wait_recorded(g, total)
    finally:
        await second.stop()
    assert g.journal_segments() == []  # the clean stop left nothing to replay
    print(f"after restart: {counts}")
    assert_exactly_once(counts, total)


def assert_exactly_once(counts: dict[str, int], total: int) -> None:
    """Every interception once, ended, without error, with one usage and one prompt."""
    assert counts == {
        "interceptions": total,
        "distinct_ids": total,
        "ended": total,
        "errors": 0,
        "usages": total,
        "with_usage": total,
        "prompts": total,
    }


# --------------------------------------------------------------------------- SIGTERM


async def test_sigterm_with_the_database_down_spills_and_replays_every_record(
    db_url: str | None, tmp_path: Path
) -> None:
    async with gateway(db_url, tmp_path) as (g, first):
        warm = 2
        for _ in range(warm):
            await g.chat(first)  # caches the key, warms the upstream connection
        await wait_recorded(g, warm)
        async with g.outage():
            sem = asyncio.Semaphore(CONCURRENCY)

            async def one() -> None:
                async with sem:
                    await g.chat(first)

            async with asyncio.timeout(60):
                await asyncio.gather(*(one() for _ in range(OUTAGE_REQUESTS)))
            code = await first.terminate()
            assert code == 0, first.tail(120)
            spilled = g.spill_files()
            print(f"\nafter SIGTERM with the database down: files {spilled}")
            assert spilled, "nothing was spilled"
            assert g.journal_segments() == []  # all of it was moved to the spill file
        await restart_and_check_every_record_once(g, warm + OUTAGE_REQUESTS)


# --------------------------------------------------------------------------- kill -9

STREAMS = 30


@asynccontextmanager
async def writes_blocked(g: Gateway) -> AsyncIterator[None]:
    """The recorder's batches cannot commit meanwhile (they wait for a lock we hold): the
    records of the requests served meanwhile are provably in the gateway's memory only.
    On PostgreSQL the token_usages table is locked (interception starts still insert);
    on SQLite the whole database is (starts fall back to the queue as well)."""
    if g.db_url is None:
        conn = sqlite3.connect(g.data_dir / "aibridge.db", isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    pg = await asyncpg.connect(g.db_url)
    try:
        tx = pg.transaction()
        await tx.start()
        await pg.execute("LOCK TABLE token_usages IN ACCESS EXCLUSIVE MODE")
        yield
        await tx.rollback()
    finally:
        await pg.close()


async def test_kill_9_right_after_completed_streams_loses_no_record(
    db_url: str | None, tmp_path: Path
) -> None:
    async with gateway(db_url, tmp_path) as (g, first):
        warm = 2
        for _ in range(warm):
            await g.chat(first)
        await wait_recorded(g, warm)
        async with writes_blocked(g):
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await asyncio.gather(*(g.chat(first, stream=True) for _ in range(STREAMS)))
            await first.kill()
        before = await g.counts()
        print(f"\nkilled after {STREAMS} completed streams, before restart: {before}")
        assert before["with_usage"] < warm + STREAMS  # the kill did lose them from memory
        await restart_and_check_every_record_once(g, warm + STREAMS)


async def readyz(g: Gateway, replica: Replica) -> dict[str, Any]:
    """The replica's /readyz body."""
    async with asyncio.timeout(REQUEST_TIMEOUT), g.http.get(f"{replica.url}/readyz") as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def open_stream(
    g: Gateway, replica: Replica, release: asyncio.Event | None
) -> tuple[aiohttp.ClientResponse, Scenario]:
    """A streaming request through ``replica`` that is provably in flight: the upstream
    stalls (until ``release``) after a few events and the client has read the first."""
    stall = Scenario.stall(release=release)
    g.fake.enqueue(stall)
    async with asyncio.timeout(REQUEST_TIMEOUT):
        resp = await g.http.post(
            f"{replica.url}/p/v1/chat/completions",
            json={**CHAT, "stream": True},
            headers={"Authorization": f"Bearer {g.token}"},
        )
        assert resp.status == 200, await resp.text()
        assert (await resp.content.readline()).startswith(b"data:")
        await stall.stalled.wait()
    return resp, stall


async def rows_of(g: Gateway, replica_id: str) -> list[tuple[Any, ...]]:
    """(ended, error_type) of the replica's interceptions."""
    sql = "SELECT ended_at IS NOT NULL, error_type FROM interceptions WHERE replica_id = "
    if g.db_url is None:

        def query() -> list[tuple[Any, ...]]:
            conn = sqlite3.connect(f"file:{g.data_dir / 'aibridge.db'}?mode=ro", uri=True)
            try:
                return [tuple(r) for r in conn.execute(sql + "?", (replica_id,))]
            finally:
                conn.close()

        return await asyncio.to_thread(query)
    conn = await asyncpg.connect(g.db_url)
    try:
        return [tuple(r) for r in await conn.fetch(sql + "$1", replica_id)]
    finally:
        await conn.close()


async def test_kill_9_mid_stream_ends_the_interception_at_restart_but_not_other_replicas(
    db_url: str | None, tmp_path: Path
) -> None:
    async with gateway(db_url, tmp_path) as (g, first):
        # Another replica (its own data directory) on the same database.
        other_db = db_url or f"sqlite:///{g.data_dir / 'aibridge.db'}"
        other = await start_replica("other", other_db, tmp_path / "other-data")
        try:
            await g.serving(other)
            mine, theirs = (await readyz(g, first))["replica"], (await readyz(g, other))["replica"]
            assert mine != theirs
            release_other = asyncio.Event()
            their_resp, _ = await open_stream(g, other, release_other)
            my_resp, _ = await open_stream(g, first, None)

            # The start rows land with the next batch (nothing on the request path waits
            # for them); both are in the database, open, before the kill.
            async def both_open() -> bool:
                return await rows_of(g, mine) == await rows_of(g, theirs) == [(False, None)]

            await poll(both_open, REPLAY_TIMEOUT, "both streams' start rows")

            await first.kill()
            my_resp.close()
            second = await g.start("second")
            try:
                assert (await readyz(g, second))["replica"] == mine

                async def ended() -> bool:
                    return await rows_of(g, mine) == [(True, "gateway_restart")]

                await poll(ended, REPLAY_TIMEOUT, "the killed stream's interception to end")
                print(f"\nafter restart: killed replica {await rows_of(g, mine)}", end=" ")
                # The other replica's stream is live: its interception stays open...
                assert await rows_of(g, theirs) == [(False, None)]
                release_other.set()
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    assert b"[DONE]" in await their_resp.read()

                # ...and ends normally when it is done.
                async def theirs_done() -> bool:
                    return await rows_of(g, theirs) == [(True, None)]

                await poll(theirs_done, REPLAY_TIMEOUT, "the other replica's stream to end")
                print(f"other replica {await rows_of(g, theirs)}")
            finally:
                await second.stop()
        finally:
            await other.stop()
