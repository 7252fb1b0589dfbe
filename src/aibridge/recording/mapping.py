"""What an interception and its observations become as records.

The pipeline that produces them sits above this package, so the shapes read here are
declared as protocols (``*View``): the pipeline's own types satisfy them structurally,
which mypy checks where the recording addon is plugged in.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from aibridge.actor import Actor
from aibridge.governance.prices import EMPTY_PRICES, PriceTable
from aibridge.ids import new_uuid7
from aibridge.recording.records import (
    ErrorType,
    InterceptionEnded,
    InterceptionStarted,
    PromptRecord,
    Record,
    ThoughtRecord,
    TokenUsageRecord,
    ToolUsageRecord,
)
from aibridge.store.types import utcnow

# --- what is read -------------------------------------------------------------------------


class ProviderView(Protocol):
    """The provider an interception went to."""

    @property
    def name(self) -> str:
        """Its configured name."""

    @property
    def type(self) -> str:
        """Its type (``anthropic``, ``openai``, …)."""

    @property
    def record_metadata(self) -> Mapping[str, Any]:
        """Attributes every interception of this provider carries (e.g. ``aws_bedrock``)."""


class RequestView(Protocol):
    """What the client's request body said."""

    @property
    def prompt(self) -> str | None:
        """The user prompt, if the last message had one."""

    @property
    def correlating_tool_call_id(self) -> str | None:
        """The tool call whose result the last message carries."""


class InterceptionView(Protocol):
    """One interception (see ``aibridge.intercept.interception.Interception``)."""

    @property
    def id(self) -> uuid.UUID:
        """The interception id (the start row's primary key)."""

    @property
    def provider(self) -> ProviderView:
        """The provider."""

    @property
    def actor(self) -> Actor:
        """Who sent the request."""

    @property
    def request(self) -> RequestView:
        """The decoded request."""

    @property
    def model(self) -> str:
        """The model the client asked for ("" when none)."""

    @property
    def client(self) -> str:
        """The detected client (Claude Code, Codex, …)."""

    @property
    def user_agent(self) -> str | None:
        """The client's User-Agent."""

    @property
    def session_id(self) -> str | None:
        """The client's session id, when it sends one."""

    @property
    def byok_hint(self) -> str | None:
        """Masked hint of the client's own key (BYOK), None for the key ring."""

    @property
    def started_at(self) -> datetime:
        """When the request was accepted."""

    @property
    def credential_hint(self) -> str | None:
        """The pooled key's hint, once the upstream call picked one."""


class OutcomeView(Protocol):
    """How an interception ended."""

    @property
    def error_type(self) -> ErrorType | None:
        """None when it completed."""

    @property
    def error_message(self) -> str | None:
        """What went wrong."""


class UsageView(Protocol):
    """Tokens of one upstream call (``input`` is uncached input)."""

    @property
    def response_id(self) -> str | None:
        """The upstream's response id."""

    @property
    def model(self) -> str | None:
        """The model the upstream says answered."""

    @property
    def input(self) -> int:
        """Uncached input tokens."""

    @property
    def output(self) -> int:
        """Output tokens (reasoning included)."""

    @property
    def cache_read(self) -> int:
        """Input tokens read from the prompt cache."""

    @property
    def cache_write(self) -> int:
        """Input tokens written to the prompt cache."""

    @property
    def reasoning(self) -> int:
        """The part of ``output`` spent on reasoning."""

    @property
    def extra(self) -> Mapping[str, int]:
        """Further non-zero provider counters."""


class ToolCallView(Protocol):
    """A tool call the model made."""

    @property
    def call_id(self) -> str:
        """The call's id."""

    @property
    def name(self) -> str:
        """The tool's name."""

    @property
    def arguments_raw(self) -> str:
        """The arguments exactly as the model produced them."""

    @property
    def item_id(self) -> str | None:
        """The output item id (Responses)."""

    @property
    def response_id(self) -> str | None:
        """The response the call belongs to, when it differs from the observation's."""


class ThoughtView(Protocol):
    """Model reasoning text and where it came from."""

    @property
    def content(self) -> str:
        """The text."""

    @property
    def source(self) -> str:
        """``thinking``, ``reasoning_summary`` or ``commentary``."""


class ObservationView(Protocol):
    """What one response said."""

    @property
    def usages(self) -> Sequence[UsageView]:
        """One entry per upstream call that reported usage."""

    @property
    def tool_calls(self) -> Sequence[ToolCallView]:
        """The tool calls."""

    @property
    def thoughts(self) -> Sequence[ThoughtView]:
        """The thoughts."""

    @property
    def response_id(self) -> str | None:
        """The first upstream response id seen."""


class InvocationView(Protocol):
    """A call of an injected MCP tool the gateway made (or decided not to make)."""

    @property
    def call_id(self) -> str:
        """The model's id for the call."""

    @property
    def name(self) -> str:
        """The tool's own name on its MCP server."""

    @property
    def server_url(self) -> str:
        """The MCP server's URL."""

    @property
    def arguments_raw(self) -> str:
        """The arguments as the model produced them."""

    @property
    def response_id(self) -> str | None:
        """The upstream response that made the call."""

    @property
    def error(self) -> str | None:
        """The invocation error (None: the server answered)."""


# --- the records --------------------------------------------------------------------------


def start_record(ix: InterceptionView) -> InterceptionStarted:
    """The start row, written before the upstream call."""
    return InterceptionStarted(
        id=ix.id,
        initiator_id=ix.actor.user_id,
        api_key_id=ix.actor.key_id,
        provider=ix.provider.type,
        provider_name=ix.provider.name,
        model=ix.model,
        started_at=ix.started_at,
        client=ix.client,
        user_agent=ix.user_agent,
        client_session_id=ix.session_id,
        correlating_tool_call_id=ix.request.correlating_tool_call_id,
        credential_kind="centralized" if ix.byok_hint is None else "byok",
        credential_hint=ix.byok_hint,
        metadata=dict(ix.provider.record_metadata),
    )


def observation_records(
    ix: InterceptionView, obs: ObservationView, prices: PriceTable = EMPTY_PRICES
) -> list[Record]:
    """Token usage (one per upstream call, each with its cost from ``prices``), the prompt,
    tool calls and thoughts, in that order."""
    now = utcnow()
    interception_id = ix.id
    out: list[Record] = [usage_record(ix, usage, prices, now) for usage in obs.usages]
    prompt = ix.request.prompt
    if prompt:
        out.append(
            PromptRecord(
                id=new_uuid7(),
                interception_id=interception_id,
                provider_response_id=obs.response_id or "",
                prompt=prompt,
                metadata={},
                created_at=now,
            )
        )
    # Parallel calls of one response share a time; a microsecond apart keeps their order
    # (the readers sort by created_at; ids made in one millisecond are in random order).
    for position, call in enumerate(obs.tool_calls):
        out.append(
            ToolUsageRecord(
                id=new_uuid7(),
                interception_id=interception_id,
                provider_response_id=call.response_id or obs.response_id or "",
                tool=call.name,
                tool_call_id=call.call_id,
                item_id=call.item_id,
                server_url=None,
                input=call.arguments_raw,
                injected=False,
                invocation_error=None,
                metadata={},
                created_at=now + timedelta(microseconds=position) if position else now,
            )
        )
    for position, thought in enumerate(obs.thoughts):
        out.append(
            ThoughtRecord(
                id=new_uuid7(),
                interception_id=interception_id,
                content=thought.content,
                metadata={"source": thought.source},
                created_at=now + timedelta(microseconds=position) if position else now,
            )
        )
    return out


def usage_record(
    ix: InterceptionView, usage: UsageView, prices: PriceTable, now: datetime
) -> TokenUsageRecord:
    """The token usage of one upstream call, priced by the model the upstream says
    answered, else the one the client asked for (exact pico-USD; None when neither has a
    price). ``reasoning`` is not charged: it is already part of ``output``."""
    cost = prices.cost_pusd(
        ix.provider.type,
        (usage.model, ix.model),
        input=usage.input,
        output=usage.output,
        cache_read=usage.cache_read,
        cache_write=usage.cache_write,
    )
    return TokenUsageRecord(
        id=new_uuid7(),
        interception_id=ix.id,
        provider_response_id=usage.response_id or "",
        provider_model=usage.model,
        input=usage.input,
        output=usage.output,
        cache_read=usage.cache_read,
        cache_write=usage.cache_write,
        reasoning=usage.reasoning,
        extra=dict(usage.extra),
        metadata={},
        created_at=now,
        cost_pusd=cost,
    )


def injected_tool_record(ix: InterceptionView, call: InvocationView) -> ToolUsageRecord:
    """An injected tool call: its original MCP name, server URL, arguments and the
    invocation error if any."""
    return ToolUsageRecord(
        id=new_uuid7(),
        interception_id=ix.id,
        provider_response_id=call.response_id or "",
        tool=call.name,
        tool_call_id=call.call_id,
        server_url=call.server_url,
        input=call.arguments_raw,
        injected=True,
        invocation_error=call.error,
        metadata={},
        created_at=utcnow(),
    )


def end_record(ix: InterceptionView, outcome: OutcomeView) -> InterceptionEnded:
    """The end of the interception (an UPDATE of its start row)."""
    return InterceptionEnded(
        id=ix.id,
        ended_at=utcnow(),
        error_type=outcome.error_type,
        error_message=outcome.error_message,
        credential_hint=ix.credential_hint,
    )
