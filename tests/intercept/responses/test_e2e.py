"""End to end: OpenAI Responses through the gateway with the official async SDK.

The gateway relays Responses bytes unchanged (response ids included, which
``previous_response_id`` workflows depend on) and records usage from the completed response.
Every scenario runs through the gateway and straight at the fake upstream and the SDK
results must be equal (ids aside); the relayed bytes must equal the bytes the fake sent.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import openai
import orjson
import pytest

from aibridge.fakellm import Scenario
from aibridge.fakellm import openai_responses as wire
from aibridge.fakellm.openai_chat import error_body
from aibridge.fakellm.scenario import DEFAULT_THINKING
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
    normalize,
    nth_recording,
    openai_stack,
    refusing_port,
    sse_events,
    usage_row,
    usage_rows,
)
from aibridge.testing.recorded import interceptions
from aibridge.testing.stack import TIMEOUT, Stack, stack

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
    {
        "type": "function",
        "name": "get_time",
        "description": "Current time in a timezone.",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}, "format": {"type": "string"}},
            "required": ["timezone", "format"],
            "additionalProperties": False,
        },
        "strict": True,
    },
]


def responses_request(
    prompt: str = "What is the weather in Paris?", **extra: Any
) -> dict[str, Any]:
    """Keyword arguments for ``responses.create`` (a Codex-like request)."""
    return {
        "model": "gpt-5",
        "instructions": "You are terse.",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": prompt}]}],
        "tools": TOOLS,
        "reasoning": {"effort": "low", "summary": "auto"},
        **extra,
    }


def upstream_stream_bytes(s: Stack, scenario: Scenario) -> bytes:
    """Re-create the exact SSE bytes the fake sent for its last Responses stream, from the
    request it logged and the response it stored (same generator, same ids)."""
    seen = s.fake.requests[-1]
    assert seen.response_id is not None
    stored = s.fake.responses[seen.response_id]
    ids = wire.Ids(scenario)
    ids.response_id, ids.created = stored["id"], stored["created_at"]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for item in stored["output"]:
        by_type.setdefault(item["type"], []).append(item)
    ids.reasoning_id = by_type.get("reasoning", [{"id": ""}])[0]["id"]
    ids.message_id = by_type.get("message", [{"id": ""}])[0]["id"]
    ids.item_ids = [c["id"] for c in by_type.get("function_call", [])]
    ids.call_ids = [c["call_id"] for c in by_type.get("function_call", [])]
    events = wire.stream_events(scenario, seen.json, str(seen.json["model"]), ids)
    return b"".join(event.encode() for event in events)


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_a_blocking_response_through_the_gateway_equals_the_upstreams_byte_for_byte(
    name: str, sqlite_url: str, tmp_path: Path
) -> None:
    """Same SDK result as straight from the upstream; the body is the upstream's bytes."""
    scenario = SCENARIOS[name]()
    async with openai_stack(sqlite_url, tmp_path, scenario, scenario) as s:
        async with asyncio.timeout(TIMEOUT):
            direct = await direct_sdk(s).responses.create(**responses_request())
            via_raw = await gateway_sdk(s).responses.with_raw_response.create(**responses_request())
        seen = s.fake.requests[-1]
        assert seen.response_id is not None
        assert via_raw.http_response.content == orjson.dumps(s.fake.responses[seen.response_id])
        via = via_raw.parse()
        assert via.id == seen.response_id, "the upstream response id must be preserved"
        assert normalize(via.model_dump()) == normalize(direct.model_dump())
        assert via.output_text == scenario.text
        calls = [item for item in via.output if item.type == "function_call"]
        assert [(c.name, c.call_id, json.loads(c.arguments)) for c in calls] == [
            (c.name, cid, c.arguments)
            for c, cid in zip(scenario.tool_calls, seen.tool_call_ids, strict=True)
        ]
        assert via.usage is not None
        assert via.usage.input_tokens == scenario.usage.openai_input_tokens()
        assert via.usage.input_tokens_details.cached_tokens == scenario.usage.cache_read_tokens
        assert via.usage.output_tokens_details.reasoning_tokens == scenario.usage.reasoning_tokens
        summaries = [
            part.text for item in via.output if item.type == "reasoning" for part in item.summary
        ]
        assert summaries == ([scenario.thinking] if scenario.thinking else [])


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_a_response_stream_through_the_gateway_equals_the_upstreams_byte_for_byte(
    name: str, sqlite_url: str, tmp_path: Path
) -> None:
    """Same SDK events as straight from the upstream; the stream is the upstream's bytes."""
    scenario = SCENARIOS[name]()
    async with openai_stack(sqlite_url, tmp_path, scenario, scenario, scenario) as s:
        async with asyncio.timeout(TIMEOUT):
            direct = await collect(
                await direct_sdk(s).responses.create(**responses_request(), stream=True)
            )
            via = await collect(
                await gateway_sdk(s).responses.create(**responses_request(), stream=True)
            )
            seen_sdk = s.fake.requests[-1]
            resp = await s.client.post(
                "/openai/v1/responses",
                json=responses_request(stream=True),
                headers={"Authorization": f"Bearer {s.user_token}"},
            )
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            raw = await resp.read()
        assert raw == upstream_stream_bytes(s, scenario)
        assert normalize(via) == normalize(direct)
        assert via[-1]["type"] == "response.completed"
        assert via[-1]["response"]["id"] == seen_sdk.response_id
        assert {e["response"]["id"] for e in via if "response" in e} == {seen_sdk.response_id}
        usage = via[-1]["response"]["usage"]
        assert usage["input_tokens"] == scenario.usage.openai_input_tokens()
        assert usage["output_tokens_details"]["reasoning_tokens"] == (
            scenario.usage.reasoning_tokens
        )


async def test_the_client_gets_the_upstreams_response_id_so_follow_ups_find_it(
    sqlite_url: str, tmp_path: Path
) -> None:
    """The id the client got is the upstream's, so a follow-up's previous_response_id and a
    GET /responses/{id} both find the upstream's response."""
    async with openai_stack(sqlite_url, tmp_path) as s:
        sdk = gateway_sdk(s)
        async with asyncio.timeout(TIMEOUT):
            first = await sdk.responses.create(**responses_request())
            events = await collect(
                await sdk.responses.create(
                    **responses_request("and tomorrow?"), previous_response_id=first.id, stream=True
                )
            )
            fetched = await sdk.responses.retrieve(first.id)
        assert first.id == s.fake.requests[0].response_id
        assert s.fake.requests[1].json["previous_response_id"] == first.id
        assert events[-1]["response"]["previous_response_id"] == first.id
        assert events[-1]["response"]["id"] == s.fake.requests[1].response_id
        assert fetched.model_dump() == first.model_dump()


# --------------------------------------------------------------------------- recording


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streaming"])
async def test_each_response_records_usage_prompt_tool_calls_and_reasoning_summaries(
    stream: bool, db_url: str, tmp_path: Path
) -> None:
    """One interception per request with client, session, usage (uncached input), prompt,
    tool calls (call and item ids, parsed arguments) and reasoning summaries as thoughts;
    the admin listing and usage-by-model report the same numbers."""
    async with openai_stack(db_url, tmp_path) as s:
        dev = await s.member_id()
        expected: dict[str, dict[str, Any]] = {}
        for n, (name, make) in enumerate(SCENARIOS.items(), start=1):
            scenario = make()
            model, prompt, session = f"gpt-{name}", f"prompt for {name}", f"sess-{name}"
            s.fake.enqueue(scenario)
            sdk = gateway_sdk(s, headers={"User-Agent": CODEX_UA, "session_id": session})
            req = responses_request(prompt, model=model)
            async with asyncio.timeout(TIMEOUT):
                if stream:
                    await collect(await sdk.responses.create(**req, stream=True))
                else:
                    await sdk.responses.create(**req)
            upstream = s.fake.requests[-1]
            assert upstream.scenario is scenario and upstream.response_id is not None
            stored = s.fake.responses[upstream.response_id]
            rec = await nth_recording(s, n, model)
            assert_codex_interception(rec, model, dev, session)
            u = scenario.usage
            assert usage_rows(rec) == [usage_row(u, upstream.response_id)]
            assert [t.provider_model for t in rec.token_usages] == [model]
            assert [(p.prompt, p.provider_response_id) for p in rec.prompts] == [
                (prompt, upstream.response_id)
            ]
            items = [o for o in stored["output"] if o["type"] == "function_call"]
            # Rows of one response share created_at, so their order is not defined: sort.
            assert sorted(
                (t.provider_tool_call_id, t.item_id, t.tool, json.loads(t.input), t.injected)
                for t in rec.tool_usages
            ) == sorted(
                (item["call_id"], item["id"], c.name, c.arguments, False)
                for item, c in zip(items, scenario.tool_calls, strict=True)
            )
            assert [(t.content, t.meta) for t in rec.thoughts] == (
                [(DEFAULT_THINKING, {"source": "reasoning_summary"})] if scenario.thinking else []
            )
            expected[model] = {
                "tokens": admin_tokens(u),
                "prompt": prompt,
                "session": session,
                "calls": [
                    {"name": c.name, "call_id": item["call_id"], "arguments": c.arguments}
                    for item, c in zip(items, scenario.tool_calls, strict=True)
                ],
                "thoughts": 1 if scenario.thinking else 0,
            }
        by_model = await assert_admin_reports(s, expected)
        for model, want in expected.items():
            assert by_model[model]["thought_count"] == want["thoughts"]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streaming"])
@pytest.mark.parametrize("status", sorted(STATUS_ERRORS))
async def test_upstream_http_error_relayed_verbatim(
    status: int, stream: bool, sqlite_url: str, tmp_path: Path
) -> None:
    exc_type, error_type = STATUS_ERRORS[status]
    async with openai_stack(sqlite_url, tmp_path, Scenario.http_error(status)) as s:
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(openai.APIStatusError) as info:
                await gateway_sdk(s).responses.create(**responses_request(), stream=stream)
        exc = info.value
        assert type(exc) is exc_type
        assert exc.status_code == status
        assert exc.response.headers["content-type"].startswith("application/json")
        assert exc.response.content == orjson.dumps(error_body(status))
        rec = await s.only_recording()
        assert rec.interception.error_type == error_type
        assert rec.token_usages == []


@pytest.mark.parametrize(
    ("status", "exc_type", "client_status", "error_type"),
    [
        (429, openai.RateLimitError, 429, "rate_limited"),
        (401, openai.InternalServerError, 502, "unauthorized"),
    ],
)
async def test_a_401_or_429_on_the_only_key_exhausts_the_pool_with_the_right_status(
    status: int,
    exc_type: type[openai.APIStatusError],
    client_status: int,
    error_type: str,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    """401/429 on the only key: failover finds no other key; 429 (+Retry-After) for rate
    limits, 502 for a key the upstream rejects (the client's own key is fine)."""
    async with openai_stack(sqlite_url, tmp_path) as s:
        s.fake.key_scenarios[PROVIDER_KEY] = Scenario.http_error(status)
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(openai.APIStatusError) as info:
                await gateway_sdk(s).responses.create(**responses_request(), stream=True)
        exc = info.value
        assert type(exc) is exc_type and exc.status_code == client_status
        assert ("retry-after" in exc.response.headers) == (status == 429)
        assert set(exc.response.json()) == {"error"}
        assert exc.response.json()["error"]["message"].startswith("all configured keys")
        rec = await s.only_recording()
        assert rec.interception.error_type == error_type


@pytest.mark.parametrize("event", ["error", "response.failed"])
async def test_a_mid_stream_error_or_failed_event_is_relayed_and_recorded(
    event: str, sqlite_url: str, tmp_path: Path
) -> None:
    """An ``error`` / ``response.failed`` event is relayed as is and surfaced by the SDK;
    the interception gets the error, the prompt is recorded, no usage."""
    async with openai_stack(
        sqlite_url,
        tmp_path,
        Scenario.stream_error(responses_error_event=event, error_message="kaput"),
    ) as s:
        async with asyncio.timeout(TIMEOUT):
            events = await collect(
                await gateway_sdk(s).responses.create(**responses_request(), stream=True)
            )
        last = events[-1]
        assert last["type"] == event
        if event == "error":
            assert (last["code"], last["message"]) == ("server_error", "kaput")
        else:
            assert last["response"]["status"] == "failed"
            error = last["response"]["error"]
            assert (error["code"], error["message"]) == ("server_error", "kaput")
        assert any(e["type"] == "response.output_text.delta" for e in events)
        rec = await s.only_recording()
        assert rec.interception.error_type == "server_error"
        assert rec.interception.error_message == "kaput"
        assert [p.prompt for p in rec.prompts] == ["What is the weather in Paris?"]
        assert rec.token_usages == []


async def test_an_upstream_drop_mid_stream_ends_with_an_error_event(
    sqlite_url: str, tmp_path: Path
) -> None:
    """The upstream dies mid-stream: the events so far, then an ``error`` event, then the
    end of the stream; the SDK yields the error event."""
    async with openai_stack(
        sqlite_url, tmp_path, Scenario.drop(deltas_before=2), Scenario.drop(deltas_before=2)
    ) as s:
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.post(
                "/openai/v1/responses",
                json=responses_request(stream=True),
                headers={"Authorization": f"Bearer {s.user_token}"},
            )
            assert resp.status == 200
            raw = await resp.read()
            events = await collect(
                await gateway_sdk(s).responses.create(**responses_request(), stream=True)
            )
        assert s.fake.requests[0].dropped and s.fake.requests[1].dropped
        parsed = sse_events(raw)
        names = [name for name, _ in parsed]
        assert names[0] == "response.created"
        assert names.count("response.output_text.delta") == 2
        assert "response.completed" not in names
        assert names[-1] == "error"
        error = orjson.loads(parsed[-1][1])
        assert error["type"] == "error"
        assert error["message"].startswith("upstream stream broke")
        assert events[-1]["type"] == "error"
        assert events[-1]["message"].startswith("upstream stream broke")
        assert await s.error_types() == ["server_error", "server_error"]


# ------------------------------------- how a streamed interception ends (usage, error)


async def test_incomplete_response_is_recorded_with_its_usage(
    sqlite_url: str, tmp_path: Path
) -> None:
    """``response.incomplete`` (e.g. max_output_tokens) is a terminal event with usage: a
    normal end, billed like a completed one."""
    async with openai_stack(sqlite_url, tmp_path) as s:
        scenario = Scenario.text_reply(responses_incomplete="max_output_tokens")
        s.fake.enqueue(scenario)
        async with asyncio.timeout(TIMEOUT):
            events = await collect(
                await gateway_sdk(s).responses.create(**responses_request(), stream=True)
            )
        assert events[-1]["type"] == "response.incomplete"
        assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
        rec = await s.only_recording()
        assert (rec.interception.error_type, rec.interception.ended_at is not None) == (None, True)
        usage = scenario.usage
        assert [(u.input_tokens, u.output_tokens) for u in rec.token_usages] == [
            (usage.input_tokens, usage.output_tokens)
        ]


async def read_through(resp: Any, event: bytes) -> None:
    """Read SSE lines until the data line of ``event`` (bounded by the caller)."""
    seen = False
    while True:
        line = await resp.content.readline()
        assert line, f"the stream ended before {event!r}"
        if line.startswith(b"event: " + event):
            seen = True
        elif seen and line.startswith(b"data:"):
            return


async def test_client_leaving_after_response_completed_keeps_the_usage(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A client (Codex) that closes the connection as soon as it has ``response.completed``,
    while the upstream has not closed its side yet: the response reached it in full, so
    the interception ends without error and with the usage of the completed response."""
    async with openai_stack(sqlite_url, tmp_path) as s:
        linger = Scenario.linger()  # complete, then the upstream keeps the connection open
        s.fake.enqueue(linger)
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.post(
                "/openai/v1/responses",
                json=responses_request(stream=True),
                headers={"Authorization": f"Bearer {s.user_token}"},
            )
            assert resp.status == 200
            await read_through(resp, b"response.completed")
            await linger.stalled.wait()
            resp.close()
            await s.fake.disconnected.wait()  # the gateway let go of the upstream
        rec = await s.only_recording()
        assert (rec.interception.error_type, rec.interception.ended_at is not None) == (None, True)
        usage = linger.usage
        assert [(u.input_tokens, u.output_tokens) for u in rec.token_usages] == [
            (usage.input_tokens, usage.output_tokens)
        ]


async def test_a_locked_interceptions_table_does_not_hold_up_the_request(
    pg_url: str, tmp_path: Path
) -> None:
    """Nothing on the request path waits for the database: while another session holds an
    ACCESS EXCLUSIVE lock on ``interceptions``, a request is answered in full, and its
    records land once the lock is released."""
    async with openai_stack(pg_url, tmp_path) as s:
        blocker = await asyncpg.connect(pg_url)
        try:
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("LOCK TABLE interceptions IN ACCESS EXCLUSIVE MODE")
            async with asyncio.timeout(TIMEOUT):
                resp = await s.client.post(
                    "/openai/v1/responses",
                    json=responses_request(),
                    headers={"Authorization": f"Bearer {s.user_token}"},
                )
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["status"] == "completed"
            # Answered while the lock still holds every write back.
            assert await blocker.fetchval("SELECT count(*) FROM interceptions") == 0
            await tx.rollback()
        finally:
            await blocker.close()
        await s.flush_records()
        [row] = await interceptions(s.services)
        assert (row.ended_at is not None, row.error_type) == (True, None)
        assert len(s.fake.requests) == 1


async def test_an_unreachable_upstream_is_an_openai_shaped_502(
    sqlite_url: str, tmp_path: Path
) -> None:
    with refusing_port() as port:
        async with stack(sqlite_url, tmp_path) as s:
            await s.add_provider("openai", "openai", base_url=f"http://127.0.0.1:{port}/v1")
            sdk = gateway_sdk(s)
            await assert_unreachable_upstream(
                s, lambda stream: sdk.responses.create(**responses_request(), stream=stream)
            )


async def test_background_is_not_supported(sqlite_url: str, tmp_path: Path) -> None:
    async with openai_stack(sqlite_url, tmp_path) as s:
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(openai.InternalServerError) as info:
                await gateway_sdk(s).responses.create(**responses_request(), background=True)
        assert info.value.status_code == 501
        err = info.value.response.json()["error"]
        assert "background" in err["message"]
        assert s.fake.requests == []
        await s.flush_records()
        assert await interceptions(s.services) == []


async def test_an_invalid_gateway_key_is_an_openai_shaped_401_that_reaches_no_upstream(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with openai_stack(sqlite_url, tmp_path) as s:
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(openai.AuthenticationError) as info:
                await gateway_sdk(s, api_key="wrong").responses.create(
                    **responses_request(), stream=True
                )
        assert set(info.value.response.json()) == {"error"}
        assert s.fake.requests == []


async def test_gateway_key_never_reaches_upstream(sqlite_url: str, tmp_path: Path) -> None:
    async with openai_stack(sqlite_url, tmp_path) as s:
        async with asyncio.timeout(TIMEOUT):
            await gateway_sdk(s).responses.create(**responses_request())
            resp = await s.client.post(
                "/openai/v1/responses",
                data=orjson.dumps(responses_request(stream=True)),
                headers={"X-Api-Key": s.user_token, "Content-Type": "application/json"},
            )
            assert resp.status == 200, await resp.text()
            await resp.read()
        for seen in s.fake.requests:
            assert seen.headers.getall("Authorization") == [f"Bearer {PROVIDER_KEY}"]
            assert "X-Api-Key" not in seen.headers
            assert not any(s.user_token in str(v) for v in seen.headers.values())
        # Responses bodies go upstream byte for byte.
        assert s.fake.requests[1].body == orjson.dumps(responses_request(stream=True))


# --------------------------------------------------------------------------- passthrough


async def test_get_response_passes_through_with_the_provider_key_unrecorded(
    sqlite_url: str, tmp_path: Path
) -> None:
    """GET /responses/{id} reaches the fake with the provider key; it is not recorded."""
    async with openai_stack(sqlite_url, tmp_path) as s:
        sdk = gateway_sdk(s)
        async with asyncio.timeout(TIMEOUT):
            created = await sdk.responses.create(**responses_request())
            fetched = await sdk.responses.retrieve(
                created.id, extra_query={"include_obfuscation": "false"}
            )
            with pytest.raises(openai.NotFoundError) as info:
                await sdk.responses.retrieve("resp_doesnotexist")
        assert fetched.model_dump() == created.model_dump()
        get = s.fake.requests[1]
        assert (get.method, get.path) == ("GET", f"/v1/responses/{created.id}")
        assert get.query.get("include_obfuscation") == "false"
        assert get.headers.getall("Authorization") == [f"Bearer {PROVIDER_KEY}"]
        assert "resp_doesnotexist" in info.value.message
        await s.flush_records()
        rows = await interceptions(s.services)
        assert len(rows) == 1, "passthrough calls must not be recorded"
