"""Hot reload across two real gateway processes sharing one PostgreSQL database.

Each test starts two ``aibridge serve`` subprocesses (replica A first: it creates the
first admin and prints its key; then replica B) on a fresh database, with the reconcile
poll set to a minute so that convergence can only come from LISTEN/NOTIFY. Fake
upstreams run in the test process. PostgreSQL only: skipped without
``AIBRIDGE_TEST_POSTGRES_URL`` (and failed when ``AIBRIDGE_TEST_REQUIRE_POSTGRES=1``).

Waiting on another process cannot use an in-process event, so readiness and
convergence are bounded polls (``asyncio.timeout`` around a loop) or waits on the
replica's log lines.

Measure convergence (numbers in docs/benchmarks.md)::

    AIBRIDGE_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\
        .venv/bin/pytest -q -s tests/system/test_hot_reload_replicas.py -k converges
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from aibridge.fakellm import FakeLLM, Scenario
from aibridge.testing.replicas import Replica, poll, start_replica

# Convergence must come from LISTEN/NOTIFY, not from the fallback poll.
REPLICA_ENV = {"AIBRIDGE_RECONCILE_INTERVAL": "60"}
REQUEST_TIMEOUT = 60.0
CONVERGENCE_SAMPLES = 50
STORM_CHANGES = 100
STORM_STREAMS = 32
TEXT_A = "served by upstream A"
TEXT_B = "served by upstream B"
PROVIDER_KEY = "sk-replica-upstream-0001"

pytestmark = pytest.mark.timeout(300)


@dataclass
class Cluster:
    """Two replicas, an HTTP client, the fake upstreams and a direct DB connection."""

    a: Replica
    b: Replica
    http: aiohttp.ClientSession
    db: asyncpg.Connection
    db_name: str
    fake_a: FakeLLM
    fake_b: FakeLLM
    admin_token: str
    user_token: str = ""
    listener_pids_before_b: set[int] = field(default_factory=set)

    def admin(self) -> dict[str, str]:
        """Admin API headers."""
        return {"Authorization": f"Bearer {self.admin_token}"}

    async def admin_call(self, method: str, path: str, body: Any, expect: int) -> Any:
        """An admin API call on replica A with an expected status."""
        async with (
            asyncio.timeout(REQUEST_TIMEOUT),
            self.http.request(method, self.a.url + path, json=body, headers=self.admin()) as resp,
        ):
            data = await resp.json() if resp.status != 204 else None
            assert resp.status == expect, (resp.status, data)
            return data

    async def set_base_url(self, name: str, url: str) -> None:
        """PATCH a provider's base URL through replica A."""
        await self.admin_call("PATCH", f"/api/v1/providers/{name}", {"base_url": url}, 200)

    async def chat(self, replica: Replica, provider: str) -> tuple[int, str | None]:
        """A blocking chat call on ``replica``'s data plane: (status, assistant text)."""
        async with (
            asyncio.timeout(REQUEST_TIMEOUT),
            self.http.post(
                f"{replica.url}/{provider}/v1/chat/completions",
                json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {self.user_token}"},
            ) as resp,
        ):
            body = await resp.json()
            if resp.status != 200:
                return resp.status, None
            return 200, str(body["choices"][0]["message"]["content"])

    async def serves(
        self,
        replica: Replica,
        provider: str,
        text: str,
        timeout: float,  # noqa: ASYNC109
        *,
        tolerate: frozenset[int] = frozenset(),
    ) -> float:
        """Poll ``replica``'s data plane until it answers ``text``; seconds it took.

        Every answer meanwhile must be a 200 (the old configuration) or in ``tolerate``.
        """
        started = time.perf_counter()
        async with asyncio.timeout(timeout):
            while True:
                status, got = await self.chat(replica, provider)
                assert status == 200 or status in tolerate, (replica.name, status)
                if got == text:
                    return time.perf_counter() - started

    async def listener_pids(self) -> set[int]:
        """Backend PIDs of every replica's LISTEN connection on this database."""
        rows = await self.db.fetch(
            "SELECT pid FROM pg_stat_activity"
            " WHERE application_name = 'aibridge-listener' AND datname = $1",
            self.db_name,
        )
        return {int(r["pid"]) for r in rows}


@asynccontextmanager
async def cluster(pg_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    """Fake upstreams A and B, replica A then replica B, a member user and key."""
    db_name = pg_url.rpartition("/")[2]
    replicas: list[Replica] = []
    async with contextlib.AsyncExitStack() as stack:
        fake_a = await stack.enter_async_context(
            FakeLLM(default=Scenario.text_reply(TEXT_A)).serve(host="127.0.0.1", port=0)
        )
        fake_b = await stack.enter_async_context(
            FakeLLM(default=Scenario.text_reply(TEXT_B)).serve(host="127.0.0.1", port=0)
        )
        db = await asyncpg.connect(pg_url)
        stack.push_async_callback(db.close)
        http = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        )
        try:
            a = await start_replica("A", pg_url, tmp_path / "replica-a", env=REPLICA_ENV)
            replicas.append(a)
            token = a.admin_token()
            assert token is not None, f"replica A printed no admin key:\n{a.tail()}"
            c = Cluster(a, a, http, db, db_name, fake_a, fake_b, token)
            c.listener_pids_before_b = await c.listener_pids()
            b = await start_replica("B", pg_url, tmp_path / "replica-b", env=REPLICA_ENV)
            replicas.append(b)
            assert b.admin_token() is None, "replica B created a second first admin"
            c.b = b
            for r in (a, b):
                async with asyncio.timeout(REQUEST_TIMEOUT), http.get(r.url + "/readyz") as resp:
                    ready = await resp.json()
                    assert resp.status == 200 and ready["providers_loaded"], ready
            await c.admin_call("POST", "/api/v1/users", {"username": "dev", "role": "member"}, 201)
            key = await c.admin_call("POST", "/api/v1/users/dev/keys", {"name": "bench"}, 201)
            c.user_token = key["token"]
            yield c
        finally:
            await asyncio.gather(*(r.stop() for r in replicas))


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


async def create_provider(c: Cluster, name: str, base_url: str) -> None:
    """Create an OpenAI provider through replica A and wait until both replicas serve it."""
    body = {"type": "openai", "name": name, "base_url": base_url, "api_keys": [PROVIDER_KEY]}
    await c.admin_call("POST", "/api/v1/providers", body, 201)
    expected = TEXT_A if base_url.startswith(c.fake_a.url) else TEXT_B
    for replica in (c.a, c.b):
        # 404 until the replica has loaded the new provider.
        await c.serves(replica, name, expected, 10.0, tolerate=frozenset({404}))


# --------------------------------------------------------------------------- tests


async def test_replica_b_converges_on_every_change_made_through_a(
    pg_url: str, tmp_path: Path
) -> None:
    async with cluster(pg_url, tmp_path) as c:
        await create_provider(c, "primary", c.fake_a.openai_url)
        samples: list[float] = []
        for i in range(CONVERGENCE_SAMPLES):
            to_b = i % 2 == 0
            await c.set_base_url("primary", (c.fake_b if to_b else c.fake_a).openai_url)
            samples.append(await c.serves(c.b, "primary", TEXT_B if to_b else TEXT_A, 5.0))
        # Replica A (which wrote, and reloads from the same notification) ends there too.
        await c.serves(c.a, "primary", TEXT_A, 5.0)

        p50, p99 = percentile(samples, 50), percentile(samples, 99)
        print(
            f"\nreplica convergence over {len(samples)} changes: "
            f"p50={p50 * 1000:.1f} ms p99={p99 * 1000:.1f} ms max={max(samples) * 1000:.1f} ms",
            file=sys.stderr,
        )
        assert p99 < 1.0, sorted(samples)[-5:]
        # Convergence came from notifications: B reloaded once per change (give or take
        # coalescing), and never from the one-minute poll.
        assert not c.b.logged("provider version changed without a notification")


async def test_streams_in_flight_survive_a_storm_of_reloads_on_another_replica(
    pg_url: str, tmp_path: Path
) -> None:
    async with cluster(pg_url, tmp_path) as c:
        await create_provider(c, "storm", c.fake_a.openai_url)
        await create_provider(c, "steady", c.fake_b.openai_url)
        # Equivalent slow upstreams: every stream overlaps several reloads.
        for fake in (c.fake_a, c.fake_b):
            fake.default = Scenario.slow(delay=0.05, chunks=10, text="streamed while reloading")
        # Only count the storm's streams (the set-up requests' rows may still be on their
        # way to the database: nothing on the request path waits for them).
        storm_began = await c.db.fetchval("SELECT now()")

        changes_done = asyncio.Event()
        outcomes: list[tuple[str, int, bool]] = []

        async def stream_once(replica: Replica, provider: str) -> None:
            async with (
                asyncio.timeout(REQUEST_TIMEOUT),
                c.http.post(
                    f"{replica.url}/{provider}/v1/chat/completions",
                    json={
                        "model": "gpt-test",
                        "stream": True,
                        "messages": [{"role": "user", "content": "hi"}],
                    },
                    headers={"Authorization": f"Bearer {c.user_token}"},
                ) as resp,
            ):
                body = await resp.text()
            outcomes.append((replica.name, resp.status, body.rstrip().endswith("data: [DONE]")))

        async def worker(index: int) -> None:
            replica = c.a if index % 2 == 0 else c.b
            provider = "steady" if index % 8 == 7 else "storm"
            await stream_once(replica, provider)
            while not changes_done.is_set():
                await stream_once(replica, provider)

        async def change_storm() -> None:
            try:
                for i in range(STORM_CHANGES):
                    target = c.fake_b if i % 2 == 0 else c.fake_a
                    await c.set_base_url("storm", target.openai_url)
            finally:
                changes_done.set()

        started = time.perf_counter()
        async with asyncio.timeout(90):
            await asyncio.gather(change_storm(), *(worker(i) for i in range(STORM_STREAMS)))
        elapsed = time.perf_counter() - started

        statuses = sorted({status for _, status, _ in outcomes})
        assert statuses == [200], statuses
        assert all(done for _, _, done in outcomes), "a stream ended without [DONE]"
        assert {name for name, _, _ in outcomes} == {"A", "B"}
        total = len(outcomes)
        assert total >= STORM_STREAMS
        print(
            f"\nreload storm: {STORM_CHANGES} changes, {total} streams in {elapsed:.1f}s",
            file=sys.stderr,
        )

        # Every interception is recorded and closed, by whichever replica served it.
        async def recorded() -> bool:
            done = await c.db.fetchval(
                "SELECT count(*) FROM interceptions"
                " WHERE ended_at IS NOT NULL AND started_at >= $1",
                storm_began,
            )
            return bool(done == total)

        await poll(recorded, 15, f"{total} finished interceptions")
        assert (
            await c.db.fetchval(
                "SELECT count(*) FROM interceptions"
                " WHERE started_at >= $1 AND (ended_at IS NULL OR error_type IS NOT NULL)",
                storm_began,
            )
            == 0
        )

        # Both replicas end on the final configuration version.
        final = await c.db.fetchval("SELECT version FROM config_versions WHERE name = 'providers'")

        async def both_current() -> bool:
            for replica in (c.a, c.b):
                async with c.http.get(replica.url + "/readyz") as resp:
                    if (await resp.json())["config_version"] != final:
                        return False
            return True

        await poll(both_current, 10, f"both replicas at config version {final}")
        last = c.fake_b if (STORM_CHANGES - 1) % 2 == 0 else c.fake_a
        before = len(last.requests)
        for replica in (c.a, c.b):
            await stream_once(replica, "storm")
        assert len(last.requests) == before + 2


async def test_replica_b_recovers_from_losing_its_notification_connection(
    pg_url: str, tmp_path: Path
) -> None:
    async with cluster(pg_url, tmp_path) as c:
        await create_provider(c, "primary", c.fake_a.openai_url)
        pids = await c.listener_pids()
        b_pids = pids - c.listener_pids_before_b
        assert len(c.listener_pids_before_b) == 1 and len(b_pids) == 1, (
            c.listener_pids_before_b,
            pids,
        )
        (b_listener,) = b_pids
        log_mark = len(c.b.stderr)

        killed = await c.db.fetchval("SELECT pg_terminate_backend($1)", b_listener)
        assert killed is True
        # Changed while B may not be listening: the NOTIFY can be lost for B.
        await c.set_base_url("primary", c.fake_b.openai_url)
        took = await c.serves(c.b, "primary", TEXT_B, 10.0)
        await c.b.wait_for_log("pubsub listener reconnected", after=log_mark, timeout=10)

        async def new_listener() -> bool:
            now = await c.listener_pids()
            return b_listener not in now and len(now) == 2

        await poll(new_listener, 10, "replica B's new listener connection")
        # And notifications flow on the new connection.
        await c.set_base_url("primary", c.fake_a.openai_url)
        again = await c.serves(c.b, "primary", TEXT_A, 5.0)
        await c.serves(c.a, "primary", TEXT_A, 5.0)
        print(
            f"\nafter listener loss: converged in {took * 1000:.0f} ms; "
            f"next change in {again * 1000:.0f} ms",
            file=sys.stderr,
        )
        assert not c.b.logged("provider version changed without a notification")
