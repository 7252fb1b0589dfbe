"""Budgets and token rates end to end across two gateway replicas on one PostgreSQL
database and one Redis: prices set through the admin API so every cost is known to the
pico-dollar, requests spread over both replicas, each replica's clock a ``FakeClock``
moved (never slept) across a period or a rate window.

- a budget of a few cents: the request that crosses it completes, the next is refused on
  both replicas with the reset time in the message, and the next period admits again;
- the period's spend survives a Redis ``FLUSHALL`` (replicas running) and a restart of
  both replicas followed by another ``FLUSHALL`` (a private ``redis-server``: the shared
  test Redis is never flushed), and ``/api/v1/me`` shows the same ``spent_usd``;
- a token rate refused with the ``-tokens`` trio and ``Retry-After``, admitted again a
  minute later; concurrent requests whose reservations exceed the rate are not all
  admitted.

The replicas are in-process gateways (two ``running_services`` on real ports), so their
clocks can be moved. The recorder stamps interceptions with the real time, so the fake
clocks start at the real "now": recorded spend then falls in the clocks' period.
"""

from __future__ import annotations

import asyncio
import math
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from aibridge.clock import FakeClock
from aibridge.fakellm import FakeLLM, Scenario, Usage
from aibridge.testing.gateway import announced_admin_token, gateway
from aibridge.testing.redis import REDIS_ENV, REQUIRE_REDIS_ENV, delete_prefix, private_redis
from aibridge.testing.replicas import poll
from aibridge.testing.stack import TIMEOUT, Stack

pytestmark = pytest.mark.timeout(300)

# The known prices (USD per million tokens) set through the admin API, and the usage the
# fake upstream reports on every call: each call costs exactly 1000 x $10/M + 500 x $30/M
# = $0.025, and counts 1500 tokens (the cache reads count for neither the token rate nor,
# at a zero price, the cost).
PRICE = {
    "input_per_mtok": 10,
    "output_per_mtok": 30,
    "cache_read_per_mtok": 0,
    "cache_write_per_mtok": 0,
}
USAGE = Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=7000)
CALL_PUSD = 1000 * 10_000_000 + 500 * 30_000_000
CALL_TOKENS = 1500
MODEL = "gpt-5"


def shared_redis_url() -> str:
    """The shared test Redis (skip without one; fail instead when it is required)."""
    url = os.environ.get(REDIS_ENV)
    if not url:
        if os.environ.get(REQUIRE_REDIS_ENV) == "1":
            pytest.fail(f"{REQUIRE_REDIS_ENV}=1 but {REDIS_ENV} is not set")
        pytest.skip(f"the two-replica limiter tests need {REDIS_ENV}=redis://host:port/db")
    return url


def real_now() -> datetime:
    """The real time to whole seconds (the recorder stamps records with the real time)."""
    return datetime.now(UTC).replace(microsecond=0)


def next_midnight(now: datetime) -> datetime:
    """The start of the next UTC day (a day budget's reset)."""
    return datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)


def chat_body(max_tokens: int = 16, content: str = "hi") -> bytes:
    """A Chat Completions request body (bytes: its length is part of the estimate)."""
    return orjson.dumps(
        {
            "model": MODEL,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": content}],
        }
    )


@dataclass
class Answer:
    """A gateway's answer."""

    status: int
    headers: Mapping[str, str]
    body: Any

    @property
    def code(self) -> str | None:
        """The OpenAI error code (the refusal's error type), if any."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            code = self.body["error"].get("code")
            return str(code) if code is not None else None
        return None

    @property
    def message(self) -> str:
        """The error message."""
        return str(self.body["error"]["message"])


@dataclass
class Duo:
    """Two gateway replicas on one database and one Redis, with their fake clocks."""

    replicas: list[Stack]
    clocks: list[FakeClock]
    fake: FakeLLM
    admin_token: str
    user_token: str

    def advance(self, seconds: float) -> None:
        """Move every replica's clock (they stay in sync, as NTP keeps real ones)."""
        for clock in self.clocks:
            clock.advance(seconds)

    def now(self) -> datetime:
        """The replicas' time."""
        return self.clocks[0].now()

    async def chat(self, replica: int, body: bytes | None = None) -> Answer:
        """A Chat Completions request as the member on replica ``replica``."""
        s = self.replicas[replica]
        headers = {"Authorization": f"Bearer {self.user_token}", "Content-Type": "application/json"}
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.post(
                "/oai/v1/chat/completions", data=body or chat_body(), headers=headers
            )
            raw = await resp.read()
        parsed = orjson.loads(raw) if raw.startswith(b"{") else raw
        return Answer(resp.status, resp.headers, parsed)

    async def me(self, replica: int) -> dict[str, Any]:
        """``GET /api/v1/me`` as the member."""
        s = self.replicas[replica]
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.get(
                "/api/v1/me", headers={"Authorization": f"Bearer {self.user_token}"}
            )
            body: dict[str, Any] = await resp.json()
        assert resp.status == 200, body
        return body

    async def metrics(self, replica: int) -> str:
        """A replica's /metrics."""
        async with asyncio.timeout(TIMEOUT):
            resp = await self.replicas[replica].client.get("/metrics")
            return await resp.text()

    async def flush_records(self) -> None:
        """Wait until both replicas' recorders wrote what they queued."""
        for s in self.replicas:
            await s.flush_records()


async def admin_call(
    s: Stack, token: str, method: str, path: str, body: Any, expect: tuple[int, ...] = (201,)
) -> Any:
    """An admin API call with an expected status; the parsed answer."""
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {token}"}
        )
        data = await resp.json()
    assert resp.status in expect, (resp.status, data)
    return data


@asynccontextmanager
async def replicas(
    pg_url: str,
    tmp_path: Path,
    fake: FakeLLM,
    settings: Mapping[str, Any],
    start: datetime,
    *,
    admin_token: str | None = None,
    user_token: str = "",
    generation: int = 0,
) -> AsyncIterator[Duo]:
    """Start two gateways on ``pg_url`` with ``settings`` and clocks at ``start``. The
    first start (no ``admin_token``) creates the member ``dev``, the provider ``oai`` on
    the fake upstream and the known price; a restart reuses them."""
    clocks = [FakeClock(now=start), FakeClock(now=start)]
    announced: list[str] = []
    async with AsyncExitStack() as stack:
        stacks: list[Stack] = []
        for index, clock in enumerate(clocks):
            data_dir = tmp_path / f"{'ab'[index]}{generation}"
            data_dir.mkdir(parents=True, exist_ok=True)
            client, services = await stack.enter_async_context(
                gateway(
                    pg_url,
                    data_dir,
                    announced=announced,
                    settings_overrides=settings,
                    clock=clock,
                )
            )
            stacks.append(Stack(client, services, fake, admin_token or "", user_token))
        a = stacks[0]
        if admin_token is None:
            admin_token = announced_admin_token(announced)
            for s in stacks:
                s.admin_token = admin_token
            await admin_call(a, admin_token, "POST", "/api/v1/users", {"username": "dev"})
            key = await admin_call(a, admin_token, "POST", "/api/v1/users/dev/keys", {"name": "t"})
            user_token = key["token"]
            for s in stacks:
                s.user_token = user_token
            await a.add_provider("oai", "openai")
            await admin_call(
                a, admin_token, "PUT", f"/api/v1/prices/openai/{MODEL}", PRICE, (200, 201)
            )
        for s in stacks:
            await s.wait_for_provider("oai", lambda p: p is not None)
            book = s.services.prices

            async def priced(book: Any = book) -> bool:
                price = book.table.lookup("openai", MODEL)
                return price is not None and price.input_micros == 10_000_000

            await poll(priced, TIMEOUT, "the known price on every replica")
        yield Duo(stacks, clocks, fake, admin_token, user_token)


@asynccontextmanager
async def fake_upstream() -> AsyncIterator[FakeLLM]:
    """The fake upstream answering every call with :data:`USAGE`."""
    async with FakeLLM(default=Scenario.text_reply(usage=USAGE)).serve() as fake:
        yield fake


def redis_settings(url: str, prefix: str, **more: Any) -> dict[str, Any]:
    """Gateway settings sharing the counters in Redis under ``prefix``."""
    return {"redis_url": url, "redis_prefix": prefix, **more}


@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own."""
    yield f"aibridge-test:{uuid.uuid4().hex[:12]}:"


# ---------------------------------------------------------------------------------------
# Budgets
# ---------------------------------------------------------------------------------------


async def test_a_budget_across_two_replicas_crossing_completes_next_refused_new_period_admits(
    pg_url: str, tmp_path: Path, prefix: str
) -> None:
    url = shared_redis_url()
    start = real_now()
    # $0.06 a day; each call costs $0.025: the third call crosses the budget.
    settings = redis_settings(url, prefix, default_budget="0.06/day")
    try:
        async with fake_upstream() as fake, replicas(pg_url, tmp_path, fake, settings, start) as d:
            for replica in (0, 1, 0):
                answer = await d.chat(replica)
                assert answer.status == 200, answer.body
            # The crossing call (spend $0.05 → $0.075) completed: three went upstream.
            assert len(fake.generation_requests()) == 3

            midnight = next_midnight(start)
            retry = math.ceil((midnight - d.now()).total_seconds())
            for replica in (1, 0):
                refused = await d.chat(replica)
                assert (refused.status, refused.code) == (429, "budget_exceeded"), refused.body
                assert refused.body["error"]["type"] == "insufficient_quota"
                # The spend both replicas share, the budget and when it resets.
                assert refused.message == (
                    f"Budget exceeded: user dev has spent $0.075 of its $0.06 daily budget; "
                    f"it resets at {midnight.isoformat(timespec='seconds')}."
                )
                assert refused.headers["Retry-After"] == str(retry)
                assert refused.headers["x-should-retry"] == "false"
            assert len(fake.generation_requests()) == 3

            # The recorded cost is exactly what the limiter counted.
            await d.flush_records()
            budget = (await d.me(1))["budget"]
            assert (budget["spent_usd"], budget["remaining_usd"]) == (0.075, 0)
            assert CALL_PUSD * 3 == 75_000_000_000
            text = await d.metrics(0) + await d.metrics(1)
            assert text.count('aibridge_limit_refusals_total{reason="budget_exceeded"} 1.0') == 2

            # One second before midnight: still refused; at midnight a new period.
            d.advance(retry - 1)
            assert (await d.chat(1)).code == "budget_exceeded"
            d.advance(1)
            for replica in (1, 0):
                answer = await d.chat(replica)
                assert answer.status == 200, answer.body
            assert len(fake.generation_requests()) == 5
    finally:
        await delete_prefix(url, prefix)


async def test_restart_of_both_replicas_and_redis_flushall_keep_the_periods_spend(
    pg_url: str, tmp_path: Path, prefix: str
) -> None:
    shared_redis_url()  # the same requirement as the shared-Redis tests
    start = real_now()
    midnight = next_midnight(start)
    spent = (
        f"Budget exceeded: user dev has spent $0.075 of its $0.06 daily budget; "
        f"it resets at {midnight.isoformat(timespec='seconds')}."
    )
    async with private_redis() as server, fake_upstream() as fake:
        settings = redis_settings(
            server.url,
            prefix,
            default_budget="0.06/day",
            # Only the start rebuilds the spend from the records in this test.
            budget_reconcile_interval=3600,
        )
        flusher = aioredis.Redis.from_url(server.url)
        try:
            async with replicas(pg_url, tmp_path, fake, settings, start) as d:
                for replica in (0, 1, 0):
                    assert (await d.chat(replica)).status == 200
                assert (await d.chat(1)).message == spent
                await d.flush_records()
                before = (await d.me(0))["budget"]
                assert before["spent_usd"] == 0.075
                # Redis forgets everything while both replicas run: the spend each
                # replica last saw seeds the counter again.
                assert await flusher.flushall() is True
                assert await flusher.dbsize() == 0
                for replica in (0, 1):
                    refused = await d.chat(replica)
                    assert refused.message == spent, refused.body
                admin_token, user_token = d.admin_token, d.user_token
            assert len(fake.generation_requests()) == 3

            # Both replicas stop (their recorders wrote everything), Redis is flushed
            # again, both start from nothing but the database.
            assert await flusher.flushall() is True
            async with replicas(
                pg_url,
                tmp_path,
                fake,
                settings,
                start,
                admin_token=admin_token,
                user_token=user_token,
                generation=1,
            ) as d:
                for replica in (1, 0):
                    refused = await d.chat(replica)
                    assert (refused.status, refused.code) == (429, "budget_exceeded")
                    assert refused.message == spent
                    assert (await d.me(replica))["budget"] == before
                assert len(fake.generation_requests()) == 3
                # The new period still starts at zero.
                d.advance((midnight - start).total_seconds())
                assert (await d.chat(0)).status == 200
        finally:
            await flusher.aclose()


# ---------------------------------------------------------------------------------------
# Token rate
# ---------------------------------------------------------------------------------------


def estimate(body: bytes, max_tokens: int) -> int:
    """What an admission reserves: a token per 4 bytes of body plus ``max_tokens``."""
    return math.ceil(len(body) / 4) + max_tokens


async def test_a_token_rate_across_two_replicas_refuses_with_the_tokens_trio_until_a_minute_passed(
    pg_url: str, tmp_path: Path, prefix: str
) -> None:
    url = shared_redis_url()
    settings = redis_settings(url, prefix, default_tokens_per_minute=4000)
    body = chat_body()
    reserve = estimate(body, 16)
    try:
        async with (
            fake_upstream() as fake,
            replicas(pg_url, tmp_path, fake, settings, real_now()) as d,
        ):
            # Each call settles 1500 tokens (its 7000 cache reads are not counted):
            # the admitted responses tell how many are left after this one's estimate.
            remaining = []
            for replica in (0, 1, 0):
                answer = await d.chat(replica, body)
                assert answer.status == 200, answer.body
                assert answer.headers["x-ratelimit-limit-tokens"] == "4000"
                remaining.append(int(answer.headers["x-ratelimit-remaining-tokens"]))
            assert remaining == [4000 - reserve, 2500 - reserve, 1000 - reserve]

            # 4500 settled in this second: refused on both replicas until that second
            # has left the 60 s window. Retry-After says at most the window (the SDKs
            # honour up to 60 s), so a retry then lands in that second's last instant.
            for replica in (1, 0):
                refused = await d.chat(replica, body)
                assert (refused.status, refused.code) == (429, "token_rate_limited")
                assert refused.body["error"]["type"] == "rate_limit_exceeded"
                assert refused.headers["Retry-After"] == "60"
                assert refused.headers["x-ratelimit-limit-tokens"] == "4000"
                assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
                assert refused.headers["x-ratelimit-reset-tokens"] == "1m0s"
                assert "x-should-retry" not in refused.headers
                assert refused.message.startswith(
                    "Token rate limit exceeded: user dev may use 4000 tokens per minute "
                    "(tokens_per_minute) and has 4500 used or reserved in the last minute; "
                    "it resets in 60s"
                )
            d.advance(60)
            refused = await d.chat(1, body)
            assert (refused.code, refused.headers["Retry-After"]) == ("token_rate_limited", "1")
            assert len(fake.generation_requests()) == 3
            d.advance(1)
            for replica in (1, 0):
                answer = await d.chat(replica, body)
                assert answer.status == 200, answer.body
            assert len(fake.generation_requests()) == 5
            text = await d.metrics(0) + await d.metrics(1)
            assert 'aibridge_limit_refusals_total{reason="token_rate_limited"} 1.0' in text
            assert 'aibridge_limit_refusals_total{reason="token_rate_limited"} 2.0' in text
    finally:
        await delete_prefix(url, prefix)


async def test_concurrent_requests_whose_reservations_exceed_the_token_rate_are_not_all_admitted(
    pg_url: str, tmp_path: Path, prefix: str
) -> None:
    url = shared_redis_url()
    limit = 1000
    settings = redis_settings(url, prefix, default_tokens_per_minute=limit)
    body = chat_body(max_tokens=300)
    reserve = estimate(body, 300)
    # Admitted while what is reserved stays under the limit: 0, r, 2r, … < limit.
    admitted = math.ceil(limit / reserve)
    assert 1 < admitted < 8
    try:
        async with (
            fake_upstream() as fake,
            replicas(pg_url, tmp_path, fake, settings, real_now()) as d,
        ):
            release = asyncio.Event()
            # The admitted calls stall upstream: nothing settles while the rest arrive.
            fake.enqueue(*(Scenario.stall(release, usage=USAGE) for _ in range(8)))
            calls = [asyncio.create_task(d.chat(i % 2, body)) for i in range(8)]
            try:
                await asyncio.wait_for(fake.wait_for_requests(admitted), TIMEOUT)

                async def rest_refused() -> bool:
                    return sum(t.done() for t in calls) == 8 - admitted

                await poll(rest_refused, TIMEOUT, "the requests beyond the reservations")
                refused = [t.result() for t in calls if t.done()]
                assert [(a.status, a.code) for a in refused] == [(429, "token_rate_limited")] * (
                    8 - admitted
                )
                assert len(fake.generation_requests()) == admitted
            finally:
                release.set()
            answers = await asyncio.wait_for(asyncio.gather(*calls), TIMEOUT)
            assert sorted(a.status for a in answers) == [200] * admitted + [429] * (8 - admitted)
            # Settled: each admitted call counts its 1500 tokens, not its estimate.
            refused_after = await d.chat(0, body)
            assert refused_after.message.startswith(
                f"Token rate limit exceeded: user dev may use {limit} tokens per minute "
                f"(tokens_per_minute) and has {admitted * CALL_TOKENS} used or reserved"
            )
    finally:
        await delete_prefix(url, prefix)
