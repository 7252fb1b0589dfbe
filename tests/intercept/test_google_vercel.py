"""Google and Vercel end to end: OpenAI-protocol providers with the pooled key, through the
gateway with the official ``openai`` SDK (the fake upstream stands in for their
OpenAI-compatible endpoints)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aibridge.fakellm import Scenario
from aibridge.fakellm.scenario import Usage
from aibridge.secrets_mask import mask_secret
from aibridge.testing.openai_sdk import admin_get, collect, gateway_sdk, usage_row, usage_rows
from aibridge.testing.recorded import interceptions, recorded
from aibridge.testing.stack import PROVIDER_KEY, TIMEOUT, stack

USAGE = Usage(input_tokens=12, output_tokens=7)


@pytest.mark.parametrize(("ptype", "model"), [("google", "gemini-2.5-flash"), ("vercel", "x")])
async def test_google_and_vercel_bridge_chat_and_responses_with_the_pooled_key(
    ptype: str, model: str, sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider(ptype, ptype)
        s.fake.enqueue(
            Scenario.text_reply("Hi.", usage=USAGE), Scenario.text_reply("Hey.", usage=USAGE)
        )
        sdk = gateway_sdk(s, provider=ptype)
        async with asyncio.timeout(TIMEOUT):
            chat = await sdk.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hello"}]
            )
            events = await collect(await sdk.responses.create(model=model, input="hi", stream=True))
            models = await sdk.models.list()
        assert chat.choices[0].message.content == "Hi."
        assert [e["type"] for e in events][-1] == "response.completed"
        assert models.data
        assert [(r.path, r.credential()) for r in s.fake.requests] == [
            ("/v1/chat/completions", PROVIDER_KEY),
            ("/v1/responses", PROVIDER_KEY),
            ("/v1/models", PROVIDER_KEY),
        ]
        await s.flush_records()
        rows = await interceptions(s.services)
        assert [(r.provider, r.provider_name, r.model) for r in rows] == [(ptype, ptype, model)] * 2
        for row in rows:
            assert (row.credential_kind, row.credential_hint) == (
                "centralized",
                mask_secret(PROVIDER_KEY),
            )
        assert usage_rows(await recorded(s.services, rows[0].id)) == [usage_row(USAGE, chat.id)]
        listed = (await admin_get(s, "/api/v1/interceptions"))["interceptions"]
        assert {(i["credential_kind"], i["credential_hint"]) for i in listed} == {
            ("centralized", mask_secret(PROVIDER_KEY))
        }
