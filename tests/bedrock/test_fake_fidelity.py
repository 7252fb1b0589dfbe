"""The fake Bedrock is faithful: the anthropic SDK's own Bedrock client (AnthropicBedrock,
botocore SigV4 and event-stream decoding) works against it, and a bad signature is refused."""

from __future__ import annotations

import asyncio

import anthropic
import pytest
from anthropic import AsyncAnthropicBedrock

from aibridge.testing.fake_bedrock import ACCESS_KEY, REGION, SECRET_KEY, FakeBedrock

TIMEOUT = 60.0


def _client(url: str, secret: str = SECRET_KEY) -> AsyncAnthropicBedrock:
    return AsyncAnthropicBedrock(
        aws_access_key=ACCESS_KEY,
        aws_secret_key=secret,
        aws_region=REGION,
        base_url=url,
        max_retries=0,
    )


async def test_anthropic_bedrock_client_blocking_and_streaming_against_the_fake() -> None:
    fake = FakeBedrock()
    async with fake.serve(), asyncio.timeout(TIMEOUT):
        sdk = _client(fake.url)
        model = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
        msg = await sdk.messages.create(
            model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )
        assert msg.content[0].type == "text"
        assert msg.content[0].text.startswith("Hello from fake Bedrock")
        assert msg.usage.input_tokens == 11 and msg.usage.output_tokens == 7
        async with sdk.messages.stream(
            model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
        assert text.startswith("Hello from fake Bedrock")
        assert final.usage.output_tokens == 7
        assert final.usage.cache_read_input_tokens == 5
        # The SDK put the model in the path and left model/stream out of the body.
        assert [r.path.rsplit("/", 1)[-1] for r in fake.requests] == [
            "invoke",
            "invoke-with-response-stream",
        ]
        assert all("model" not in r.body and "stream" not in r.body for r in fake.requests)
        assert "anthropic_version" in fake.requests[0].body
        assert fake.rejected == []


async def test_the_fake_refuses_a_wrong_signature_and_speaks_bedrock_errors() -> None:
    fake = FakeBedrock()
    async with fake.serve(), asyncio.timeout(TIMEOUT):
        with pytest.raises(anthropic.PermissionDeniedError):
            await _client(fake.url, secret="not-the-secret").messages.create(
                model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
        assert fake.rejected == ["signature mismatch"]
        fake.behaviours = ["throttle"]
        with pytest.raises(anthropic.RateLimitError):
            await _client(fake.url).messages.create(
                model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )


async def test_an_exception_frame_mid_stream_reaches_the_sdk_as_an_error() -> None:
    fake = FakeBedrock(behaviours=["exception_mid_stream"])
    async with fake.serve(), asyncio.timeout(TIMEOUT):
        with pytest.raises(anthropic.APIError):
            async with _client(fake.url).messages.stream(
                model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                async for _ in stream:
                    pass
