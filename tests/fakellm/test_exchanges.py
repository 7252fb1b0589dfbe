"""Captured exchanges in the fake upstream: the file format's parser, and replaying a file's
response byte for byte (``Scenario.fixture`` and the ``scenario:fixture:`` keyword)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
import pytest

from aibridge.fakellm import (
    Exchange,
    ExchangeFormatError,
    FakeLLM,
    Scenario,
    scenario_from_keyword,
)
from aibridge.fakellm.exchange import parse_exchange
from aibridge.fakellm.replay import sse_pieces

PATHS = {"messages": "/v1/messages", "chat": "/v1/chat/completions", "responses": "/v1/responses"}
T = 10


async def post(fake: FakeLLM, path: str, body: bytes) -> tuple[int, str, bytes]:
    """POST ``body`` to the fake; (status, content type, response bytes)."""
    async with (
        asyncio.timeout(T),
        aiohttp.ClientSession() as http,
        http.post(
            fake.url + path,
            data=body,
            headers={"Content-Type": "application/json", "Authorization": "Bearer sk-test"},
        ) as resp,
    ):
        return resp.status, resp.content_type, await resp.read()


# --- the format -----------------------------------------------------------------------


def test_sections_keep_their_bytes_and_the_header_is_the_description() -> None:
    text = (
        b"# An exchange\n# on two lines.\n"
        b"-- request --\n{}\n"
        b"-- response 529 text/event-stream --\nevent: error\ndata: {}\n\n"
        b'-- expect --\n{"completed": false}\n'
    )
    exchange = parse_exchange(text, "messages/x.stream")
    assert exchange.description == "An exchange on two lines."
    assert (exchange.api, exchange.status, exchange.content_type) == (
        "messages",
        529,
        "text/event-stream",
    )
    assert exchange.request == b"{}\n"
    assert exchange.response == b"event: error\ndata: {}\n\n"
    assert exchange.streaming
    assert exchange.expect == {"completed": False}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"-- request --\n{}\n-- expect --\n{}\n", "x/y: missing section(s) response"),
        (b"oops\n-- request --\n", "x/y:1: text before the first section marker"),
        (
            b"-- request --\n-- request --\n-- response 200 a/b --\n-- expect --\n{}\n",
            "x/y:2: a second 'request' section",
        ),
        (
            b"-- request --\n-- response 200 a/b --\n-- expect --\nnot json\n",
            "x/y: the expect section is not JSON",
        ),
        (
            b"-- request --\n-- response 200 a/b --\n-- expect --\n[]\n",
            "x/y: the expect section is not a JSON object",
        ),
    ],
)
def test_a_malformed_exchange_file_is_refused_saying_where(text: bytes, message: str) -> None:
    with pytest.raises(ExchangeFormatError) as info:
        parse_exchange(text, "x/y")
    assert str(info.value).startswith(message)


def test_a_replayed_stream_is_written_one_whole_event_at_a_time(
    stream_exchange: Exchange,
) -> None:
    pieces = sse_pieces(stream_exchange.response)
    assert b"".join(pieces) == stream_exchange.response
    assert all(p.endswith(b"\n\n") and b"\n\n" not in p[:-2] for p in pieces)
    assert len(pieces) == stream_exchange.response.count(b"\n\n")


# --- replaying --------------------------------------------------------------------------


async def test_a_fixture_is_replayed_byte_for_byte_with_its_status_and_content_type(
    exchange: Exchange, exchanges_dir: Path
) -> None:
    async with FakeLLM().serve() as fake:
        fake.enqueue(Scenario.fixture(exchanges_dir / f"{exchange.name}.txt"))
        got = await post(fake, PATHS[exchange.api], exchange.request)
    assert got == (exchange.status, exchange.content_type, exchange.response)
    assert fake.requests[0].status == exchange.status
    assert fake.requests[0].api == ("anthropic" if exchange.api == "messages" else exchange.api)


def chat_request(text: str) -> bytes:
    return orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]})


async def test_a_fixture_keyword_replays_the_named_file_from_the_fixtures_folder(
    exchanges: tuple[Exchange, ...], exchanges_dir: Path
) -> None:
    (exchange,) = [e for e in exchanges if e.name == "chat/reasoning.blocking"]
    async with FakeLLM(fixtures=exchanges_dir).serve() as fake:
        got = await post(
            fake, PATHS["chat"], chat_request("scenario:fixture:chat/reasoning.blocking")
        )
    assert got == (200, "application/json", exchange.response)


@pytest.mark.parametrize("has_folder", [True, False], ids=["unknown-name", "no-folder"])
async def test_a_fixture_keyword_without_its_file_is_a_400_that_says_so(
    has_folder: bool, exchanges_dir: Path
) -> None:
    fixtures = exchanges_dir if has_folder else None
    async with FakeLLM(fixtures=fixtures).serve() as fake:
        status, _, body = await post(
            fake, PATHS["chat"], chat_request("scenario:fixture:chat/nope.stream")
        )
    assert status == 400
    message = orjson.loads(body)["error"]["message"]
    assert message.startswith("fakellm: no fixture chat/nope.stream ")
    assert (str(exchanges_dir) in message) == has_folder


def test_a_fixture_keyword_cannot_name_a_file_outside_the_folder(exchanges_dir: Path) -> None:
    for climbing in ("../conftest", "chat/../../conftest", "/etc/passwd"):
        assert scenario_from_keyword(f"scenario:fixture:{climbing}", exchanges_dir) is None
