"""The cost of every upstream call, end to end: client → gateway → fake upstream → recorder
→ database → admin API, priced with the shipped default prices.

Each expected cost is worked out here by hand from the published price (USD per million
tokens) with :class:`~decimal.Decimal`, so the recorded integer must equal tokens x price
exactly. The cache-heavy cases are the ones gateways get wrong: cache reads and writes
have their own prices, and OpenAI's cached tokens are part of its prompt count, so they
must be taken out of plain input (charging them as input costs up to 10x too much).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from aibridge.fakellm import Scenario, Usage
from aibridge.store.models import TokenUsage
from aibridge.testing import recorded
from aibridge.testing.replicas import poll
from aibridge.testing.stack import TIMEOUT, Stack, stack

PICO = Decimal(10) ** 12
MILLION = Decimal(10**6)


def pusd(tokens: dict[str, int], price: dict[str, str]) -> int:
    """Pico-USD of ``tokens`` at ``price`` (USD per million tokens), in exact decimals."""
    usd = sum(
        (Decimal(tokens[kind]) * Decimal(price[kind]) / MILLION for kind in tokens), Decimal(0)
    )
    exact = usd * PICO
    assert exact == exact.to_integral_value()
    return int(exact)


def as_decimal(number: Any) -> Decimal:
    """A JSON number from the API as the decimal it spells."""
    return Decimal(str(number))


async def post(s: Stack, path: str, body: dict[str, Any]) -> bytes:
    """POST ``body`` with the member's key; the response body (asserting a 200)."""
    headers = {"Authorization": f"Bearer {s.user_token}", "anthropic-version": "2023-06-01"}
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.post(path, data=orjson.dumps(body), headers=headers)
        data = await resp.read()
    assert resp.status == 200, data
    return data


async def last_token_row(s: Stack) -> TokenUsage:
    """The token row of the member's newest interception (exactly one upstream call)."""
    await s.flush_records()
    rows = await recorded.interceptions(s.services, initiator_id=await s.member_id())
    got = await recorded.recorded(s.services, rows[-1].id)
    assert len(got.token_usages) == 1
    return got.token_usages[0]


async def usage_rows(s: Stack, group_by: str) -> dict[str, dict[str, Any]]:
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.get(
            "/api/v1/usage", params={"group_by": group_by}, headers=s.admin_headers()
        )
        body = await resp.json(loads=lambda t: orjson.loads(t))
    assert resp.status == 200, body
    return {row["key"]: row for row in body["rows"]}


SONNET = {"input": "3", "output": "15", "cache_read": "0.30", "cache_write": "3.75"}
GPT5 = {"input": "1.25", "output": "10", "cache_read": "0.125"}


async def test_an_anthropic_stream_with_95_percent_cache_reads_costs_exactly_tokens_times_price(
    sqlite_url: str, tmp_path: Path
) -> None:
    # An agent turn: 95 % of the 100k input tokens are cache reads, a cache write of
    # 4,950, 50 new tokens; every kind has its own price (Sonnet 4.5, from the defaults).
    usage = Usage(
        input_tokens=50, output_tokens=820, cache_read_tokens=95_000, cache_write_tokens=4_950
    )
    model = "claude-sonnet-4-5-20250929"
    async with stack(sqlite_url, tmp_path, default=Scenario.text_reply(usage=usage)) as s:
        await s.add_provider("claude", "anthropic")
        for stream in (True, False):
            await post(
                s,
                "/claude/v1/messages",
                {
                    "model": model,
                    "max_tokens": 1024,
                    "stream": stream,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            )
            row = await last_token_row(s)
            tokens = {"input": 50, "output": 820, "cache_read": 95_000, "cache_write": 4_950}
            assert (
                row.input_tokens,
                row.output_tokens,
                row.cache_read_input_tokens,
                row.cache_write_input_tokens,
            ) == tuple(tokens.values())
            expected = pusd(tokens, SONNET)
            # 0.00015 + 0.0123 + 0.0285 + 0.0185625 USD
            assert expected == 59_512_500_000
            assert row.cost_pusd == expected, stream
            # Charging the cache as plain input would have cost 3.2x as much.
            assert pusd({"input": 99_950, "output": 820}, SONNET) > 3 * expected
        rows = await usage_rows(s, "model")
        assert as_decimal(rows[model]["cost_usd"]) == Decimal(2 * expected) / PICO
        assert rows[model]["unpriced"] is False


async def test_openai_cached_input_is_taken_out_of_plain_input_and_priced_on_its_own(
    sqlite_url: str, tmp_path: Path
) -> None:
    # 19,000 of 20,000 prompt tokens cached; 200 of the 500 output tokens are reasoning,
    # which OpenAI already counts in the output (charging it again would be wrong).
    usage = Usage(
        input_tokens=1_000, output_tokens=500, cache_read_tokens=19_000, reasoning_tokens=200
    )
    tokens = {"input": 1_000, "output": 500, "cache_read": 19_000}
    expected = pusd(tokens, GPT5)
    assert expected == 8_625_000_000  # 0.00125 + 0.005 + 0.002375 USD
    # The peers' mistake: all 20,000 prompt tokens at the input price (+ reasoning again).
    assert pusd({"input": 20_000, "output": 700}, GPT5) > 3 * expected
    message = {"role": "user", "content": "hi"}
    async with stack(sqlite_url, tmp_path, default=Scenario.text_reply(usage=usage)) as s:
        await s.add_provider("openai", "openai")
        calls: list[tuple[str, dict[str, Any]]] = [
            ("/openai/v1/chat/completions", {"model": "gpt-5", "messages": [message]}),
            (
                "/openai/v1/chat/completions",
                {"model": "gpt-5", "messages": [message], "stream": True},
            ),
            ("/openai/v1/responses", {"model": "gpt-5", "input": "hi"}),
            ("/openai/v1/responses", {"model": "gpt-5", "input": "hi", "stream": True}),
        ]
        for path, body in calls:
            await post(s, path, body)
            row = await last_token_row(s)
            assert (
                row.input_tokens,
                row.output_tokens,
                row.cache_read_input_tokens,
                row.cache_write_input_tokens,
                row.reasoning_tokens,
            ) == (1_000, 500, 19_000, 0, 200), (path, body)
            assert row.cost_pusd == expected, (path, body)
        rows = await usage_rows(s, "provider")
        assert as_decimal(rows["openai"]["cost_usd"]) == Decimal(4 * expected) / PICO


async def test_a_model_without_a_price_is_recorded_unpriced_and_flagged_never_guessed(
    sqlite_url: str, tmp_path: Path
) -> None:
    usage = Usage(input_tokens=400, output_tokens=100, cache_read_tokens=600)
    async with stack(sqlite_url, tmp_path, default=Scenario.text_reply(usage=usage)) as s:
        await s.add_provider("openai", "openai")
        message = {"role": "user", "content": "hi"}
        await post(
            s, "/openai/v1/chat/completions", {"model": "my-finetune", "messages": [message]}
        )
        row = await last_token_row(s)
        assert (row.input_tokens, row.cache_read_input_tokens, row.cost_pusd) == (400, 600, None)
        await post(s, "/openai/v1/chat/completions", {"model": "gpt-4.1", "messages": [message]})
        priced = await last_token_row(s)
        expected = pusd(
            {"input": 400, "output": 100, "cache_read": 600},
            {"input": "2", "output": "8", "cache_read": "0.5"},
        )
        assert priced.cost_pusd == expected

        by_model = await usage_rows(s, "model")
        assert (by_model["my-finetune"]["cost_usd"], by_model["my-finetune"]["unpriced"]) == (
            0,
            True,
        )
        assert by_model["gpt-4.1"]["unpriced"] is False
        by_user = await usage_rows(s, "user")
        # The user's total is the priced part, flagged as incomplete.
        assert as_decimal(by_user["dev"]["cost_usd"]) == Decimal(expected) / PICO
        assert by_user["dev"]["unpriced"] is True
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.get("/api/v1/interceptions", headers=s.admin_headers())
            listed = (await resp.json())["interceptions"]
        assert [(i["model"], i["unpriced"]) for i in listed] == [
            ("gpt-4.1", False),
            ("my-finetune", True),
        ]
        assert as_decimal(listed[0]["cost_usd"]) == Decimal(expected) / PICO


async def test_a_price_set_through_the_admin_api_prices_the_next_call(
    sqlite_url: str, tmp_path: Path
) -> None:
    usage = Usage(
        input_tokens=1_000_000, output_tokens=3, cache_read_tokens=7, cache_write_tokens=11
    )
    async with stack(sqlite_url, tmp_path, default=Scenario.text_reply(usage=usage)) as s:
        await s.add_provider("claude", "anthropic")
        body = {
            "model": "claude-house-1",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}],
        }
        await post(s, "/claude/v1/messages", body)
        assert (await last_token_row(s)).cost_pusd is None
        price = {
            "input_per_mtok": 0.000001,
            "output_per_mtok": 2,
            "cache_read_per_mtok": 0.5,
            "cache_write_per_mtok": 7.25,
        }
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.put(
                "/api/v1/prices/anthropic/claude-house-*", json=price, headers=s.admin_headers()
            )
            assert resp.status == 201, await resp.text()
        book = s.services.prices

        async def installed() -> bool:
            return book.table.lookup("anthropic", "claude-house-1") is not None

        await poll(installed, TIMEOUT, "the new price in the gateway's price book")
        await post(s, "/claude/v1/messages", body)
        # Pico-USD per token = micro-USD per million: 1e6 x 1 + 3 x 2e6 + 7 x 5e5 + 11 x 7.25e6.
        assert (
            await last_token_row(s)
        ).cost_pusd == 1_000_000 + 3 * 2_000_000 + 7 * 500_000 + 11 * 7_250_000
