"""Assumed-role credentials: cached, renewed shortly before they expire, one STS call at a
time; STS failures say what failed."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from yarl import URL

from aibridge.providers.bedrock.credentials import (
    REFRESH_MARGIN,
    AssumedRoleCredentials,
    CredentialError,
    StaticCredentials,
)
from aibridge.testing.fake_bedrock import ACCESS_KEY, SECRET_KEY, FakeSTS

ROLE = "arn:aws:iam::123456789012:role/BedrockRole"


async def test_role_credentials_are_cached_then_renewed_before_expiry() -> None:
    granted: dict[str, tuple[str, str | None]] = {}
    sts = FakeSTS(grant_to=granted, lifetime=REFRESH_MARGIN + 100)
    now = [1_000_000.0]
    async with sts.serve(), aiohttp.ClientSession() as session, asyncio.timeout(60):
        import time

        now[0] = time.time()
        creds = AssumedRoleCredentials(
            StaticCredentials(ACCESS_KEY, SECRET_KEY, None),
            role_arn=ROLE,
            external_id=None,
            region="us-east-1",
            sts_endpoint=sts.url,
            clock=lambda: now[0],
        )

        def session_for(_url: URL) -> aiohttp.ClientSession:
            return session

        first, again = await asyncio.gather(creds.get(session_for), creds.get(session_for))
        assert first is again and len(sts.calls) == 1
        assert first.access_key == "ASIAFAKEROLE00000001" and first.token == "role-token-1"
        assert "ExternalId" not in sts.calls[0]
        now[0] += 99  # still more than the margin left
        assert (await creds.get(session_for)) is first
        now[0] += 2  # now inside the margin: renewed
        renewed = await creds.get(session_for)
        assert renewed.access_key == "ASIAFAKEROLE00000002" and len(sts.calls) == 2


async def test_an_sts_refusal_is_a_credential_error_naming_the_role() -> None:
    sts = FakeSTS(grant_to={})
    async with sts.serve(), aiohttp.ClientSession() as session, asyncio.timeout(60):
        creds = AssumedRoleCredentials(
            StaticCredentials(ACCESS_KEY, "wrong-secret", None),
            role_arn=ROLE,
            external_id="x",
            region="us-east-1",
            sts_endpoint=sts.url,
        )
        with pytest.raises(CredentialError, match=f"AssumeRole for {ROLE} failed with HTTP 403"):
            await creds.get(lambda _url: session)
        assert sts.calls == []
