"""Record types produced by interceptors and persisted by the recorder.

Field names follow ``reference/coder-aibridge-core.md`` §5.2 with our additions (client,
session id, credential hint, error type). Every record carries its own client-generated
UUID primary key so that a record written twice (a retried batch, a spill file replayed
after a crash) lands exactly once.

Records serialise to a flat JSON object with a ``kind`` discriminator (one line of the
spill file) and back with :func:`record_from_json`.
"""

from __future__ import annotations

import dataclasses
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

import orjson

from aibridge.ids import new_uuid7
from aibridge.store.types import utcnow

CREDENTIAL_KINDS = ("centralized", "byok")
"""Accepted ``InterceptionStarted.credential_kind`` values."""

ErrorType = Literal[
    "bad_request",
    "unauthorized",
    "rate_limited",
    "overloaded",
    "server_error",
    "timeout",
    "unknown",
    "client_disconnected",
    "gateway_restart",
    "model_not_allowed",
    "concurrency_limited",
    "request_rate_limited",
    "token_rate_limited",
    "budget_exceeded",
]
"""``InterceptionEnded.error_type`` values: the documented ones (reference §5.2 [N]), plus
ours: ``client_disconnected`` (the client went away first), ``gateway_restart`` (the
gateway process stopped before the interception ended; set at its next start), and the
gateway's own refusals (:data:`REFUSAL_ERROR_TYPES`; nothing went upstream)."""

ERROR_TYPES: tuple[ErrorType, ...] = typing.get_args(ErrorType)
"""Every :data:`ErrorType`, in documentation order."""

UPSTREAM_ERROR_TYPES: frozenset[ErrorType] = frozenset(
    ("bad_request", "unauthorized", "rate_limited", "overloaded", "server_error", "timeout")
)
"""The error types an exchange with the upstream can end in (an upstream error event whose
``type`` is one of these is recorded under it as it is)."""

REFUSAL_ERROR_TYPES: tuple[ErrorType, ...] = (
    "model_not_allowed",
    "concurrency_limited",
    "request_rate_limited",
    "token_rate_limited",
    "budget_exceeded",
)
"""The error types of requests the gateway's limits refused before anything went upstream
(in the order the limits are checked)."""

CLIENT_DISCONNECTED: ErrorType = "client_disconnected"
"""``error_type`` of an interception whose client went away before its response was complete."""

GATEWAY_RESTART: ErrorType = "gateway_restart"
"""``error_type`` of interceptions a previous run of the replica left open."""


@dataclass(slots=True, kw_only=True)
class InterceptionStarted:
    """One client request, recorded synchronously before the first upstream call."""

    kind: ClassVar[str] = "interception_start"

    id: uuid.UUID = field(default_factory=new_uuid7)
    initiator_id: uuid.UUID
    provider: str
    provider_name: str
    model: str
    started_at: datetime = field(default_factory=utcnow)
    api_key_id: str | None = None
    client: str | None = None
    user_agent: str | None = None
    client_session_id: str | None = None
    correlating_tool_call_id: str | None = None
    credential_kind: str = "centralized"
    # Already masked (``sk-…abcd``); the raw credential never reaches a record.
    credential_hint: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # Set by the recorder: the replica (process) serving the request.
    replica_id: str | None = None


@dataclass(slots=True, kw_only=True)
class InterceptionEnded:
    """The end of an interception: applied as an UPDATE of its start row."""

    kind: ClassVar[str] = "interception_end"

    id: uuid.UUID
    ended_at: datetime = field(default_factory=utcnow)
    error_type: str | None = None
    error_message: str | None = None
    # Final hint after key-pool selection; None keeps the hint recorded at start.
    credential_hint: str | None = None


@dataclass(slots=True, kw_only=True)
class TokenUsageRecord:
    """Token counts of one upstream call; ``input`` is *uncached* input."""

    kind: ClassVar[str] = "token_usage"

    id: uuid.UUID = field(default_factory=new_uuid7)
    interception_id: uuid.UUID
    provider_response_id: str = ""
    provider_model: str | None = None
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0
    extra: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)
    # Pico-USD (exact, see aibridge.governance.prices), priced when the record is made;
    # None when the model has no price ("unpriced", never guessed). Last, so journal
    # lines written before the field existed still load (as unpriced).
    cost_pusd: int | None = None


@dataclass(slots=True, kw_only=True)
class PromptRecord:
    """The user prompt of an interception (at most one per interception)."""

    kind: ClassVar[str] = "prompt_usage"

    id: uuid.UUID = field(default_factory=new_uuid7)
    interception_id: uuid.UUID
    provider_response_id: str = ""
    prompt: str
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)


@dataclass(slots=True, kw_only=True)
class ToolUsageRecord:
    """A tool call chosen by the model (client-defined, or injected when ``injected``)."""

    kind: ClassVar[str] = "tool_usage"

    id: uuid.UUID = field(default_factory=new_uuid7)
    interception_id: uuid.UUID
    provider_response_id: str = ""
    tool: str
    tool_call_id: str | None = None
    item_id: str | None = None
    # Set only for injected (MCP) tools.
    server_url: str | None = None
    # JSON text of the arguments exactly as the model produced them (may be invalid JSON).
    input: str = ""
    injected: bool = False
    invocation_error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)


@dataclass(slots=True, kw_only=True)
class ThoughtRecord:
    """Model thinking / reasoning summary text (``metadata["source"]`` says which)."""

    kind: ClassVar[str] = "model_thought"

    id: uuid.UUID = field(default_factory=new_uuid7)
    interception_id: uuid.UUID
    content: str
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)


Record = (
    InterceptionStarted
    | InterceptionEnded
    | TokenUsageRecord
    | PromptRecord
    | ToolUsageRecord
    | ThoughtRecord
)
"""Any record the recorder accepts."""

RECORD_TYPES: dict[str, type[Any]] = {
    cls.kind: cls
    for cls in (
        InterceptionStarted,
        InterceptionEnded,
        TokenUsageRecord,
        PromptRecord,
        ToolUsageRecord,
        ThoughtRecord,
    )
}
"""Record class by its ``kind`` discriminator."""


def _conversions(cls: type[Any]) -> tuple[frozenset[str], frozenset[str]]:
    """Names of the UUID and datetime fields of ``cls`` (resolved once at import)."""
    hints = typing.get_type_hints(cls)
    uuids: set[str] = set()
    times: set[str] = set()
    for f in dataclasses.fields(cls):
        args = set(typing.get_args(hints[f.name])) or {hints[f.name]}
        if uuid.UUID in args:
            uuids.add(f.name)
        if datetime in args:
            times.add(f.name)
    return frozenset(uuids), frozenset(times)


_CONVERSIONS = {kind: _conversions(cls) for kind, cls in RECORD_TYPES.items()}


def _as_dict(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
    """A function that returns a record of ``cls`` as a dict: ``kind`` first, then the
    fields in declaration order (what :func:`record_to_json` encodes).

    Generated once per class, like the methods :mod:`dataclasses` generates: a dict
    display reading each attribute is about three times faster than both
    ``dataclasses.asdict`` and orjson's own encoding of a slotted dataclass (which looks
    every field up by name), and this runs on the event loop for every record (the crash
    journal). Only field names (identifiers) and the class's constant ``kind`` go into the
    source."""
    names = [f.name for f in dataclasses.fields(cls)]
    if not all(name.isidentifier() for name in names):
        raise TypeError(f"{cls.__name__}: field names must be identifiers")
    items = ", ".join([f'"kind": {cls.kind!r}', *(f"{name!r}: r.{name}" for name in names)])
    function: Callable[[Any], dict[str, Any]] = eval(f"lambda r: {{{items}}}")
    return function


_AS_DICT: dict[type[Any], Callable[[Any], dict[str, Any]]] = {
    cls: _as_dict(cls) for cls in RECORD_TYPES.values()
}


def record_to_json(rec: Record) -> bytes:
    """One JSON object (no newline) with a ``kind`` key; unserialisable metadata values
    are stringified rather than failing the record."""
    return orjson.dumps(_AS_DICT[type(rec)](rec), default=str)


def record_from_json(raw: bytes | str | dict[str, Any]) -> Record:
    """Inverse of :func:`record_to_json`; raises ``ValueError`` on an unknown or bad line."""
    data = orjson.loads(raw) if isinstance(raw, bytes | str) else dict(raw)
    if not isinstance(data, dict):
        raise ValueError("record JSON must be an object")
    kind = data.pop("kind", None)
    cls = RECORD_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown record kind {kind!r}")
    uuids, times = _CONVERSIONS[kind]
    for name in uuids:
        if data.get(name) is not None:
            data[name] = uuid.UUID(data[name])
    for name in times:
        if data.get(name) is not None:
            data[name] = datetime.fromisoformat(data[name])
    try:
        rec: Record = cls(**data)
    except TypeError as exc:
        raise ValueError(f"bad {kind} record: {exc}") from exc
    return rec
