"""The gateway's limits across two ``aibridge serve`` replicas sharing PostgreSQL and
Redis: a request rate enforced exactly across both, concurrency limits holding across
both, and Redis going away mid-test (traffic keeps flowing; the fallback is in /metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aibridge.fakellm import FakeLLM, Scenario
from aibridge.testing.replicas import Replica, free_port, poll, start_replica

REDIS_ENV = "AIBRIDGE_TEST_REDIS_URL"
REQUIRE_REDIS_ENV = "AIBRIDGE_TEST_REQUIRE_REDIS"
TIMEOUT = 60.0

pytestmark = pytest.mark.timeout(300)


def redis_url() -> str:
    """The shared test Redis (skip, or fail when required, without one)."""
    url = os.environ.get(REDIS_ENV)
    if not url:
        if os.environ.get(REQUIRE_REDIS_ENV) == "1":
            pytest.fail(f"{REQUIRE_REDIS_ENV}=1 but {REDIS_ENV} is not set")
        pytest.skip(f"the limiter's Redis tests need {REDIS_ENV}=redis://host:port/db")
    return url


@dataclass
class Cluster:
    """Two replicas, the fake upstream and a member's key."""

    replicas: list[Replica]
    http: aiohttp.ClientSession
    fake: FakeLLM
    user_token: str = ""

    async def chat(self, replica: Replica, *, stream: bool = False) -> tuple[int, Any]:
        """One Chat Completions request as the member: status and body (JSON or text)."""
        body = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}
        if stream:
            body["stream"] = True
        async with (
            asyncio.timeout(TIMEOUT),
            self.http.post(
                f"{replica.url}/oai/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {self.user_token}"},
            ) as resp,
        ):
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def metrics(self, replica: Replica) -> str:
        """A replica's /metrics."""
        async with asyncio.timeout(TIMEOUT), self.http.get(f"{replica.url}/metrics") as resp:
            return await resp.text()


async def admin(
    http: aiohttp.ClientSession, replica: Replica, token: str, path: str, body: Mapping[str, Any]
) -> Any:
    """An admin API POST (201 expected)."""
    async with (
        asyncio.timeout(TIMEOUT),
        http.post(
            replica.url + path, json=dict(body), headers={"Authorization": f"Bearer {token}"}
        ) as resp,
    ):
        assert resp.status == 201, await resp.text()
        return await resp.json()


@asynccontextmanager
async def cluster(
    pg_url: str, tmp_path: Path, redis: str, settings: Mapping[str, str]
) -> AsyncIterator[Cluster]:
    """Two replicas on one database and one Redis (a key prefix of their own), with
    ``settings`` (``AIBRIDGE_*``), an OpenAI provider ``oai`` on the fake upstream and a
    member ``dev``."""
    env = {
        "AIBRIDGE_REDIS_URL": redis,
        "AIBRIDGE_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:12]}:",
        **settings,
    }
    replicas: list[Replica] = []
    async with FakeLLM().serve() as fake, aiohttp.ClientSession() as http:
        try:
            a = await start_replica("A", pg_url, tmp_path / "a", env=env)
            replicas.append(a)
            token = a.admin_token()
            assert token is not None, a.tail()
            b = await start_replica("B", pg_url, tmp_path / "b", env=env)
            replicas.append(b)
            c = Cluster(replicas, http, fake)
            await admin(http, a, token, "/api/v1/users", {"username": "dev", "role": "member"})
            key = await admin(http, a, token, "/api/v1/users/dev/keys", {"name": "t"})
            c.user_token = key["token"]
            await admin(
                http,
                a,
                token,
                "/api/v1/providers",
                {
                    "type": "openai",
                    "name": "oai",
                    "base_url": fake.url + "/v1",
                    "api_keys": ["sk-replica-upstream-0001"],
                },
            )
            for r in replicas:
                # The model list is a passthrough route: not limited, so it costs no request.
                async def has_provider(r: Replica = r) -> bool:
                    async with http.get(
                        f"{r.url}/oai/v1/models",
                        headers={"Authorization": f"Bearer {c.user_token}"},
                    ) as resp:
                        return resp.status == 200

                await poll(has_provider, TIMEOUT, f"replica {r.name} to load the provider")
            yield c
        finally:
            for r in replicas:
                await r.stop()


async def test_ten_requests_per_minute_admit_exactly_ten_of_thirty_across_two_replicas(
    pg_url: str, tmp_path: Path
) -> None:
    redis = redis_url()
    async with cluster(
        pg_url, tmp_path, redis, {"AIBRIDGE_DEFAULT_REQUESTS_PER_MINUTE": "10"}
    ) as c:
        a, b = c.replicas
        results = await asyncio.gather(*(c.chat(a if i % 2 else b) for i in range(30)))
        statuses = sorted(status for status, _ in results)
        assert statuses == [200] * 10 + [429] * 20, statuses
        codes = {body["error"]["code"] for status, body in results if status == 429}
        assert codes == {"request_rate_limited"}
        assert len(c.fake.generation_requests()) == 10
        refused = [
            'aibridge_limit_refusals_total{reason="request_rate_limited"}' in await c.metrics(r)
            for r in (a, b)
        ]
        assert refused == [True, True]


@asynccontextmanager
async def private_redis(tmp_path: Path) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """A redis-server of this test's own (it is stopped mid-test), on a free port."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        server,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:

        async def listening() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            writer.close()
            return True

        await poll(listening, TIMEOUT, "the private redis-server to listen")
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        if proc.returncode is None:
            proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), TIMEOUT)


async def test_two_concurrent_streams_at_a_time_across_replicas_then_redis_goes_away(
    pg_url: str, tmp_path: Path
) -> None:
    redis_url()  # the same requirement as the shared-Redis tests
    async with (
        private_redis(tmp_path) as (redis, server),
        cluster(pg_url, tmp_path, redis, {"AIBRIDGE_DEFAULT_MAX_CONCURRENT": "2"}) as c,
    ):
        a, b = c.replicas
        release = asyncio.Event()
        c.fake.enqueue(Scenario.stall(release), Scenario.stall(release))
        streams = [asyncio.create_task(c.chat(a if i % 2 else b, stream=True)) for i in range(6)]
        try:
            # Generation requests: the replicas' start-up model listings are requests too.
            async def two_upstream() -> bool:
                return len(c.fake.generation_requests()) == 2

            await poll(two_upstream, TIMEOUT, "two streams to reach the upstream")

            async def four_refused() -> bool:
                return sum(t.done() for t in streams) == 4

            await poll(four_refused, TIMEOUT, "four of the six streams to be refused")
            refused = [t.result() for t in streams if t.done()]
            assert [(s, body["error"]["code"]) for s, body in refused] == [
                (429, "concurrency_limited")
            ] * 4
            assert len(c.fake.generation_requests()) == 2
        finally:
            release.set()
        served = await asyncio.wait_for(asyncio.gather(*streams), TIMEOUT)
        assert sorted(status for status, _ in served) == [200] * 2 + [429] * 4

        # Redis goes away: requests keep being served, each replica on its own counters,
        # and /metrics says so.
        server.kill()
        await asyncio.wait_for(server.wait(), TIMEOUT)
        for r in (a, b):
            status, body = await c.chat(r)
            assert status == 200, body
            assert "aibridge_limiter_fallback 1.0" in await c.metrics(r)
