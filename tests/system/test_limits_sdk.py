"""The official SDKs back off on the gateway's own 429: their built-in retry honours the
refusal's ``Retry-After`` (1 s for a concurrency refusal), measured from the gateway's
records of the refused and the retried request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import anthropic
import openai

from aibridge.fakellm import Scenario
from aibridge.testing.clients import closed_after_test
from aibridge.testing.recorded import interceptions
from aibridge.testing.replicas import poll
from aibridge.testing.stack import TIMEOUT, Stack, stack

RETRY_AFTER = 1.0
"""Seconds a concurrency refusal asks the client to wait."""


async def refusals(s: Stack) -> int:
    """Concurrency refusals so far, from /metrics."""
    async with asyncio.timeout(TIMEOUT):
        text = await (await s.client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith('aibridge_limit_refusals_total{reason="concurrency_limited"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


async def retried_after_refusal(
    s: Stack, provider: str, call: Callable[[], Awaitable[object]]
) -> float:
    """Hold the member's only slot with a stalled stream, make ``call`` (an SDK request
    to ``provider`` with one retry), free the slot once the gateway refused it; the
    seconds between the refused request and its retry, as recorded."""
    before = {r.id for r in await interceptions(s.services)}
    baseline = await refusals(s)
    upstream_calls = len(s.fake.generation_requests())
    release = asyncio.Event()
    s.fake.enqueue(Scenario.stall(release))
    holder = asyncio.create_task(
        s.client.post(
            "/oai/v1/chat/completions",
            json={"model": "gpt-5", "stream": True, "messages": [{"role": "user", "content": "x"}]},
            headers={"Authorization": f"Bearer {s.user_token}"},
        )
    )
    try:
        await asyncio.wait_for(s.fake.wait_for_requests(upstream_calls + 1), TIMEOUT)
        sdk = asyncio.create_task(call())

        async def refused() -> bool:
            return await refusals(s) == baseline + 1

        await poll(refused, TIMEOUT, "the SDK's first attempt to be refused")
    finally:
        release.set()
    async with asyncio.timeout(TIMEOUT):
        await (await holder).read()
        await sdk
    await s.flush_records()
    rows = [r for r in await interceptions(s.services) if r.id not in before]
    refused_at = [r.started_at for r in rows if r.error_type == "concurrency_limited"]
    # The holder started before the refusal; the retry after it.
    retried_at = [
        r.started_at
        for r in rows
        if r.error_type is None
        and r.provider_name == provider
        and refused_at
        and r.started_at > refused_at[0]
    ]
    assert len(refused_at) == 1 and len(retried_at) == 1, rows
    return (retried_at[0] - refused_at[0]).total_seconds()


async def test_openai_and_anthropic_sdks_retry_after_the_stated_delay(
    pg_url: str, tmp_path: Path
) -> None:
    overrides = {"default_max_concurrent": 1}
    async with stack(pg_url, tmp_path, settings_overrides=overrides) as s:
        await s.add_provider("oai", "openai")
        await s.add_provider("ant", "anthropic")
        oai = closed_after_test(
            openai.AsyncOpenAI(
                base_url=f"{s.base}/oai/v1", api_key=s.user_token, max_retries=1, timeout=TIMEOUT
            )
        )

        async def chat() -> object:
            return await oai.chat.completions.create(
                model="gpt-5", messages=[{"role": "user", "content": "hi"}]
            )

        waited = await retried_after_refusal(s, "oai", chat)
        assert RETRY_AFTER <= waited < RETRY_AFTER + 5, waited

        ant = closed_after_test(
            anthropic.AsyncAnthropic(
                base_url=f"{s.base}/ant", api_key=s.user_token, max_retries=1, timeout=TIMEOUT
            )
        )

        async def message() -> object:
            return await ant.messages.create(
                model="claude-sonnet-4",
                max_tokens=32,
                messages=[{"role": "user", "content": "hi"}],
            )

        waited = await retried_after_refusal(s, "ant", message)
        assert RETRY_AFTER <= waited < RETRY_AFTER + 5, waited
