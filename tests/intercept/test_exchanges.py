"""Captured-format exchanges (tests/fixtures/<api>/*.txt, see the README there).

The files are written from what the providers send, not by the code under test: each API's
observer must extract exactly the file's ``expect``, from the whole response and from the
response cut into small random chunks; through the real gateway, with the fake upstream
replaying the file, the client gets the response bytes unchanged and the recorder writes
``expect``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aibridge.fakellm import Scenario
from aibridge.testing.exchanges import (
    Exchange,
    as_recorded,
    observe_exchange,
    observed_as_expect,
    recorded_as_expect,
)
from aibridge.testing.observe import random_chunks
from aibridge.testing.stack import TIMEOUT, stack

# Where each API's requests go through the gateway: (provider type, path under /<provider>).
ROUTES = {
    "messages": ("anthropic", "/v1/messages"),
    "chat": ("openai", "/v1/chat/completions"),
    "responses": ("openai", "/v1/responses"),
}
# The recorded error type of a provider error reported inside a 200 stream.
RECORDED_ERROR_TYPES = {"overloaded_error": "overloaded"}


def test_every_bridged_api_has_captured_exchanges_of_both_kinds(
    exchanges: tuple[Exchange, ...],
) -> None:
    kinds = {(e.api, e.streaming) for e in exchanges}
    assert kinds == {(api, streaming) for api in ROUTES for streaming in (True, False)}


def test_the_observer_extracts_what_the_exchange_expects(exchange: Exchange) -> None:
    assert observed_as_expect(observe_exchange(exchange)) == exchange.expect


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_stream_cut_into_random_small_chunks_extracts_the_same(
    stream_exchange: Exchange, seed: int
) -> None:
    chunks = random_chunks(stream_exchange.response, seed, max_size=16)
    assert len(chunks) > 10
    observed = observed_as_expect(observe_exchange(stream_exchange, chunks))
    assert observed == stream_exchange.expect


def recorded_end(expect: dict[str, object]) -> tuple[str | None, str | None]:
    """The (error_type, error_message) an interception with this ``expect`` ends with."""
    error = expect["error"]
    if isinstance(error, dict):
        return RECORDED_ERROR_TYPES[error["type"]], error["message"]
    if not expect["completed"]:
        return "server_error", "upstream stream ended without a terminal event"
    return None, None


async def test_the_gateway_relays_the_exchange_unchanged_and_records_its_expect(
    exchange: Exchange, db_url: str, tmp_path: Path
) -> None:
    ptype, path = ROUTES[exchange.api]
    async with stack(db_url, tmp_path) as s:
        await s.add_provider(ptype, ptype)
        s.fake.enqueue(Scenario.fixture(exchange))
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.post(
                f"/{ptype}{path}",
                data=exchange.request,
                headers={
                    "Authorization": f"Bearer {s.user_token}",
                    "Content-Type": "application/json",
                },
            )
            body = await resp.read()
        assert (resp.status, resp.content_type) == (exchange.status, exchange.content_type)
        assert body == exchange.response
        assert s.fake.requests[0].body == exchange.request
        rec = await s.only_recording()
    assert recorded_as_expect(rec) == as_recorded(exchange.expect)
    assert (rec.interception.error_type, rec.interception.error_message) == recorded_end(
        exchange.expect
    )
