"""Resilience through the real gateway: client disconnects, upstream stalls, key-pool
failover, the circuit breaker, a database outage during a burst, and the HTTP edges.

Everything runs over loopback HTTP against the fake upstream; time-dependent behaviour
(key cooldowns, breaker timeouts) uses a :class:`~aibridge.clock.FakeClock`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from aibridge.clock import FakeClock
from aibridge.fakellm import Scenario
from aibridge.providers.keyring import MSG_UNAUTHORIZED
from aibridge.secrets_mask import mask_secret
from aibridge.store.models import Interception, TokenUsage, UserPrompt
from aibridge.testing.outage import pg_outage
from aibridge.testing.stack import TIMEOUT, Stack, stack

# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Api:
    """One bridged API: provider type, path under the provider and a minimal body."""

    name: str
    ptype: str
    path: str
    body: dict[str, Any]

    def url(self, s: Stack, provider: str) -> str:
        return f"{s.base}/{provider}{self.path}"

    def headers(self, token: str) -> dict[str, str]:
        if self.ptype == "anthropic":
            return {"x-api-key": token, "anthropic-version": "2023-06-01"}
        return {"Authorization": f"Bearer {token}"}

    def request(self, *, stream: bool) -> dict[str, Any]:
        return {**self.body, "stream": stream}

    async def send(
        self, s: Stack, provider: str, *, stream: bool
    ) -> tuple[int, dict[str, str], bytes]:
        """One request to ``provider`` with the member's key, read whole (bounded)."""
        async with aiohttp.ClientSession() as session:
            url, body = self.url(s, provider), self.request(stream=stream)
            return await post(session, url, body, self.headers(s.user_token))


MESSAGES = Api(
    "messages",
    "anthropic",
    "/v1/messages",
    {"model": "claude-test", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]},
)
CHAT = Api(
    "chat",
    "openai",
    "/v1/chat/completions",
    {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
)
RESPONSES = Api("responses", "openai", "/v1/responses", {"model": "gpt-test", "input": "hi"})
APIS = [MESSAGES, CHAT, RESPONSES]


def sse_events(raw: bytes) -> list[tuple[str | None, bytes]]:
    """(event name, data) of every SSE event in ``raw``."""
    events: list[tuple[str | None, bytes]] = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        name: str | None = None
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].strip())
        if name is not None or data:
            events.append((name, b"\n".join(data)))
    return events


async def read_event(resp: aiohttp.ClientResponse) -> bytes:
    """Read one SSE event (through its blank line) from a streaming response."""
    lines: list[bytes] = []
    while True:
        line = await resp.content.readline()
        if not line:
            raise AssertionError(f"stream ended before a complete event: {lines!r}")
        if line in (b"\n", b"\r\n"):
            return b"".join(lines)
        lines.append(line)


async def rows(s: Stack, provider: str) -> list[Interception]:
    """The provider's interceptions once everything queued is written, oldest first."""
    await s.flush_records()
    async with s.services.sessions() as session:
        result = await session.scalars(
            select(Interception)
            .where(Interception.provider_name == provider)
            .order_by(Interception.started_at)
        )
        return list(result)


def metric(s: Stack, name: str, **labels: str) -> float:
    """A sample of the gateway's registry (0 when the series does not exist)."""
    value = s.services.metrics.registry.get_sample_value(name, labels or None)
    return value if value is not None else 0.0


def credentials(s: Stack, start: int) -> list[str | None]:
    """Upstream credentials of the fake's requests from index ``start`` on."""
    return [r.credential() for r in s.fake.requests[start:]]


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
) -> tuple[int, dict[str, str], bytes]:
    """POST and read the whole answer (bounded)."""
    async with asyncio.timeout(TIMEOUT), session.post(url, json=body, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


# --------------------------------------------------------------------------- 1. disconnect


@pytest.mark.parametrize("api", APIS, ids=lambda a: a.name)
async def test_client_disconnect_cancels_upstream_at_once(
    api: Api, sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("p", api.ptype)
        stall = Scenario.stall()  # no release: silent until the gateway goes away
        s.fake.enqueue(stall)
        me = asyncio.current_task()
        baseline = asyncio.all_tasks()
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(TIMEOUT):
                resp = await session.post(
                    api.url(s, "p"),
                    json=api.request(stream=True),
                    headers=api.headers(s.user_token),
                )
                assert resp.status == 200, await resp.text()
                first = await read_event(resp)
                assert b"data:" in first
                await stall.stalled.wait()
            assert not s.fake.disconnected.is_set()
            closed_at = loop.time()
            resp.close()  # drop the TCP connection mid-stream
            async with asyncio.timeout(2.0):
                await s.fake.disconnected.wait()
            assert loop.time() - closed_at < 2.0
        assert s.fake.requests[-1].disconnected
        # Every task the request created (gateway handler, upstream handler) finishes.
        extra = asyncio.all_tasks() - baseline - {me}
        if extra:
            _, pending = await asyncio.wait(extra, timeout=TIMEOUT)
            assert not pending, [t.get_name() for t in pending]
        leaked = {t for t in asyncio.all_tasks() - baseline - {me} if not t.done()}
        assert not leaked, [t.get_name() for t in leaked]

        [row] = await rows(s, "p")
        assert row.error_type == "client_disconnected"
        assert row.ended_at is not None
        assert metric(s, "aibridge_interceptions_inflight", provider="p", api=api.name) == 0
        assert (
            metric(
                s,
                "aibridge_interceptions_total",
                provider="p",
                api=api.name,
                outcome="client_disconnected",
            )
            == 1
        )


@pytest.mark.parametrize("api", APIS, ids=lambda a: a.name)
async def test_client_disconnect_keeps_the_usage_seen_before_it(
    api: Api, sqlite_url: str, tmp_path: Path
) -> None:
    # Anthropic reports the input tokens in message_start: billed even if the client
    # leaves right after. Chat and Responses report usage only at the end: nothing yet.
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("p", api.ptype)
        stall = Scenario.stall()
        s.fake.enqueue(stall)
        async with aiohttp.ClientSession() as session, asyncio.timeout(TIMEOUT):
            resp = await session.post(
                api.url(s, "p"), json=api.request(stream=True), headers=api.headers(s.user_token)
            )
            assert resp.status == 200, await resp.text()
            await read_event(resp)
            await stall.stalled.wait()
            resp.close()
            await s.fake.disconnected.wait()
        [row] = await rows(s, "p")
        assert row.error_type == "client_disconnected"
        async with s.services.sessions() as db:
            usage = list(
                await db.scalars(select(TokenUsage).where(TokenUsage.interception_id == row.id))
            )
        expected = [stall.usage.input_tokens] if api is MESSAGES else []
        assert [u.input_tokens for u in usage] == expected


# --------------------------------------------------------------------------- 2. stalls


async def post_to_stalled_upstream(
    s: Stack, api: Api, *, stream: bool
) -> tuple[Scenario, int, dict[str, str], bytes]:
    """Add provider "p" with a 0.5 s upstream timeout, make its upstream stall, POST one
    request to it and release the stall once the gateway answered; returns the stall
    scenario and the (status, headers, body) the client got."""
    await s.add_provider("p", api.ptype, settings={"upstream_timeout_seconds": 0.5})
    release = asyncio.Event()
    stall = Scenario.stall(release=release)
    s.fake.enqueue(stall)
    try:
        status, headers, raw = await api.send(s, "p", stream=stream)
    finally:
        release.set()
    return stall, status, headers, raw


@pytest.mark.parametrize("api", APIS, ids=lambda a: a.name)
async def test_stalled_stream_times_out_with_provider_error_event(
    api: Api, sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        stall, status, _, raw = await post_to_stalled_upstream(s, api, stream=True)
        assert status == 200
        assert stall.stalled.is_set()
        events = sse_events(raw)
        assert len(events) >= 2  # the events before the stall, then the error
        if api is CHAT:
            assert events[-1] == (None, b"[DONE]")
            err = orjson.loads(events[-2][1])["error"]
            assert err["code"] == "timeout_error"
            assert "stalled" in err["message"]
        elif api is MESSAGES:
            name, data = events[-1]
            assert name == "error"
            assert orjson.loads(data)["error"]["type"] == "timeout_error"
        else:
            name, data = events[-1]
            assert name == "error"
            body = orjson.loads(data)
            assert body["type"] == "error" and body["code"] == "timeout_error"
        [row] = await rows(s, "p")
        assert row.error_type == "timeout"
        assert row.ended_at is not None


@pytest.mark.parametrize("api", [MESSAGES, CHAT], ids=lambda a: a.name)
async def test_stalled_blocking_request_gets_504(api: Api, sqlite_url: str, tmp_path: Path) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        _, status, headers, raw = await post_to_stalled_upstream(s, api, stream=False)
        assert status == 504
        assert headers["Content-Type"].startswith("application/json")
        body = orjson.loads(raw)
        if api is MESSAGES:
            assert body["type"] == "error"
            assert "timed out" in body["error"]["message"]
        else:
            assert body["error"]["type"] == "server_error"
            assert "timed out" in body["error"]["message"]
        [row] = await rows(s, "p")
        assert row.error_type == "timeout"


# --------------------------------------------------------------------------- 3. key failover

K0, K1 = "sk-ant-pool-key-zero-AAAA", "sk-ant-pool-key-one-BBBB"


async def test_a_rate_limited_key_cools_down_while_the_next_serves_and_both_cooling_is_a_429(
    sqlite_url: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    async with stack(sqlite_url, tmp_path, clock=clock) as s:
        await s.add_provider("pool", "anthropic", keys=[K0, K1])
        url, headers = MESSAGES.url(s, "pool"), MESSAGES.headers(s.user_token)
        s.fake.key_scenarios[K0] = Scenario.http_error(429, retry_after="30")
        async with aiohttp.ClientSession() as session:
            start = len(s.fake.requests)
            status, _, raw = await post(session, url, MESSAGES.request(stream=False), headers)
            assert status == 200, raw
            assert credentials(s, start) == [K0, K1]

            # k0 is cooling: the next request goes straight to k1 (streaming this time).
            start = len(s.fake.requests)
            status, _, raw = await post(session, url, MESSAGES.request(stream=True), headers)
            assert status == 200, raw
            assert sse_events(raw)[-1][0] == "message_stop"
            assert credentials(s, start) == [K1]

            # Both keys rate-limited: 429 with the soonest recovery.
            s.fake.key_scenarios[K1] = Scenario.http_error(429, retry_after="20")
            start = len(s.fake.requests)
            status, resp_headers, raw = await post(
                session, url, MESSAGES.request(stream=False), headers
            )
            assert credentials(s, start) == [K1]  # k0 still cooling, never tried
            assert status == 429
            assert resp_headers["Retry-After"] == "20"
            assert orjson.loads(raw) == {
                "type": "error",
                "error": {
                    "type": "rate_limit_error",
                    "message": "all configured keys are rate-limited (retry after 20s)",
                },
            }

            # Once k0's cooldown is over, traffic returns to the primary.
            del s.fake.key_scenarios[K0]
            clock.advance(30)
            start = len(s.fake.requests)
            status, _, raw = await post(session, url, MESSAGES.request(stream=False), headers)
            assert status == 200, raw
            assert credentials(s, start) == [K0]

        recorded = await rows(s, "pool")
        assert [r.credential_hint for r in recorded] == [
            mask_secret(K1),
            mask_secret(K1),
            mask_secret(K1),
            mask_secret(K0),
        ]
        assert mask_secret(K1) != mask_secret(K0)
        assert [r.error_type for r in recorded] == [None, None, "rate_limited", None]
        assert metric(s, "aibridge_key_pool_failovers_total", provider="pool") == 1
        assert (
            metric(
                s, "aibridge_key_pool_exhaustions_total", provider="pool", outcome="rate_limited"
            )
            == 1
        )


async def post_with_every_key_refused(
    s: Stack, api: Api, provider: str, keys: list[str], stream: bool
) -> tuple[int, dict[str, str], bytes]:
    """Make the upstream answer 401 to each of ``keys``, send one ``api`` request to
    ``provider`` and check each key was tried once, in order; (status, headers, body)."""
    for key in keys:
        s.fake.key_scenarios[key] = Scenario.http_error(401)
    start = len(s.fake.requests)
    answer = await api.send(s, provider, stream=stream)
    assert credentials(s, start) == keys
    return answer


async def test_all_keys_unauthorized_is_502(sqlite_url: str, tmp_path: Path) -> None:
    a0, a1 = "sk-oai-auth-key-zero-CCCC", "sk-oai-auth-key-one-DDDD"
    async with stack(sqlite_url, tmp_path, clock=FakeClock()) as s:
        await s.add_provider("auth", "openai", keys=[a0, a1])
        status, headers, raw = await post_with_every_key_refused(s, CHAT, "auth", [a0, a1], False)
        assert status == 502
        assert "Retry-After" not in headers
        err = orjson.loads(raw)["error"]
        assert err["message"] == MSG_UNAUTHORIZED
        assert err["message"] == (
            "all configured keys failed authentication. Contact your Administrator"
        )
        assert err["type"] == "server_error"
        [row] = await rows(s, "auth")
        assert row.error_type == "unauthorized"
        assert row.error_message == MSG_UNAUTHORIZED


@pytest.mark.parametrize("api", [MESSAGES, CHAT], ids=lambda a: a.name)
async def test_rejected_keys_without_cooldown_are_not_called_rate_limited(
    api: Api, sqlite_url: str, tmp_path: Path
) -> None:
    # With key_cooldown_seconds 0 a rejected key is usable again at once, so the walk
    # ends with the reference's 429 + Retry-After 0; the message and the record must
    # still say that the provider rejected the keys.
    r0, r1 = f"sk-{api.name}-rejected-zero-GGGG", f"sk-{api.name}-rejected-one-HHHH"
    async with stack(sqlite_url, tmp_path, clock=FakeClock()) as s:
        await s.add_provider("rej", api.ptype, keys=[r0, r1], settings={"key_cooldown_seconds": 0})
        status, headers, raw = await post_with_every_key_refused(s, api, "rej", [r0, r1], True)
        assert status == 429
        assert headers["Retry-After"] == "0"
        body = orjson.loads(raw)
        message = "all configured keys are unavailable: 2 failed authentication (retry after 0s)"
        assert body["error"]["message"] == message
        [row] = await rows(s, "rej")
        assert (row.error_type, row.error_message) == ("unauthorized", message)


@pytest.mark.parametrize("ptype", ["anthropic", "openai"])
async def test_passthrough_fails_over_between_keys_and_is_not_recorded(
    ptype: str, sqlite_url: str, tmp_path: Path
) -> None:
    p0, p1 = f"sk-{ptype}-pt-key-zero-EEEE", f"sk-{ptype}-pt-key-one-FFFF"
    api = MESSAGES if ptype == "anthropic" else CHAT
    async with stack(sqlite_url, tmp_path, clock=FakeClock()) as s:
        await s.add_provider("pt", ptype, keys=[p0, p1])
        s.fake.key_scenarios[p0] = Scenario.http_error(429, retry_after="40")
        url = f"{s.base}/pt/v1/models"
        headers = api.headers(s.user_token)
        async with aiohttp.ClientSession() as session:
            start = len(s.fake.requests)
            async with asyncio.timeout(TIMEOUT), session.get(url, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["data"]
            assert credentials(s, start) == [p0, p1]
            assert [r.path for r in s.fake.requests[start:]] == ["/v1/models", "/v1/models"]

            start = len(s.fake.requests)
            async with asyncio.timeout(TIMEOUT), session.get(url, headers=headers) as resp:
                assert resp.status == 200
            assert credentials(s, start) == [p1]

            s.fake.key_scenarios[p1] = Scenario.http_error(429, retry_after="15")
            start = len(s.fake.requests)
            async with asyncio.timeout(TIMEOUT), session.get(url, headers=headers) as resp:
                assert resp.status == 429
                assert resp.headers["Retry-After"] == "15"
                raw = await resp.read()
            assert credentials(s, start) == [p1]
            assert b"all configured keys are rate-limited (retry after 15s)" in raw
        # Passthrough is not recorded.
        assert await rows(s, "pt") == []


# --------------------------------------------------------------------------- 4. breaker


async def test_circuit_breaker_opens_rejects_and_recovers(sqlite_url: str, tmp_path: Path) -> None:
    clock = FakeClock()
    breaker = {
        "enabled": True,
        "failure_threshold": 2,
        "interval_seconds": 60,
        "timeout_seconds": 30,
        "max_requests": 1,
    }
    async with stack(sqlite_url, tmp_path, clock=clock) as s:
        await s.add_provider("cb", "openai", settings={"circuit_breaker": breaker})
        url, headers = CHAT.url(s, "cb"), CHAT.headers(s.user_token)
        open_body = {
            "error": {
                "message": "circuit breaker is open",
                "type": "server_error",
                "code": "service_unavailable",
            }
        }
        async with aiohttp.ClientSession() as session:
            s.fake.enqueue(Scenario.http_error(503), Scenario.http_error(503))
            for _ in range(2):
                status, _, raw = await post(session, url, CHAT.request(stream=False), headers)
                assert status == 503
                assert orjson.loads(raw) != open_body  # the upstream's own 503
            seen = len(s.fake.requests)
            assert seen == 2

            # Open: rejected without reaching upstream.
            status, resp_headers, raw = await post(
                session, url, CHAT.request(stream=False), headers
            )
            assert status == 503
            assert resp_headers["Retry-After"] == "30"
            assert resp_headers["Content-Type"].startswith("application/json")
            assert orjson.loads(raw) == open_body
            clock.advance(29)
            status, resp_headers, _ = await post(session, url, CHAT.request(stream=False), headers)
            assert status == 503
            assert resp_headers["Retry-After"] == "1"
            assert len(s.fake.requests) == seen

            # Half-open: one probe goes through; a second concurrent request is rejected.
            clock.advance(1)
            release = asyncio.Event()
            probe_scenario = Scenario.stall(release=release)
            s.fake.enqueue(probe_scenario)
            probe = asyncio.create_task(
                post(session, url, CHAT.request(stream=True), headers), name="probe"
            )
            try:
                async with asyncio.timeout(TIMEOUT):
                    await probe_scenario.stalled.wait()
                assert len(s.fake.requests) == seen + 1
                status, _, raw = await post(session, url, CHAT.request(stream=False), headers)
                assert status == 503
                assert orjson.loads(raw) == open_body
                assert len(s.fake.requests) == seen + 1
            finally:
                release.set()
            async with asyncio.timeout(TIMEOUT):
                status, _, raw = await probe
            assert status == 200
            assert sse_events(raw)[-1] == (None, b"[DONE]")

            # The successful probe closed the breaker: requests reach upstream again.
            for n in range(2):
                status, _, raw = await post(session, url, CHAT.request(stream=False), headers)
                assert status == 200, raw
                assert len(s.fake.requests) == seen + 2 + n

        labels = {"provider": "cb", "endpoint": "/v1/chat/completions", "model": "gpt-test"}
        assert metric(s, "aibridge_circuit_breaker_trips_total", **labels) == 1
        assert metric(s, "aibridge_circuit_breaker_rejects_total", **labels) == 3
        assert metric(s, "aibridge_circuit_breaker_state", **labels) == 0
        recorded = await rows(s, "cb")
        assert [r.error_type for r in recorded].count("overloaded") == 5  # 2 upstream + 3 open
        assert sum(r.error_message == "circuit breaker is open" for r in recorded) == 3


# --------------------------------------------------------------------------- 5. DB outage

BURST = 30

# Small queue and quick retries, so the burst overflows into the spill file and the
# replay happens within the test's timeouts.
OUTAGE_RECORDER: dict[str, Any] = {
    "batch_size": 10,
    "flush_interval": 0.01,
    "queue_size": 20,
    "ping_timeout": 1.0,
    "write_timeout": 2.0,
    "retry_initial": 0.02,
    "retry_max": 0.2,
    "replay_interval": 0.2,
    "pending_retry_interval": 0.05,
}


async def test_database_outage_during_burst_loses_nothing(pg_url: str, tmp_path: Path) -> None:
    async with stack(pg_url, tmp_path, recorder_options=OUTAGE_RECORDER) as s:
        await s.add_provider("burst", "anthropic")
        recorder = s.services.recorder
        assert recorder is not None
        url, headers = MESSAGES.url(s, "burst"), MESSAGES.headers(s.user_token)

        async def one(session: aiohttp.ClientSession) -> bytes:
            status, _, raw = await post(session, url, MESSAGES.request(stream=True), headers)
            assert status == 200, raw
            return raw

        async with aiohttp.ClientSession() as session:
            # Authenticates once (cached) and warms the upstream connection.
            await one(session)
            await s.flush_records()
            spilled = metric(s, "aibridge_recorder_records_spilled_total")
            replayed = metric(s, "aibridge_recorder_records_replayed_total")
            async with pg_outage(pg_url):
                async with asyncio.timeout(TIMEOUT):
                    ready = await s.client.get("/readyz")
                    assert ready.status == 503  # the database really is unreachable
                async with asyncio.timeout(3 * TIMEOUT):
                    bodies = await asyncio.gather(*(one(session) for _ in range(BURST)))
                for raw in bodies:
                    events = sse_events(raw)
                    assert events[-1][0] == "message_stop"
                    assert all(name != "error" for name, _ in events)
                # The writer found the database down (and said so) and spilled.
                async with asyncio.timeout(TIMEOUT):
                    await recorder.wait_until(
                        lambda: (
                            metric(s, "aibridge_recorder_records_spilled_total") > spilled
                            and not recorder.healthy
                        )
                    )
            async with asyncio.timeout(3 * TIMEOUT):
                await recorder.wait_idle()
            async with asyncio.timeout(TIMEOUT):
                ready = await s.client.get("/readyz")
                assert ready.status == 200

        new_spills = metric(s, "aibridge_recorder_records_spilled_total") - spilled
        assert new_spills > 0
        assert metric(s, "aibridge_recorder_records_replayed_total") - replayed == new_spills
        assert metric(s, "aibridge_recorder_records_dropped_total") == 0
        recorded = await rows(s, "burst")
        ids = [r.id for r in recorded]
        assert len(ids) == BURST + 1
        assert len(set(ids)) == BURST + 1
        assert all(r.ended_at is not None and r.error_type is None for r in recorded)
        async with s.services.sessions() as db:
            for model in (TokenUsage, UserPrompt):
                per_interception = dict(
                    (
                        await db.execute(
                            select(model.interception_id, func.count())
                            .where(model.interception_id.in_(ids))
                            .group_by(model.interception_id)
                        )
                    ).all()
                )
                assert per_interception == dict.fromkeys(ids, 1), model.__name__
            usage = await db.scalars(select(TokenUsage).where(TokenUsage.interception_id.in_(ids)))
            assert {(u.input_tokens, u.output_tokens) for u in usage} == {(25, 12)}


async def test_database_outage_during_an_uncached_key_lookup_is_a_503(
    pg_url: str, tmp_path: Path
) -> None:
    async with stack(pg_url, tmp_path, recorder_options=OUTAGE_RECORDER) as s:
        await s.add_provider("anthropic", "anthropic")
        await s.add_provider("openai", "openai")
        async with aiohttp.ClientSession() as session, pg_outage(pg_url):
            # The member's key has not been used yet: it is not cached.
            for api, provider in ((MESSAGES, "anthropic"), (CHAT, "openai")):
                status, _, raw = await post(
                    session,
                    api.url(s, provider),
                    api.request(stream=False),
                    api.headers(s.user_token),
                )
                assert status == 503, raw
                body = orjson.loads(raw)
                if api is MESSAGES:
                    assert body["type"] == "error"
                    assert body["error"]["type"] == "api_error"
                else:
                    assert body["error"]["type"] == "server_error"
                assert b"retry" in raw
            # The admin API answers a 503 in its own envelope.
            async with asyncio.timeout(TIMEOUT):
                resp = await session.get(
                    f"{s.base}/api/v1/me", headers={"Authorization": f"Bearer {s.user_token}"}
                )
                assert resp.status == 503, await resp.text()
                assert set(await resp.json()) >= {"message", "detail"}
        assert s.fake.requests == []
        # Once the database is back, the same key works.
        status, _, raw = await MESSAGES.send(s, "anthropic", stream=False)
        assert status == 200, raw


# --------------------------------------------------------------------------- 6. edges


async def test_unknown_routes_bad_methods_and_disabled_providers_get_their_error_unsent(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("anthropic", "anthropic")
        await s.add_provider("off", "openai", enabled=False)
        headers = MESSAGES.headers(s.user_token)
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.post("/nope/v1/messages", json=MESSAGES.body, headers=headers)
            assert resp.status == 404
            assert (await resp.json())["message"] == "route not supported: POST /nope/v1/messages"

            resp = await s.client.post(
                "/anthropic/v1/nothing-here", json=MESSAGES.body, headers=headers
            )
            assert resp.status == 404
            assert "route not supported" in (await resp.json())["message"]

            resp = await s.client.get("/anthropic/v1/messages", headers=headers)
            assert resp.status == 405
            body = await resp.json()
            assert body == {
                "type": "error",
                "error": {
                    "type": "api_error",
                    "message": "GET is not allowed on /anthropic/v1/messages; use POST",
                },
            }

            resp = await s.client.post(
                "/off/v1/chat/completions", json=CHAT.body, headers=CHAT.headers(s.user_token)
            )
            assert resp.status == 503
            err = (await resp.json())["error"]
            assert err["message"] == 'provider_disabled: AI provider "off" is disabled'
        assert s.fake.requests == []
        assert await rows(s, "anthropic") == []


async def test_oversized_body_is_413(sqlite_url: str, tmp_path: Path) -> None:
    limit = 1024 * 1024
    async with stack(sqlite_url, tmp_path, settings_overrides={"max_body_bytes": limit}) as s:
        await s.add_provider("anthropic", "anthropic")
        body = {**MESSAGES.body, "messages": [{"role": "user", "content": "x" * limit}]}
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.post(
                "/anthropic/v1/messages", json=body, headers=MESSAGES.headers(s.user_token)
            )
            assert resp.status == 413
            err = (await resp.json())["error"]
        assert err["type"] == "request_too_large"
        assert err["message"] == (
            "Request body too large. The maximum allowed request body size is 1MiB."
        )
        assert s.fake.requests == []
        # Just under the limit still works.
        small = {**MESSAGES.body, "messages": [{"role": "user", "content": "x" * (limit - 500)}]}
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.post(
                "/anthropic/v1/messages", json=small, headers=MESSAGES.headers(s.user_token)
            )
            assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("api", [MESSAGES, CHAT], ids=lambda a: a.name)
async def test_byok_request_uses_the_clients_key_and_records_its_masked_hint(
    api: Api, sqlite_url: str, tmp_path: Path
) -> None:
    own_key = f"sk-client-own-{api.name}-key-9876"
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("byok", api.ptype, settings={"allow_byok": True})
        await s.add_provider("nobyok", api.ptype)
        if api is MESSAGES:
            headers = {"x-api-key": own_key, "anthropic-version": "2023-06-01"}
        else:
            headers = {"Authorization": f"Bearer {own_key}"}
        headers["X-AIBridge-Token"] = s.user_token
        async with aiohttp.ClientSession() as session:
            status, _, raw = await post(
                session, api.url(s, "byok"), api.request(stream=False), headers
            )
            assert status == 200, raw
            seen = s.fake.requests[-1]
            assert seen.credential() == own_key
            assert s.user_token not in str(dict(seen.headers))
            assert "sk-upstream-primary-0001" not in str(dict(seen.headers))

            before = len(s.fake.requests)
            status, _, raw = await post(
                session, api.url(s, "nobyok"), api.request(stream=False), headers
            )
            assert status == 403
            assert b"allow_byok" in raw
            assert len(s.fake.requests) == before
        [row] = await rows(s, "byok")
        assert row.credential_kind == "byok"
        assert row.credential_hint == mask_secret(own_key) == "sk-…9876"
        assert row.error_type is None


async def test_readyz_reports_providers_and_metrics_count_tokens_of_a_request(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("anthropic", "anthropic")
        await s.add_provider("off", "openai", enabled=False)
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.get("/readyz")
            assert resp.status == 200
            ready = await resp.json()
        assert ready["status"] == "ok"
        assert ready["providers_loaded"] is True
        assert ready["providers"] == {
            "anthropic": {"type": "anthropic", "status": "enabled"},
            "off": {"type": "openai", "status": "disabled"},
        }
        status, _, raw = await MESSAGES.send(s, "anthropic", stream=True)
        assert status == 200, raw
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.get("/metrics")
            assert resp.status == 200
            text = await resp.text()
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

        def value(name: str, **labels: str) -> float | None:
            return samples.get((name, tuple(sorted(labels.items()))))

        assert (
            value(
                "aibridge_interceptions_total",
                provider="anthropic",
                api="messages",
                outcome="completed",
            )
            == 1
        )
        token_labels = {"provider": "anthropic", "model": "claude-test"}
        assert value("aibridge_tokens_total", **token_labels, type="input") == 25
        assert value("aibridge_tokens_total", **token_labels, type="output") == 12
        assert value("aibridge_interceptions_inflight", provider="anthropic", api="messages") == 0
