"""Bedrock through the gateway with the plain anthropic SDK, against the SigV4-checking fake."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from aibridge.providers.base import Provider
from aibridge.testing.agents import agent_env, find_agent, install_hint, run_agent
from aibridge.testing.fake_bedrock import ACCESS_KEY, SECRET_KEY, FakeBedrock, FakeSTS
from aibridge.testing.stack import TIMEOUT, Stack, stack

SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
OPUS = "global.anthropic.claude-opus-4-5-20251101-v1:0"
HI = [{"role": "user", "content": "hi"}]


def bedrock_settings(**extra: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "region": "us-east-1",
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "model": SONNET,
        "small_fast_model": HAIKU,
        "models": {"claude-opus-4-5": OPUS},
    }
    block.update(extra)
    return {"bedrock": block, "key_cooldown_seconds": 0}


@asynccontextmanager
async def bedrock_stack(
    sqlite_url: str, tmp_path: Path, fake: FakeBedrock, **extra: Any
) -> AsyncIterator[tuple[Stack, anthropic.AsyncAnthropic]]:
    async with fake.serve(), stack(sqlite_url, tmp_path) as s:
        await s.add_provider(
            "bedrock", "bedrock", keys=(), base_url=fake.url, settings=bedrock_settings(**extra)
        )
        sdk = anthropic.AsyncAnthropic(
            base_url=s.base + "/bedrock", api_key=s.user_token, max_retries=0
        )
        yield s, sdk


async def test_blocking_and_streaming_text_with_exact_usage_records(
    sqlite_url: str, tmp_path: Path
) -> None:
    fake = FakeBedrock()
    async with bedrock_stack(sqlite_url, tmp_path, fake) as (s, sdk), asyncio.timeout(TIMEOUT):
        msg = await sdk.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=HI)
        assert msg.content[0].type == "text"
        assert msg.content[0].text.startswith("Hello from fake Bedrock")
        async with sdk.messages.stream(
            model="claude-sonnet-4-5", max_tokens=50, messages=HI
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
        assert text.startswith("Hello from fake Bedrock")
        assert final.usage.output_tokens == 7
        assert fake.rejected == []
        paths = [r.path for r in fake.requests]
        assert paths == [
            "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke",
            "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream",
        ]
        for seen in fake.requests:
            assert "model" not in seen.body and "stream" not in seen.body
            assert seen.body["anthropic_version"] == "bedrock-2023-05-31"
            assert seen.service == "bedrock"
            assert s.user_token not in str(seen.headers)
            assert "sdk-ua-app-id/APN_1.1" in seen.headers["User-Agent"]
        await s.flush_records()
        from aibridge.testing.recorded import interceptions

        rows = await interceptions(s.services)
        assert len(rows) == 2
        for row in rows:
            assert row.provider == "bedrock"
            assert row.model == SONNET
            assert row.credential_kind == "centralized"
            assert row.credential_hint == "AKI…0001"
            assert row.error_type is None
        from sqlalchemy import select

        from aibridge.store.models import TokenUsage

        async with s.services.sessions() as session:
            usages = list((await session.execute(select(TokenUsage))).scalars())
        assert len(usages) == 2
        for u in usages:
            assert (
                u.input_tokens,
                u.output_tokens,
                u.cache_read_input_tokens,
                u.cache_write_input_tokens,
            ) == (11, 7, 5, 3)
        # The interceptions API shows the credential kind and the masked key id.
        resp = await s.client.get("/api/v1/interceptions", headers=s.admin_headers())
        listed = (await resp.json())["interceptions"]
        assert [(i["provider"], i["credential_kind"], i["credential_hint"]) for i in listed] == [
            ("bedrock", "centralized", "AKI…0001")
        ] * 2
        assert SECRET_KEY not in await resp.text()


async def test_model_map_haiku_rule_beta_filter_and_stripped_fields(
    sqlite_url: str, tmp_path: Path
) -> None:
    fake = FakeBedrock()
    async with bedrock_stack(sqlite_url, tmp_path, fake) as (_s, sdk), asyncio.timeout(TIMEOUT):
        await sdk.messages.create(
            model="claude-haiku-4-5-20251001",
            max_tokens=50,
            messages=HI,
            metadata={"user_id": "u1"},
            service_tier="auto",
            extra_headers={
                "anthropic-beta": "interleaved-thinking-2025-05-14,effort-2025-11-24,"
                "context-management-2025-06-27,files-api-2025-04-14"
            },
            extra_body={
                "container": "c1",
                "inference_geo": "us",
                "context_management": {"edits": []},
                "output_config": {"effort": "low"},
            },
        )
        await sdk.messages.create(
            model="claude-opus-4-5",
            max_tokens=32000,
            timeout=60,
            messages=HI,
            extra_headers={"anthropic-beta": "effort-2025-11-24,context-management-2025-06-27"},
            extra_body={
                "thinking": {"type": "adaptive"},
                "output_config": {"effort": "medium"},
                "context_management": {"edits": []},
            },
        )
        haiku, opus = fake.requests
        assert haiku.path == f"/model/{HAIKU.replace(':', '%3A')}/invoke"
        # haiku-4-5 keeps context-management (and its field), not effort (nor output_config).
        assert haiku.body["anthropic_beta"] == [
            "interleaved-thinking-2025-05-14",
            "context-management-2025-06-27",
        ]
        assert haiku.body["context_management"] == {"edits": []}
        for stripped in ("metadata", "service_tier", "container", "inference_geo", "output_config"):
            assert stripped not in haiku.body, stripped
        assert opus.path == f"/model/{OPUS.replace(':', '%3A')}/invoke"
        assert opus.body["anthropic_beta"] == ["effort-2025-11-24"]
        assert opus.body["output_config"] == {"effort": "medium"}
        assert "context_management" not in opus.body
        # Adaptive thinking on a model without it: a budget of half max_tokens (medium).
        assert opus.body["thinking"] == {"type": "enabled", "budget_tokens": 16000}


async def test_tool_use_and_thinking_streamed_and_recorded(sqlite_url: str, tmp_path: Path) -> None:
    fake = FakeBedrock(behaviours=["tool", "tool"])
    async with bedrock_stack(sqlite_url, tmp_path, fake) as (s, sdk), asyncio.timeout(TIMEOUT):
        async with sdk.messages.stream(model="claude-sonnet-4-5", max_tokens=50, messages=HI) as st:
            final = await st.get_final_message()
        kinds = [b.type for b in final.content]
        assert kinds == ["thinking", "tool_use"]
        assert final.content[1].input == {"file_path": "/tmp/foo"}  # type: ignore[union-attr]
        blocking = await sdk.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=HI)
        assert [b.type for b in blocking.content] == ["thinking", "tool_use"]
        await s.flush_records()
        from sqlalchemy import select

        from aibridge.store.models import ModelThought, ToolUsage

        async with s.services.sessions() as session:
            tools = list((await session.execute(select(ToolUsage))).scalars())
            thoughts = list((await session.execute(select(ModelThought))).scalars())
        assert [(t.tool, json.loads(t.input)) for t in tools] == [
            ("Read", {"file_path": "/tmp/foo"})
        ] * 2
        assert [t.content for t in thoughts] == ["I should read the file."] * 2


async def test_an_exception_frame_mid_stream_becomes_an_anthropic_error_event(
    sqlite_url: str, tmp_path: Path
) -> None:
    fake = FakeBedrock(behaviours=["exception_mid_stream"])
    async with bedrock_stack(sqlite_url, tmp_path, fake) as (s, _sdk), asyncio.timeout(TIMEOUT):
        resp = await s.client.post(
            "/bedrock/v1/messages",
            json={"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": HI, "stream": True},
            headers={"Authorization": f"Bearer {s.user_token}"},
        )
        body = await resp.text()
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = [e for e in body.split("\n\n") if e]
        assert events[0].startswith("event: message_start")
        assert events[-1].startswith("event: error")
        assert '"type":"rate_limit_error"' in events[-1]
        assert "Too many tokens, slow down" in events[-1]
        assert await s.error_types() == ["rate_limited"]


@pytest.mark.parametrize("behaviour", ["corrupt", "oversize"])
async def test_a_corrupt_or_oversized_frame_ends_the_stream_with_an_error_event(
    sqlite_url: str, tmp_path: Path, behaviour: str
) -> None:
    fake = FakeBedrock(behaviours=[behaviour])
    async with bedrock_stack(sqlite_url, tmp_path, fake) as (s, _sdk), asyncio.timeout(TIMEOUT):
        resp = await s.client.post(
            "/bedrock/v1/messages",
            json={"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": HI, "stream": True},
            headers={"Authorization": f"Bearer {s.user_token}"},
        )
        body = await resp.text()
        events = [e for e in body.split("\n\n") if e]
        assert events[0].startswith("event: message_start")
        assert len(events) == 2, events
        assert events[1].startswith("event: error")
        expected = "CRC mismatch" if behaviour == "corrupt" else "exceeds the 16777216-byte limit"
        assert expected in events[1]
        assert await s.error_types() == ["server_error"]


async def test_throttling_is_a_429_and_the_retry_succeeds(sqlite_url: str, tmp_path: Path) -> None:
    fake = FakeBedrock(behaviours=["throttle"])
    async with bedrock_stack(sqlite_url, tmp_path, fake) as (s, sdk), asyncio.timeout(TIMEOUT):
        with pytest.raises(anthropic.RateLimitError) as caught:
            await sdk.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=HI)
        assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert "Too many requests" in str(caught.value)
        msg = await sdk.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=HI)
        assert msg.content
        assert await s.error_types() == ["rate_limited", None]


async def test_throttling_cools_the_credentials_for_key_cooldown_seconds(
    sqlite_url: str, tmp_path: Path
) -> None:
    fake = FakeBedrock(behaviours=["throttle"])
    async with fake.serve(), stack(sqlite_url, tmp_path) as s, asyncio.timeout(TIMEOUT):
        settings = bedrock_settings()
        settings["key_cooldown_seconds"] = 300
        await s.add_provider("bedrock", "bedrock", keys=(), base_url=fake.url, settings=settings)
        sdk = anthropic.AsyncAnthropic(
            base_url=s.base + "/bedrock", api_key=s.user_token, max_retries=0
        )
        for _ in range(2):
            with pytest.raises(anthropic.RateLimitError) as caught:
                await sdk.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=HI)
        # The second never reached Bedrock: the credentials were cooling.
        assert len(fake.requests) == 1
        assert int(caught.value.response.headers["Retry-After"]) > 200


@pytest.mark.parametrize(
    ("behaviour", "status", "kind"),
    [
        ("validation", 400, "invalid_request_error"),
        ("access_denied", 403, "permission_error"),
        ("not_ready", 503, "overloaded_error"),
        ("throttle", 429, "rate_limit_error"),
        ("unavailable", 503, "api_error"),
    ],
)
async def test_bedrock_http_errors_become_anthropic_errors(
    sqlite_url: str, tmp_path: Path, behaviour: str, status: int, kind: str
) -> None:
    fake = FakeBedrock(behaviours=[behaviour])
    async with fake.serve(), stack(sqlite_url, tmp_path) as s, asyncio.timeout(TIMEOUT):
        settings = bedrock_settings()
        settings["key_cooldown_seconds"] = 300
        await s.add_provider("bedrock", "bedrock", keys=(), base_url=fake.url, settings=settings)
        resp = await s.client.post(
            "/bedrock/v1/messages",
            json={"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": HI},
            headers={"Authorization": f"Bearer {s.user_token}"},
        )
        assert resp.status == status
        body = await resp.json()
        assert body["type"] == "error" and body["error"]["type"] == kind
        # Only throttling cools the credentials (a model still loading does not).
        assert s.services.reloader is not None
        snap = await s.services.reloader.wait_for(lambda _snap: True)
        provider = snap.get("bedrock")
        assert isinstance(provider, Provider)
        cooling = provider.keys.state_counts()["temporary"]
        assert cooling == (1 if behaviour == "throttle" else 0)


async def test_a_stream_of_1000_events_is_relayed_without_buffering(
    sqlite_url: str, tmp_path: Path
) -> None:
    gate = asyncio.Event()
    fake = FakeBedrock(behaviours=["many"], gate=gate, many_events=1000)
    async with bedrock_stack(sqlite_url, tmp_path, fake) as (s, _sdk), asyncio.timeout(TIMEOUT):
        resp = await s.client.post(
            "/bedrock/v1/messages",
            json={"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": HI, "stream": True},
            headers={"Authorization": f"Bearer {s.user_token}"},
        )
        first = await resp.content.readuntil(b"\n\n")
        # The first event is here while the fake holds back the other 1,000 until told.
        assert first.startswith(b"event: message_start")
        assert not fake.sent_all.is_set()
        gate.set()
        rest = await resp.content.read()
        deltas = rest.count(b"event: content_block_delta")
        assert deltas == 1000
        assert rest.rstrip().endswith(b'"invocationLatency":12,"firstByteLatency":5}}')
        assert await s.error_types() == [None]


async def test_models_list_in_anthropic_shape(sqlite_url: str, tmp_path: Path) -> None:
    fake = FakeBedrock()
    async with bedrock_stack(sqlite_url, tmp_path, fake) as (_s, sdk), asyncio.timeout(TIMEOUT):
        page = await sdk.models.list()
        assert [m.id for m in page.data] == ["claude-opus-4-5", SONNET, HAIKU]
        one = await sdk.models.retrieve("claude-opus-4-5")
        assert one.id == "claude-opus-4-5"
        with pytest.raises(anthropic.NotFoundError):
            await sdk.models.retrieve("gpt-4")
        assert fake.requests == []


async def test_mantle_sends_the_body_unchanged_signed_for_bedrock_mantle(
    sqlite_url: str, tmp_path: Path
) -> None:
    fake = FakeBedrock(service="bedrock-mantle")
    async with fake.serve(), stack(sqlite_url, tmp_path) as s, asyncio.timeout(TIMEOUT):
        settings = bedrock_settings(protocol="mantle")
        await s.add_provider(
            "mantle", "bedrock", keys=(), base_url=fake.url + "/anthropic", settings=settings
        )
        sdk = anthropic.AsyncAnthropic(
            base_url=s.base + "/mantle", api_key=s.user_token, max_retries=0
        )
        msg = await sdk.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=HI)
        assert msg.content[0].text.startswith("Hello from mantle")  # type: ignore[union-attr]
        async with sdk.messages.stream(model="claude-sonnet-4-5", max_tokens=5, messages=HI) as st:
            final = await st.get_final_message()
        assert final.usage.output_tokens == 7
        assert fake.rejected == []
        assert [r.path for r in fake.requests] == ["/anthropic/v1/messages"] * 2
        assert fake.requests[0].body == {
            "model": "claude-sonnet-4-5",
            "max_tokens": 5,
            "messages": HI,
        }
        assert {r.service for r in fake.requests} == {"bedrock-mantle"}
        # The OpenAI chat API is served over mantle too, at the host's /v1.
        oai = openai.AsyncOpenAI(
            base_url=s.base + "/mantle/v1", api_key=s.user_token, max_retries=0
        )
        chat = await oai.chat.completions.create(model="openai.gpt-oss-120b", messages=HI)
        assert chat.choices[0].message.content == "Hello from mantle chat"
        assert fake.requests[-1].path == "/v1/chat/completions"
        assert fake.requests[-1].body["model"] == "openai.gpt-oss-120b"
        assert fake.rejected == []
        await s.flush_records()
        assert await s.error_types() == [None, None, None]


async def test_assumed_role_credentials_from_a_fake_sts_are_cached(
    sqlite_url: str, tmp_path: Path
) -> None:
    fake = FakeBedrock()
    fake.credentials = {}  # only the role's temporary credentials are accepted
    sts = FakeSTS(grant_to=fake.credentials)
    async with fake.serve(), sts.serve(), stack(sqlite_url, tmp_path) as s:
        settings = bedrock_settings(
            role_arn="arn:aws:iam::123456789012:role/BedrockRole",
            external_id="ext-123",
            sts_endpoint=sts.url,
        )
        async with asyncio.timeout(TIMEOUT):
            await s.add_provider(
                "bedrock", "bedrock", keys=(), base_url=fake.url, settings=settings
            )
            sdk = anthropic.AsyncAnthropic(
                base_url=s.base + "/bedrock", api_key=s.user_token, max_retries=0
            )
            for _ in range(2):
                await sdk.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=HI)
        assert fake.rejected == []
        assert [r.access_key for r in fake.requests] == ["ASIAFAKEROLE00000001"] * 2
        assert len(sts.calls) == 1
        call = sts.calls[0]
        assert call["RoleArn"] == "arn:aws:iam::123456789012:role/BedrockRole"
        assert call["ExternalId"] == "ext-123"
        assert call["RoleSessionName"] == "aibridge"


def no_aws_chain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An environment where the AWS credential chain finds nothing (and asks no IMDS)."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


async def test_the_aws_credential_chain_signs_when_no_keys_are_set(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_aws_chain(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    fake = FakeBedrock()
    async with fake.serve(), stack(sqlite_url, tmp_path) as s, asyncio.timeout(TIMEOUT):
        settings = {"bedrock": {"region": "us-east-1", "model": SONNET}}
        await s.add_provider("bedrock", "bedrock", keys=(), base_url=fake.url, settings=settings)
        sdk = anthropic.AsyncAnthropic(
            base_url=s.base + "/bedrock", api_key=s.user_token, max_retries=0
        )
        await sdk.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=HI)
        assert fake.rejected == [] and len(fake.requests) == 1
        row = (await s.only_recording()).interception
        assert (row.credential_kind, row.credential_hint) == ("centralized", "<aws chain>")
        assert row.meta == {"aws_bedrock": True, "bedrock_protocol": "invoke"}


async def test_admin_api_hides_the_secret_and_refuses_api_keys(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeBedrock()
    async with bedrock_stack(sqlite_url, tmp_path, fake) as (s, sdk), asyncio.timeout(TIMEOUT):
        headers = s.admin_headers()
        resp = await s.client.get("/api/v1/providers/bedrock", headers=headers)
        shown = await resp.json()
        assert SECRET_KEY not in await resp.text()
        assert shown["settings"]["bedrock"]["secret_access_key"] == "fak…0000"
        # Sending the block back without the secret (or masked) keeps it.
        block = dict(shown["settings"]["bedrock"], model=OPUS)
        resp = await s.client.patch(
            "/api/v1/providers/bedrock",
            json={"settings": {"bedrock": block, "key_cooldown_seconds": 0}},
            headers=headers,
        )
        assert resp.status == 200, await resp.text()
        await s.wait_for_provider(
            "bedrock", lambda p: p is not None and p.bedrock.settings.model == OPUS
        )
        await sdk.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=HI)
        assert fake.rejected == [] and OPUS.replace(":", "%3A") in fake.requests[-1].path
        resp = await s.client.patch(
            "/api/v1/providers/bedrock", json={"api_keys": [{"api_key": "sk-x"}]}, headers=headers
        )
        assert resp.status == 400
        assert "does not accept api_keys" in await resp.text()
        resp = await s.client.post(
            "/api/v1/providers",
            json={"type": "bedrock", "name": "b2", "settings": {"bedrock": {"model": SONNET}}},
            headers=headers,
        )
        assert resp.status == 400
        assert "region or base_url required" in await resp.text()
        chain_only = {
            "type": "bedrock",
            "name": "b3",
            "settings": {"bedrock": {"region": "eu-west-1", "model": SONNET}},
        }
        no_aws_chain(monkeypatch, tmp_path)
        resp = await s.client.post("/api/v1/providers", json=chain_only, headers=headers)
        assert resp.status == 400
        assert "bedrock provider has no credentials" in await resp.text()
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        resp = await s.client.post("/api/v1/providers", json=chain_only, headers=headers)
        assert resp.status == 201, await resp.text()
        created = await resp.json()
        assert created["base_url"] == "https://bedrock-runtime.eu-west-1.amazonaws.com"


async def test_a_request_without_a_gateway_key_never_reaches_bedrock(
    sqlite_url: str, tmp_path: Path
) -> None:
    fake = FakeBedrock()
    async with bedrock_stack(sqlite_url, tmp_path, fake) as (s, _sdk), asyncio.timeout(TIMEOUT):
        async with aiohttp.ClientSession() as session:
            resp = await session.post(
                s.base + "/bedrock/v1/messages",
                json={"model": "m", "max_tokens": 5, "messages": HI},
            )
            assert resp.status == 401
        assert fake.requests == []


async def test_claude_code_works_unchanged_against_a_bedrock_provider(
    sqlite_url: str, tmp_path: Path
) -> None:
    claude = find_agent("claude")
    if claude is None:
        pytest.skip("claude is not installed: " + install_hint("@anthropic-ai/claude-code"))
    fake = FakeBedrock()
    async with bedrock_stack(sqlite_url, tmp_path / "gw", fake) as (s, _sdk):
        home = tmp_path / "home"
        home.mkdir()
        env = agent_env(home) | {
            "ANTHROPIC_BASE_URL": f"{s.base}/bedrock",
            "ANTHROPIC_API_KEY": s.user_token,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
        }
        code, out, err = await run_agent(
            [claude, "-p", "Say hello.", "--model", "claude-sonnet-4-5"], env, home
        )
        assert code == 0, f"claude failed ({code}): {err[-2000:]}"
        assert "Hello from fake Bedrock" in out
        assert fake.rejected == []
        assert fake.requests, "Claude Code's request never reached Bedrock"
        await s.flush_records()
        from aibridge.testing.recorded import interceptions

        rows = await interceptions(s.services)
        assert rows and all(r.provider == "bedrock" and r.error_type is None for r in rows)
        assert {r.model for r in rows} <= {SONNET, HAIKU}
