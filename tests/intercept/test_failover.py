"""The one failover loop (``send_with_failover``) against a real upstream on loopback.

The upstream answers per credential, so each test scripts which pooled key is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry

from aibridge.clock import FakeClock
from aibridge.intercept.failover import client_timeout, send_with_failover
from aibridge.providers.base import Provider
from aibridge.providers.keyring import KeyRingMetrics, KeysExhausted
from aibridge.testing.providers import provider_record

TIMEOUT = 60.0
SECRETS = {
    "a": "sk-aaaaaaaaaaaaaaaaaaaa-key-A-0001",
    "b": "sk-bbbbbbbbbbbbbbbbbbbb-key-B-0002",
    "c": "sk-cccccccccccccccccccc-key-C-0003",
}
BY_SECRET = {secret: name for name, secret in SECRETS.items()}


class Upstream:
    """Answers ``statuses[key]`` (200 by default) and records the keys it saw, in order.

    ``hold`` parks every request made with key A until ``release`` is set.
    """

    def __init__(self, statuses: dict[str, int], retry_after: str | None = None) -> None:
        self.statuses = statuses
        self.retry_after = retry_after
        self.seen: list[str] = []
        self.hold: int = 0
        self.held = 0
        self.all_held = asyncio.Event()
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        key = BY_SECRET[request.headers["Authorization"].removeprefix("Bearer ")]
        self.seen.append(key)
        if key == "a" and self.hold:
            self.held += 1
            if self.held == self.hold:
                self.all_held.set()
            await self.release.wait()
        status = self.statuses.get(key, 200)
        headers = {"Retry-After": self.retry_after} if self.retry_after and status == 429 else {}
        return web.json_response({"key": key}, status=status, headers=headers)


@pytest.fixture
async def upstream_server() -> AsyncIterator[tuple[Upstream, TestServer]]:
    upstream = Upstream({})
    app = web.Application()
    app.router.add_post("/v1/chat/completions", upstream.handle)
    server = TestServer(app)
    await server.start_server()
    try:
        yield upstream, server
    finally:
        await server.close()


def make_provider(server: TestServer, clock: FakeClock, registry: CollectorRegistry) -> Provider:
    record = provider_record(
        "openai", base_url=str(server.make_url("/v1")), keys=[SECRETS[k] for k in "abc"]
    )
    return Provider(record, clock=clock, keyring_metrics=KeyRingMetrics(registry))


async def send(
    session: aiohttp.ClientSession, provider: Provider
) -> tuple[aiohttp.ClientResponse, str | None]:
    url = provider.upstream_url("/chat/completions")
    response, key = await send_with_failover(
        session,
        provider,
        provider.keys.walker(),
        "POST",
        url,
        body=b"{}",
        headers=CIMultiDict(),
        client_timeout=client_timeout(TIMEOUT, False),
        auto_decompress=True,
    )
    return response, key.key_id if key is not None else None


def sample(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name, {"provider": "openai"})
    return 0.0 if value is None else value


def key_name(provider: Provider, key_id: str | None) -> str:
    (secret,) = [k.secret for k in provider.keys.keys if k.key_id == key_id]
    return BY_SECRET[secret]


async def test_a_refused_key_fails_over_and_the_next_request_skips_it(
    upstream_server: tuple[Upstream, TestServer],
) -> None:
    upstream, server = upstream_server
    upstream.statuses = {"a": 429}
    registry = CollectorRegistry()
    provider = make_provider(server, FakeClock(), registry)
    # One connection: a refused response that were not released would block the next try.
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session,
        asyncio.timeout(TIMEOUT),
    ):
        response, key_id = await send(session, provider)
        assert (response.status, key_name(provider, key_id)) == (200, "b")
        assert await response.json() == {"key": "b"}
        response.release()
        # A second request goes straight to B while A cools (reference: k0, k1, k1).
        response, _ = await send(session, provider)
        response.release()
    assert upstream.seen == ["a", "b", "b"]
    assert sample(registry, "aibridge_key_pool_failovers_total") == 1
    assert sample(registry, "aibridge_key_pool_failover_attempts_sum") == 3
    assert sample(registry, "aibridge_key_pool_failover_attempts_count") == 2


@pytest.mark.parametrize("status", [500, 503, 403, 400])
async def test_statuses_that_are_not_key_failures_are_not_retried(
    status: int, upstream_server: tuple[Upstream, TestServer]
) -> None:
    upstream, server = upstream_server
    upstream.statuses = {"a": status}
    provider = make_provider(server, FakeClock(), CollectorRegistry())
    async with aiohttp.ClientSession() as session, asyncio.timeout(TIMEOUT):
        response, key_id = await send(session, provider)
        assert (response.status, key_name(provider, key_id)) == (status, "a")
        # Handed back unread, for the relay.
        assert await response.json() == {"key": "a"}
        response.release()
    assert upstream.seen == ["a"]


async def test_every_key_is_tried_once_then_the_pool_is_exhausted(
    upstream_server: tuple[Upstream, TestServer],
) -> None:
    upstream, server = upstream_server
    upstream.statuses = {"a": 429, "b": 401, "c": 429}
    upstream.retry_after = "20"
    registry = CollectorRegistry()
    provider = make_provider(server, FakeClock(), registry)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session,
        asyncio.timeout(TIMEOUT),
    ):
        with pytest.raises(KeysExhausted) as info:
            await send(session, provider)
    assert upstream.seen == ["a", "b", "c"]
    assert info.value.kind == "rate_limited"
    assert info.value.retry_after == pytest.approx(20.0)
    assert sample(registry, "aibridge_key_pool_failover_attempts_sum") == 3


async def test_a_transport_error_stops_the_walk(
    upstream_server: tuple[Upstream, TestServer],
) -> None:
    _, server = upstream_server
    provider = make_provider(server, FakeClock(), CollectorRegistry())
    await server.close()  # nothing listens there any more
    async with aiohttp.ClientSession() as session, asyncio.timeout(TIMEOUT):
        with pytest.raises(aiohttp.ClientConnectionError):
            await send(session, provider)
    assert provider.keys.state_counts() == {"valid": 3, "temporary": 0}


async def test_concurrent_requests_fail_over_together(
    upstream_server: tuple[Upstream, TestServer],
) -> None:
    upstream, server = upstream_server
    upstream.statuses = {"a": 429}
    upstream.retry_after = "15"
    upstream.hold = 10  # all ten are in flight on A before A answers 429
    registry = CollectorRegistry()
    provider = make_provider(server, FakeClock(), registry)
    async with aiohttp.ClientSession() as session, asyncio.timeout(TIMEOUT):
        sends = [asyncio.ensure_future(send(session, provider)) for _ in range(10)]
        await upstream.all_held.wait()
        upstream.release.set()
        results = await asyncio.gather(*sends)
        for response, _ in results:
            response.release()
    assert [key_name(provider, key_id) for _, key_id in results] == ["b"] * 10
    assert upstream.seen.count("a") == 10 and upstream.seen.count("b") == 10
    assert provider.keys.cooldown_remaining(provider.keys.keys[0]) == pytest.approx(15.0)
    # Ten 429s for one key are one transition, not ten.
    transitions = registry.get_sample_value(
        "aibridge_key_pool_state_transitions_total",
        {"provider": "openai", "reason": "rate_limited"},
    )
    assert transitions == 1
    # A fresh request after the storm skips A.
    assert key_name(provider, provider.keys.acquire().key_id) == "b"


def test_upstream_timeouts_are_shared_between_requests() -> None:
    # Immutable, so one object per (seconds, stream): no allocation per request.
    assert client_timeout(30.0, True) is client_timeout(30.0, True)
    assert client_timeout(30.0, True) == aiohttp.ClientTimeout(total=None, sock_read=30.0)
    assert client_timeout(30.0, False) == aiohttp.ClientTimeout(total=30.0)
