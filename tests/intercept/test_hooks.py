"""The pipeline's named hooks: what addons see, in which order, and the composite.

A real RequestBridge serves real requests (an aiohttp app on loopback, the fake upstream
on another port) with a test addon that logs every hook call.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from aibridge.actor import Actor
from aibridge.bridge import RequestBridge
from aibridge.fakellm import FakeLLM, Scenario
from aibridge.governance.limiter import Limiter, LimiterConfig
from aibridge.intercept.errors import routing_error_response
from aibridge.intercept.hooks import Addons
from aibridge.intercept.interception import CLIENT_GONE, COMPLETED, Interception, Outcome
from aibridge.intercept.observations import Observation
from aibridge.providers.base import build_provider
from aibridge.providers.routes import PassthroughRoute, RoutingError
from aibridge.providers.snapshot import ProviderSnapshot
from aibridge.providers.upstream import UpstreamClients
from aibridge.testing.providers import provider_record

TIMEOUT = 60.0
ACTOR = Actor(uuid.uuid4(), "someone", "member", "key1")
BODY = {"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class LoggingAddon:
    """Logs every hook call; ``upstream_seen`` is how many requests the upstream had
    received when ``started`` ran."""

    fake: FakeLLM
    calls: list[tuple[str, Any]] = field(default_factory=list)
    upstream_seen: list[int] = field(default_factory=list)
    ended_once: asyncio.Event = field(default_factory=asyncio.Event)

    def started(self, ix: Interception) -> None:
        self.upstream_seen.append(len(self.fake.requests))
        self.calls.append(("started", ix.id))

    def observed(self, ix: Interception, observation: Observation) -> None:
        self.calls.append(("observed", [u.output for u in observation.usages]))

    def ended(self, ix: Interception, outcome: Outcome) -> None:
        self.calls.append(("ended", outcome))
        self.ended_once.set()

    def passed_through(self, route: PassthroughRoute, method: str) -> None:
        self.calls.append(("passed_through", (route.label, method)))


@dataclass
class Gateway:
    base: str
    fake: FakeLLM
    addon: LoggingAddon


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    async with FakeLLM().serve() as fake:
        provider = build_provider(provider_record("ant", "anthropic", fake.url))
        addon = LoggingAddon(fake)
        upstream = UpstreamClients()
        bridge = RequestBridge(
            ProviderSnapshot(1, {"ant": provider}),
            ACTOR,
            upstream,
            limiter=Limiter(LimiterConfig()),
            max_body_bytes=1 << 20,
            hooks=Addons(addon),
        )

        async def handler(request: web.Request) -> web.StreamResponse:
            tail = "/" + request.match_info["tail"]
            route = bridge.snapshot.resolve(request.match_info["name"], tail, request.method)
            if isinstance(route, RoutingError):
                return routing_error_response(request, route)
            return await bridge.handle(request, route)

        app = web.Application()
        app.router.add_route("*", "/{name}/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        try:
            yield Gateway(str(server.make_url("")).rstrip("/"), fake, addon)
        finally:
            await server.close()
            await upstream.close()


async def call(gw: Gateway, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        asyncio.timeout(TIMEOUT),
        session.request(method, gw.base + path, json=body) as resp,
    ):
        return resp.status, await resp.read()


async def test_a_blocking_request_is_started_observed_and_ended_in_order(gateway: Gateway) -> None:
    status, _ = await call(gateway, "POST", "/ant/v1/messages", BODY)
    assert status == 200
    names = [name for name, _ in gateway.addon.calls]
    assert names == ["started", "observed", "ended"]
    # The start hook was awaited before the upstream call.
    assert gateway.addon.upstream_seen == [0]
    assert len(gateway.fake.requests) == 1
    (_, usage_outputs) = gateway.addon.calls[1]
    assert usage_outputs and usage_outputs[0] > 0
    assert gateway.addon.calls[2] == ("ended", COMPLETED)


async def test_a_stream_is_observed_once_and_ends_completed(gateway: Gateway) -> None:
    status, raw = await call(gateway, "POST", "/ant/v1/messages", {**BODY, "stream": True})
    assert status == 200 and b"message_stop" in raw
    assert [name for name, _ in gateway.addon.calls] == ["started", "observed", "ended"]
    assert gateway.addon.calls[-1] == ("ended", COMPLETED)


async def test_an_upstream_error_ends_without_an_observation(gateway: Gateway) -> None:
    gateway.fake.enqueue(Scenario.http_error(400, message="bad"))
    status, _ = await call(gateway, "POST", "/ant/v1/messages", BODY)
    assert status == 400
    assert gateway.addon.calls[0][0] == "started"
    assert gateway.addon.calls[1:] == [("ended", Outcome("bad_request", "bad"))]


async def test_a_rejected_request_reaches_no_hook(gateway: Gateway) -> None:
    status, _ = await call(gateway, "POST", "/ant/v1/messages", {"model": 5})
    assert status == 400
    assert gateway.addon.calls == []
    assert gateway.fake.requests == []


async def test_passthrough_is_reported_and_not_intercepted(gateway: Gateway) -> None:
    status, _ = await call(gateway, "GET", "/ant/v1/models")
    assert status == 200
    assert gateway.addon.calls == [("passed_through", ("/v1/models", "GET"))]


async def test_a_client_that_leaves_mid_stream_is_observed_then_ended_as_gone(
    gateway: Gateway,
) -> None:
    release = asyncio.Event()
    gateway.fake.enqueue(Scenario.stall(release=release))
    try:
        async with (
            aiohttp.ClientSession() as session,
            asyncio.timeout(TIMEOUT),
        ):
            resp = await session.post(
                gateway.base + "/ant/v1/messages", json={**BODY, "stream": True}
            )
            await resp.content.readline()  # the stream is flowing
            resp.close()  # the client leaves before the end
            await gateway.addon.ended_once.wait()
    finally:
        release.set()
    assert [name for name, _ in gateway.addon.calls] == ["started", "observed", "ended"]
    assert gateway.addon.calls[-1] == ("ended", CLIENT_GONE)


# --------------------------------------------------------------------------- the composite


class Broken:
    def started(self, ix: Interception) -> None:
        return None

    def observed(self, ix: Interception, observation: Observation) -> None:
        raise RuntimeError("observer bug")

    def ended(self, ix: Interception, outcome: Outcome) -> None:
        raise RuntimeError("metrics bug")


class Counting:
    def __init__(self) -> None:
        self.events: list[str] = []

    def started(self, ix: Interception) -> None:
        self.events.append("started")

    def observed(self, ix: Interception, observation: Observation) -> None:
        self.events.append("observed")

    def ended(self, ix: Interception, outcome: Outcome) -> None:
        self.events.append("ended")


async def test_a_failing_addon_does_not_cost_the_next_one_its_hooks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counting = Counting()
    addons = Addons(Broken(), counting)
    ix: Any = object()  # the addons here never look at it
    addons.started(ix)
    addons.observed(ix, Observation())
    addons.ended(ix, COMPLETED)
    assert counting.events == ["started", "observed", "ended"]
    assert "metrics bug" in caplog.text and "observer bug" in caplog.text


def test_passthrough_goes_only_to_addons_that_count_it() -> None:
    counting = Counting()
    logging_addon = LoggingAddon(FakeLLM())
    addons = Addons(counting, logging_addon)
    provider: Any = None  # never read by these addons
    route = PassthroughRoute(provider, upstream_suffix="/v1/models", label="/v1/models")
    addons.passed_through(route, "GET")
    assert logging_addon.calls == [("passed_through", ("/v1/models", "GET"))]
    assert counting.events == []


class Named:
    """Records each hook call as (its name, the hook) into a shared list."""

    def __init__(self, name: str, calls: list[tuple[str, str]]) -> None:
        self.name, self.calls = name, calls

    def started(self, ix: Interception) -> None:
        self.calls.append((self.name, "started"))

    def observed(self, ix: Interception, observation: Observation) -> None:
        self.calls.append((self.name, "observed"))

    def ended(self, ix: Interception, outcome: Outcome) -> None:
        self.calls.append((self.name, "ended"))


def test_nested_addons_are_flattened_in_order() -> None:
    # The bridge wraps the server's addons with the settlement addon: one loop per hook
    # call, the same order and the same isolation of a failing addon as when nested.
    calls: list[tuple[str, str]] = []
    inner = Addons(Named("a", calls), Broken(), Named("b", calls))
    outer = Addons(Named("first", calls), inner, Named("last", calls))
    assert not any(isinstance(a, Addons) for a in outer._interception)
    assert len(outer._interception) == 5
    ix: Any = object()
    outer.started(ix)
    outer.observed(ix, Observation())
    outer.ended(ix, COMPLETED)
    names = ["first", "a", "b", "last"]
    assert calls == [(n, hook) for hook in ("started", "observed", "ended") for n in names]
