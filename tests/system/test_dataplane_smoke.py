"""Smoke: each API through the gateway with the official SDKs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anthropic
import openai

from aibridge.testing.stack import TIMEOUT, stack


async def test_the_anthropic_sdk_works_through_the_gateway_with_the_pooled_key(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("anthropic", "anthropic")
        sdk = anthropic.AsyncAnthropic(
            base_url=s.base + "/anthropic", api_key=s.user_token, max_retries=0
        )
        async with asyncio.timeout(TIMEOUT):
            msg = await sdk.messages.create(
                model="claude-test", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
            )
            assert msg.content[0].type == "text"
            async with sdk.messages.stream(
                model="claude-test", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                final = await stream.get_final_message()
            assert final.usage.output_tokens > 0
        seen = s.fake.requests[-1]
        assert seen.headers.get("x-api-key") == "sk-upstream-primary-0001"
        assert s.user_token not in str(dict(seen.headers))


async def test_the_openai_sdk_works_through_the_gateway_with_the_pooled_key(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("openai", "openai")
        sdk = openai.AsyncOpenAI(
            base_url=s.base + "/openai/v1", api_key=s.user_token, max_retries=0
        )
        async with asyncio.timeout(TIMEOUT):
            chat = await sdk.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}]
            )
            assert chat.choices[0].message.content
            chunks = [
                c
                async for c in await sdk.chat.completions.create(
                    model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
                )
            ]
            assert chunks and all(c.choices for c in chunks)
            resp = await sdk.responses.create(model="gpt-test", input="hi")
            assert resp.output_text
        assert s.fake.requests[-1].headers.get("Authorization") == "Bearer sk-upstream-primary-0001"
