"""Fixtures of the fake upstream's tests: a running FakeLLM and official SDK clients on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import openai
import pytest

from aibridge.fakellm import FakeLLM


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    """A FakeLLM on an ephemeral loopback port."""
    async with FakeLLM().serve() as f:
        yield f


@pytest.fixture
async def claude(fake: FakeLLM) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """The Anthropic SDK pointed at :func:`fake` (no retries)."""
    client = anthropic.AsyncAnthropic(base_url=fake.url, api_key="sk-ant-test", max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def oai(fake: FakeLLM) -> AsyncIterator[openai.AsyncOpenAI]:
    """The OpenAI SDK pointed at :func:`fake` (no retries)."""
    client = openai.AsyncOpenAI(base_url=fake.openai_url, api_key="sk-test", max_retries=0)
    yield client
    await client.close()
