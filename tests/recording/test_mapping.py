"""Observation → records (``aibridge.recording.mapping``), on the pipeline's own types."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from aibridge.actor import Actor
from aibridge.intercept.interception import CLIENT_GONE, Interception
from aibridge.intercept.observations import Observation, Thought, TokenUsage, ToolCall
from aibridge.intercept.request import RequestInfo
from aibridge.providers.base import Provider, build_provider
from aibridge.recording.mapping import end_record, observation_records, start_record
from aibridge.recording.records import (
    PromptRecord,
    ThoughtRecord,
    TokenUsageRecord,
    ToolUsageRecord,
)
from aibridge.testing.providers import provider_record

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ACTOR = Actor(uuid.uuid4(), "someone", "member", "key-1")


def interception(*, prompt: str | None = "hello", byok_hint: str | None = None) -> Interception:
    record = provider_record("compat", "openai-compat", "https://llm.example.com/v1", at=NOW)
    provider = build_provider(record)
    assert isinstance(provider, Provider)
    return Interception(
        id=uuid.uuid4(),
        provider=provider,
        api="chat",
        actor=ACTOR,
        request=RequestInfo(
            api="chat",
            model="gpt-test",
            stream=True,
            prompt=prompt,
            correlating_tool_call_id="call_0",
        ),
        client="claude-code",
        user_agent="ua/1",
        session_id="sess-1",
        byok_hint=byok_hint,
        started_at=NOW,
        began=time.perf_counter(),
    )


def test_the_start_record_carries_who_what_and_which_credential() -> None:
    ix = interception()
    rec = start_record(ix)
    assert (rec.id, rec.initiator_id, rec.api_key_id) == (ix.id, ACTOR.user_id, "key-1")
    assert (rec.provider, rec.provider_name, rec.model) == ("openai-compat", "compat", "gpt-test")
    assert (rec.client, rec.user_agent, rec.client_session_id) == ("claude-code", "ua/1", "sess-1")
    assert rec.correlating_tool_call_id == "call_0"
    assert (rec.credential_kind, rec.credential_hint) == ("centralized", None)
    assert rec.started_at == NOW
    byok = start_record(interception(byok_hint="sk-…abcd"))
    assert (byok.credential_kind, byok.credential_hint) == ("byok", "sk-…abcd")


def test_an_observation_becomes_usage_prompt_tool_and_thought_records_in_order() -> None:
    ix = interception()
    obs = Observation(
        usages=[
            TokenUsage("resp_1", "gpt-x", input=3, output=5, extra={"web": 1}),
            TokenUsage(None, None, output=1),
        ],
        tool_calls=[
            ToolCall("call_1", "read", '{"p":1}', {"p": 1}, item_id="it_1"),
            ToolCall("call_2", "write", "{", None, response_id="resp_2"),
        ],
        thoughts=[Thought("hmm", "reasoning_summary")],
        response_id="resp_1",
    )
    records = observation_records(ix, obs)
    assert [type(r) for r in records] == [
        TokenUsageRecord,
        TokenUsageRecord,
        PromptRecord,
        ToolUsageRecord,
        ToolUsageRecord,
        ThoughtRecord,
    ]
    first, second, prompt, read, write, thought = records
    assert isinstance(first, TokenUsageRecord) and isinstance(second, TokenUsageRecord)
    assert (first.provider_response_id, first.provider_model, first.input, first.output) == (
        "resp_1",
        "gpt-x",
        3,
        5,
    )
    assert first.extra == {"web": 1}
    assert (second.provider_response_id, second.provider_model) == ("", None)
    assert isinstance(prompt, PromptRecord)
    assert (prompt.prompt, prompt.provider_response_id) == ("hello", "resp_1")
    assert isinstance(read, ToolUsageRecord) and isinstance(write, ToolUsageRecord)
    assert (read.tool, read.tool_call_id, read.item_id, read.input) == (
        "read",
        "call_1",
        "it_1",
        '{"p":1}',
    )
    assert (read.provider_response_id, write.provider_response_id) == ("resp_1", "resp_2")
    assert isinstance(thought, ThoughtRecord)
    assert (thought.content, thought.metadata) == ("hmm", {"source": "reasoning_summary"})
    # Parallel tool calls keep their order for readers that sort by time (ids made in one
    # millisecond are in random order).
    assert read.created_at < write.created_at
    for rec in records:
        assert isinstance(rec, TokenUsageRecord | PromptRecord | ToolUsageRecord | ThoughtRecord)
        assert rec.interception_id == ix.id
        # Time-ordered ids: their primary keys append to the index.
        assert rec.id.version == 7
    assert len({rec.id for rec in records}) == len(records)


def test_no_prompt_record_without_a_prompt() -> None:
    assert observation_records(interception(prompt=None), Observation()) == []


def test_the_end_record_carries_the_outcome_and_the_pooled_key_hint() -> None:
    ix = interception()
    ix.credential_hint = "sk-…0001"
    rec = end_record(ix, CLIENT_GONE)
    assert (rec.id, rec.error_type, rec.error_message) == (
        ix.id,
        "client_disconnected",
        "client disconnected",
    )
    assert rec.credential_hint == "sk-…0001"
