"""End to end: OpenAI Chat Completions through the gateway with the official async SDK.

Every scenario runs twice, through the gateway and straight at the fake upstream, and the SDK
results must be equal (ids aside). Recording, errors, gateway auth and the OpenAI passthrough
routes (models, legacy completions, openai-compat and azure providers) are covered here too;
Anthropic Messages and resilience (disconnects, failover, breaker, DB outage) live elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import msgspec
import openai
import orjson
import pytest

from aibridge.fakellm import Scenario
from aibridge.fakellm.openai_chat import error_body
from aibridge.testing.openai_sdk import (
    CODEX_UA,
    PROVIDER_KEY,
    SCENARIOS,
    STATUS_ERRORS,
    admin_tokens,
    assert_admin_reports,
    assert_codex_interception,
    assert_unreachable_upstream,
    collect,
    direct_sdk,
    gateway_sdk,
    header_values,
    normalize,
    nth_recording,
    openai_stack,
    refusing_port,
    sse_events,
    usage_row,
    usage_rows,
)
from aibridge.testing.recorded import interceptions
from aibridge.testing.stack import TIMEOUT, stack

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current time in a timezone.",
            "parameters": {
                "type": "object",
                "properties": {"timezone": {"type": "string"}, "format": {"type": "string"}},
                "required": ["timezone"],
            },
        },
    },
]


def chat_request(prompt: str = "What is the weather in Paris?", **extra: Any) -> dict[str, Any]:
    """Keyword arguments for ``chat.completions.create``."""
    return {
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": prompt},
        ],
        "tools": TOOLS,
        **extra,
    }


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_a_blocking_completion_through_the_gateway_equals_the_one_from_upstream(
    name: str, sqlite_url: str, tmp_path: Path
) -> None:
    """The SDK result through the gateway equals the one straight from the upstream."""
    scenario = SCENARIOS[name]()
    async with openai_stack(sqlite_url, tmp_path, scenario, scenario) as s:
        async with asyncio.timeout(TIMEOUT):
            direct = await direct_sdk(s).chat.completions.create(**chat_request())
            via = await gateway_sdk(s).chat.completions.create(**chat_request())
        assert normalize(via.model_dump()) == normalize(direct.model_dump())
        # Guard against both sides being equally empty: the scenario's content arrived.
        message = via.choices[0].message
        assert message.content == (scenario.text or None)
        calls = message.tool_calls or []
        assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
            (c.name, c.arguments) for c in scenario.tool_calls
        ]
        assert via.usage is not None
        assert via.usage.prompt_tokens == scenario.usage.openai_input_tokens()
        assert via.usage.prompt_tokens_details is not None
        assert via.usage.prompt_tokens_details.cached_tokens == scenario.usage.cache_read_tokens
        assert via.usage.completion_tokens_details is not None
        assert (
            via.usage.completion_tokens_details.reasoning_tokens == scenario.usage.reasoning_tokens
        )


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_streaming_parity_without_include_usage(
    name: str, sqlite_url: str, tmp_path: Path
) -> None:
    """A client that did not ask for usage gets exactly the chunks the upstream would send
    it: the usage-only chunk the gateway asked for is hidden (every chunk has choices)."""
    scenario = SCENARIOS[name]()
    async with openai_stack(sqlite_url, tmp_path, scenario, scenario) as s:
        async with asyncio.timeout(TIMEOUT):
            direct = await collect(
                await direct_sdk(s).chat.completions.create(**chat_request(), stream=True)
            )
            via = await collect(
                await gateway_sdk(s).chat.completions.create(**chat_request(), stream=True)
            )
        upstream = s.fake.requests[-1]
        assert upstream.json["stream_options"] == {"include_usage": True}
        assert normalize(via) == normalize(direct)
        assert all(chunk["choices"] for chunk in via), "a usage-only chunk leaked to the client"
        assert all(chunk["usage"] is None for chunk in via)
        text = "".join(c["choices"][0]["delta"]["content"] or "" for c in via)
        assert text == scenario.text


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_streaming_parity_with_include_usage(
    name: str, sqlite_url: str, tmp_path: Path
) -> None:
    """A client that asked for usage gets the usage chunk exactly once, with the numbers."""
    scenario = SCENARIOS[name]()
    async with openai_stack(sqlite_url, tmp_path, scenario, scenario) as s:
        req = chat_request(stream=True, stream_options={"include_usage": True})
        async with asyncio.timeout(TIMEOUT):
            direct = await collect(await direct_sdk(s).chat.completions.create(**req))
            via = await collect(await gateway_sdk(s).chat.completions.create(**req))
        assert normalize(via) == normalize(direct)
        usage_chunks = [c for c in via if c["usage"] is not None]
        assert len(usage_chunks) == 1
        assert usage_chunks[0]["choices"] == []
        assert via[-1] is usage_chunks[0]
        usage = usage_chunks[0]["usage"]
        assert usage["prompt_tokens"] == scenario.usage.openai_input_tokens()
        assert usage["completion_tokens"] == scenario.usage.output_tokens
        assert usage["prompt_tokens_details"]["cached_tokens"] == scenario.usage.cache_read_tokens
        assert (
            usage["completion_tokens_details"]["reasoning_tokens"]
            == scenario.usage.reasoning_tokens
        )


# --------------------------------------------------------------------------- upstream body

# Hand-written so whitespace, key order, unicode escapes and unknown fields are all visible.
_RAW_BODY = (
    b'{"model": "gpt-4.1",  "messages": [{"role": "user", "content": "caf\\u00e9 \xe2\x98\x95"}],'
    b' "stream": true, "x_vendor_field": {"keep": [1, 2.50, "three"]},'
    b' "stream_options": {"include_obfuscation": false}, "temperature": 0.20}'
)


def _members(body: bytes) -> dict[str, bytes]:
    raw = msgspec.json.decode(body, type=dict[str, msgspec.Raw])
    return {k: bytes(v) for k, v in raw.items()}


async def test_stream_upstream_body_forces_include_usage_and_keeps_the_rest(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Upstream sees include_usage=true, every other member byte for byte (stream_options'
    own members kept), and the client still gets no usage-only chunk."""
    async with openai_stack(sqlite_url, tmp_path) as s:
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.post(
                "/openai/v1/chat/completions",
                data=_RAW_BODY,
                headers={
                    "Authorization": f"Bearer {s.user_token}",
                    "Content-Type": "application/json",
                },
            )
            assert resp.status == 200, await resp.text()
            raw = await resp.read()
        sent = s.fake.requests[-1]
        assert sent.json["stream_options"] == {"include_obfuscation": False, "include_usage": True}
        client_members, upstream_members = _members(_RAW_BODY), _members(sent.body)
        assert list(upstream_members) == list(client_members)
        for key, value in client_members.items():
            if key != "stream_options":
                assert upstream_members[key] == value, key
        events = sse_events(raw)
        assert events[-1] == (None, b"[DONE]")
        chunks = [orjson.loads(data) for _, data in events[:-1]]
        assert chunks and all(chunk["choices"] for chunk in chunks)
        rec = await s.only_recording()
        assert len(rec.token_usages) == 1
        assert rec.token_usages[0].output_tokens == s.fake.fallback.usage.output_tokens


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            b'{"model":"gpt-4.1", "stream":true, "stream_options":{"include_usage":true},'
            b' "messages":[{"role":"user","content":"hi"}]}',
            id="stream-with-include-usage",
        ),
        pytest.param(
            b'{"model":"gpt-4.1",\n "messages":[{"role":"user","content":"hi"}], "n": 1}',
            id="blocking",
        ),
    ],
)
async def test_upstream_body_is_byte_identical_when_nothing_to_add(
    body: bytes, sqlite_url: str, tmp_path: Path
) -> None:
    """Blocking requests and streams that already ask for usage are forwarded unchanged."""
    async with openai_stack(sqlite_url, tmp_path) as s:
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.post(
                "/openai/v1/chat/completions",
                data=body,
                headers={"Authorization": f"Bearer {s.user_token}"},
            )
            assert resp.status == 200, await resp.text()
            raw = await resp.read()
        assert s.fake.requests[-1].body == body
        if b'"stream":true' in body:
            usage_only = [
                e for e in sse_events(raw)[:-1] if orjson.loads(e[1]).get("choices") == []
            ]
            assert len(usage_only) == 1


# --------------------------------------------------------------------------- recording


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streaming"])
async def test_each_completion_records_one_interception_with_usage_prompt_and_tool_calls(
    stream: bool, db_url: str, tmp_path: Path
) -> None:
    """One interception per request with the client, session, usage (uncached input),
    prompt and tool calls; the admin listing and usage-by-model report the same numbers."""
    async with openai_stack(db_url, tmp_path) as s:
        dev = await s.member_id()
        expected: dict[str, dict[str, Any]] = {}
        for n, (name, make) in enumerate(SCENARIOS.items(), start=1):
            scenario = make()
            model, prompt, session = f"gpt-{name}", f"prompt for {name}", f"sess-{name}"
            s.fake.enqueue(scenario)
            sdk = gateway_sdk(s, headers={"User-Agent": CODEX_UA, "session_id": session})
            req = chat_request(prompt, model=model)
            async with asyncio.timeout(TIMEOUT):
                if stream:
                    await collect(await sdk.chat.completions.create(**req, stream=True))
                else:
                    await sdk.chat.completions.create(**req)
            upstream = s.fake.requests[-1]
            assert upstream.scenario is scenario
            rec = await nth_recording(s, n, model)
            assert_codex_interception(rec, model, dev, session)
            i = rec.interception
            # Time-ordered ids: the interceptions index appends (ids.py).
            assert uuid.UUID(str(i.id)).version == 7
            assert i.credential_kind == "centralized"
            assert i.credential_hint is not None and PROVIDER_KEY not in i.credential_hint
            u = scenario.usage
            assert usage_rows(rec) == [usage_row(u, upstream.response_id)]
            assert [p.prompt for p in rec.prompts] == [prompt]
            calls = sorted(
                (t.provider_tool_call_id, t.tool, json.loads(t.input), t.injected)
                for t in rec.tool_usages
            )
            want_calls = sorted(
                (cid, c.name, c.arguments, False)
                for c, cid in zip(scenario.tool_calls, upstream.tool_call_ids, strict=True)
            )
            assert calls == want_calls
            # Chat carries only reasoning_tokens, no reasoning text: nothing to record.
            assert rec.thoughts == []
            expected[model] = {
                "tokens": admin_tokens(u),
                "prompt": prompt,
                "session": session,
                "calls": [
                    {"name": name_, "call_id": cid, "arguments": args}
                    for cid, name_, args, _ in want_calls
                ],
            }
        items = await assert_admin_reports(s, expected)
        for item in items.values():
            assert item["user"]["username"] == "dev"
            assert item["provider"] == "openai" and item["error_type"] is None


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streaming"])
@pytest.mark.parametrize("status", sorted(STATUS_ERRORS))
async def test_an_upstream_http_error_reaches_the_sdk_unchanged_and_is_recorded(
    status: int, stream: bool, sqlite_url: str, tmp_path: Path
) -> None:
    """An upstream 4xx/5xx reaches the client with its status and OpenAI body, as the
    SDK's own exception; the interception records the error type."""
    exc_type, error_type = STATUS_ERRORS[status]
    async with openai_stack(sqlite_url, tmp_path, Scenario.http_error(status)) as s:
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(openai.APIStatusError) as info:
                await gateway_sdk(s).chat.completions.create(**chat_request(), stream=stream)
        exc = info.value
        assert type(exc) is exc_type
        assert exc.status_code == status
        assert exc.response.headers["content-type"].startswith("application/json")
        assert exc.response.json() == error_body(status)
        assert s.fake.requests[-1].status == status
        rec = await s.only_recording()
        assert rec.interception.error_type == error_type
        assert rec.interception.error_message == error_body(status)["error"]["message"]
        assert rec.token_usages == []


async def test_single_key_rate_limited_exhausts_pool(sqlite_url: str, tmp_path: Path) -> None:
    """Upstream 429 on the only key: the key cools for the upstream's Retry-After and the
    client gets 429 + Retry-After in OpenAI's shape. A second request does not hammer the
    upstream while the key cools down."""
    async with openai_stack(sqlite_url, tmp_path) as s:
        s.fake.key_scenarios[PROVIDER_KEY] = Scenario.http_error(429, retry_after="7")
        sdk = gateway_sdk(s)
        for attempt in (1, 2):
            async with asyncio.timeout(TIMEOUT):
                with pytest.raises(openai.RateLimitError) as info:
                    await sdk.chat.completions.create(**chat_request())
            exc = info.value
            assert exc.status_code == 429
            retry_after = int(exc.response.headers["retry-after"])
            assert 1 <= retry_after <= 7
            err = exc.response.json()["error"]
            assert err["type"] == "rate_limit_exceeded"
            assert err["message"].startswith("all configured keys are rate-limited (retry after ")
            assert len(s.fake.requests) == 1, f"attempt {attempt} reached the cooling key"
        assert await s.error_types() == ["rate_limited", "rate_limited"]


async def test_single_key_unauthorized_exhausts_pool(sqlite_url: str, tmp_path: Path) -> None:
    """Upstream 401 on the only key: the client's gateway key is fine, so it gets a 502
    (not a misleading 401) saying the configured keys failed; recorded as unauthorized."""
    async with openai_stack(sqlite_url, tmp_path) as s:
        s.fake.key_scenarios[PROVIDER_KEY] = Scenario.http_error(401)
        sdk = gateway_sdk(s)
        for _ in (1, 2):
            async with asyncio.timeout(TIMEOUT):
                with pytest.raises(openai.InternalServerError) as info:
                    await sdk.chat.completions.create(**chat_request())
            exc = info.value
            assert exc.status_code == 502
            assert "retry-after" not in exc.response.headers
            err = exc.response.json()["error"]
            assert err["type"] == "server_error"
            assert err["message"] == (
                "all configured keys failed authentication. Contact your Administrator"
            )
        assert len(s.fake.requests) == 1, "the failed key was retried while cooling down"
        assert await s.error_types() == ["unauthorized", "unauthorized"]


async def test_a_mid_stream_error_chunk_is_relayed_and_recorded_as_the_error(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A ``data: {"error":…}`` chunk mid-stream is relayed: the SDK raises it after the
    chunks before it; the interception gets the error type, the prompt is still recorded."""
    async with openai_stack(
        sqlite_url, tmp_path, Scenario.stream_error(error_message="boom upstream", deltas_before=2)
    ) as s:
        got: list[Any] = []
        async with asyncio.timeout(TIMEOUT):
            stream = await gateway_sdk(s).chat.completions.create(**chat_request(), stream=True)
            with pytest.raises(openai.APIError) as info:
                async for chunk in stream:
                    got.append(chunk)
        assert info.value.message == "boom upstream"
        assert not isinstance(info.value, openai.APIStatusError)
        text = "".join(c.choices[0].delta.content or "" for c in got)
        assert text and Scenario.text_reply().text.startswith(text)
        rec = await s.only_recording()
        assert rec.interception.error_type == "server_error"
        assert rec.interception.error_message == "boom upstream"
        assert [p.prompt for p in rec.prompts] == ["What is the weather in Paris?"]
        assert rec.token_usages == []


async def test_an_upstream_drop_mid_stream_ends_with_an_error_chunk_and_done(
    sqlite_url: str, tmp_path: Path
) -> None:
    """The upstream connection dies mid-stream: the client gets the chunks so far, then an
    OpenAI error chunk and ``[DONE]``, and the stream ends; the SDK raises the error."""
    async with openai_stack(
        sqlite_url, tmp_path, Scenario.drop(deltas_before=2), Scenario.drop(deltas_before=2)
    ) as s:
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.post(
                "/openai/v1/chat/completions",
                json=chat_request(stream=True),
                headers={"Authorization": f"Bearer {s.user_token}"},
            )
            assert resp.status == 200
            raw = await resp.read()
        assert s.fake.requests[-1].dropped
        events = sse_events(raw)
        assert events[-1] == (None, b"[DONE]")
        error = orjson.loads(events[-2][1])["error"]
        assert error["type"] == "server_error"
        assert error["message"].startswith("upstream stream broke")
        assert all("choices" in orjson.loads(data) for _, data in events[:-2])
        assert len(events) >= 4  # role chunk, two deltas, error, [DONE]
        async with asyncio.timeout(TIMEOUT):
            stream = await gateway_sdk(s).chat.completions.create(**chat_request(), stream=True)
            with pytest.raises(openai.APIError) as info:
                async for _ in stream:
                    pass
        assert info.value.message.startswith("upstream stream broke")
        assert await s.error_types() == ["server_error", "server_error"]


async def test_an_unreachable_upstream_is_an_openai_shaped_502(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Nothing listens at the provider's base URL: 502 in OpenAI's shape, for both modes."""
    with refusing_port() as port:
        async with stack(sqlite_url, tmp_path) as s:
            await s.add_provider("openai", "openai", base_url=f"http://127.0.0.1:{port}/v1")
            sdk = gateway_sdk(s)
            await assert_unreachable_upstream(
                s, lambda stream: sdk.chat.completions.create(**chat_request(), stream=stream)
            )


# --------------------------------------------------------------------------- gateway auth


async def test_missing_gateway_key_is_openai_shaped_401(sqlite_url: str, tmp_path: Path) -> None:
    async with openai_stack(sqlite_url, tmp_path) as s:
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.post("/openai/v1/chat/completions", json=chat_request())
            assert resp.status == 401
            body = await resp.json()
        assert set(body) == {"error"}
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["code"] == "invalid_api_key"
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
        assert s.fake.requests == []


async def test_invalid_gateway_key_raises_authentication_error(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with openai_stack(sqlite_url, tmp_path) as s:
        sdk = gateway_sdk(s, api_key="aib-nope-notarealkey")
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(openai.AuthenticationError) as info:
                await sdk.chat.completions.create(**chat_request())
            with pytest.raises(openai.AuthenticationError):
                await sdk.chat.completions.create(**chat_request(), stream=True)
        assert info.value.status_code == 401
        assert set(info.value.response.json()) == {"error"}
        assert s.fake.requests == []
        await s.flush_records()
        assert await interceptions(s.services) == []


async def test_gateway_key_never_reaches_upstream(sqlite_url: str, tmp_path: Path) -> None:
    """Bearer and X-Api-Key both authenticate the client; upstream gets exactly one
    ``Authorization: Bearer <provider key>`` and neither the gateway key nor X-Api-Key."""
    async with openai_stack(sqlite_url, tmp_path) as s:
        async with asyncio.timeout(TIMEOUT):
            await gateway_sdk(s).chat.completions.create(**chat_request())
            resp = await s.client.post(
                "/openai/v1/chat/completions",
                json=chat_request(stream=True),
                headers={"X-Api-Key": s.user_token},
            )
            assert resp.status == 200, await resp.text()
            await resp.read()
        assert len(s.fake.requests) == 2
        for seen in s.fake.requests:
            assert seen.headers.getall("Authorization") == [f"Bearer {PROVIDER_KEY}"]
            assert "X-Api-Key" not in seen.headers
            assert not any(s.user_token in v for v in header_values(seen.headers))
            assert s.user_token.encode() not in seen.body


# --------------------------------------------------------------------------- passthrough


async def test_models_pass_through_with_the_provider_key_and_record_nothing(
    sqlite_url: str, tmp_path: Path
) -> None:
    """GET /models reaches the fake with the provider key and the query; nothing recorded."""
    async with openai_stack(sqlite_url, tmp_path) as s:
        async with asyncio.timeout(TIMEOUT):
            page = await gateway_sdk(s).models.list(extra_query={"limit": "2", "tag": "a b"})
            direct = await direct_sdk(s).models.list()
            model = await gateway_sdk(s).models.retrieve("gpt-5")
        assert [m.id for m in page.data] == [m.id for m in direct.data]
        assert model.id == "gpt-5"
        seen = s.fake.requests[0]
        assert (seen.method, seen.path) == ("GET", "/v1/models")
        assert dict(seen.query) == {"limit": "2", "tag": "a b"}
        assert seen.headers.getall("Authorization") == [f"Bearer {PROVIDER_KEY}"]
        assert s.fake.requests[2].path == "/v1/models/gpt-5"
        assert s.fake.requests[2].credential() == PROVIDER_KEY
        await s.flush_records()
        assert await interceptions(s.services) == []


async def test_legacy_completions_are_a_404_that_never_reach_upstream(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with openai_stack(sqlite_url, tmp_path) as s:
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(openai.NotFoundError) as info:
                await gateway_sdk(s).completions.create(model="gpt-3.5-turbo-instruct", prompt="x")
        assert "route not supported: POST /openai/v1/completions" in str(info.value.body)
        assert s.fake.requests == []


async def test_an_openai_compat_provider_is_bridged_under_its_own_name(
    sqlite_url: str, tmp_path: Path
) -> None:
    """An ``openai-compat`` provider is bridged like OpenAI under its own name."""
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("compat", "openai-compat", keys=["sk-compat-000000000001"])
        async with asyncio.timeout(TIMEOUT):
            chat = await gateway_sdk(s, provider="compat").chat.completions.create(**chat_request())
        assert chat.choices[0].message.content
        seen = s.fake.requests[-1]
        assert (seen.path, seen.api) == ("/v1/chat/completions", "chat")
        assert seen.headers.getall("Authorization") == ["Bearer sk-compat-000000000001"]
        rec = await s.only_recording()
        assert (rec.interception.provider, rec.interception.provider_name) == (
            "openai-compat",
            "compat",
        )


@pytest.mark.parametrize(
    ("settings", "version"),
    [(None, "2024-10-21"), ({"api_version": "2025-04-01-preview"}, "2025-04-01-preview")],
    ids=["default-version", "configured-version"],
)
async def test_azure_gets_its_key_in_api_key_and_api_version_in_the_query(
    settings: dict[str, Any] | None, version: str, sqlite_url: str, tmp_path: Path
) -> None:
    """Azure: the key goes in ``api-key`` (no Authorization), ``api-version`` is added to the
    query of bridged and passthrough calls alike."""
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("azure", "azure", keys=["azure-key-0000000001"], settings=settings)
        sdk = gateway_sdk(s, provider="azure")
        async with asyncio.timeout(TIMEOUT):
            await sdk.chat.completions.create(**chat_request())
            await collect(await sdk.chat.completions.create(**chat_request(), stream=True))
            await sdk.models.list()
        assert [r.path for r in s.fake.requests] == [
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/models",
        ]
        for seen in s.fake.requests:
            assert seen.headers.getall("api-key") == ["azure-key-0000000001"]
            assert "Authorization" not in seen.headers
            assert seen.query.getall("api-version") == [version]
        await s.flush_records()
        rows = await interceptions(s.services)
        assert [(r.provider, r.provider_name) for r in rows] == [("azure", "azure")] * 2
