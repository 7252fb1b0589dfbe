"""Where the recorder's batches go: the database (and an in-memory double for tests)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

import orjson
from sqlalchemy import Table, Text, bindparam, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from aibridge.recording.records import (
    GATEWAY_RESTART,
    InterceptionEnded,
    InterceptionStarted,
    PromptRecord,
    Record,
    ThoughtRecord,
    TokenUsageRecord,
    ToolUsageRecord,
)
from aibridge.store.models import Interception, ModelThought, TokenUsage, ToolUsage, UserPrompt


class Sink(Protocol):
    """A destination for record batches."""

    async def write(self, records: Sequence[Record]) -> list[InterceptionEnded]:
        """Write ``records`` atomically (all or nothing).

        Returns the end records whose interception row does not exist (yet); the caller
        keeps them and retries later. Raises on any failure.
        """
        ...

    async def end_abandoned(
        self, replicas: Sequence[str], before: datetime, ended_at: datetime
    ) -> int:
        """End (``error_type = gateway_restart``) the interceptions of ``replicas`` that
        started before ``before`` and are still open; returns how many."""
        ...

    async def ping(self) -> None:
        """Raise unless the destination is reachable."""
        ...


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    # A metadata value the JSON column cannot encode must not fail a whole batch:
    # stringify it (the reference does the same for metadata it cannot convert).
    if not value:
        return {}  # what almost every record holds: no round trip through orjson
    result: dict[str, Any] = orjson.loads(orjson.dumps(value, default=str))
    return result


def _start_row(r: InterceptionStarted) -> dict[str, Any]:
    return {
        "id": r.id,
        "initiator_id": r.initiator_id,
        "api_key_id": r.api_key_id,
        "provider": r.provider,
        # Reference §5.7: provider_name defaults to the type; kind to centralized.
        "provider_name": r.provider_name or r.provider,
        "model": r.model,
        "started_at": r.started_at,
        "ended_at": None,
        "metadata": _json_safe(r.metadata),
        "client": r.client,
        "user_agent": r.user_agent,
        "client_session_id": r.client_session_id,
        "correlating_tool_call_id": r.correlating_tool_call_id,
        "credential_kind": r.credential_kind if r.credential_kind == "byok" else "centralized",
        "credential_hint": r.credential_hint,
        "error_type": None,
        "error_message": None,
        "replica_id": r.replica_id,
    }


def _token_row(r: TokenUsageRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "interception_id": r.interception_id,
        "provider_response_id": r.provider_response_id,
        "provider_model": r.provider_model,
        "input_tokens": r.input,
        "output_tokens": r.output,
        "cache_read_input_tokens": r.cache_read,
        "cache_write_input_tokens": r.cache_write,
        "reasoning_tokens": r.reasoning,
        "extra_token_types": _json_safe(r.extra),
        "cost_pusd": r.cost_pusd,
        "metadata": _json_safe(r.metadata),
        "created_at": r.created_at,
    }


def _prompt_row(r: PromptRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "interception_id": r.interception_id,
        "provider_response_id": r.provider_response_id,
        "prompt": r.prompt,
        "metadata": _json_safe(r.metadata),
        "created_at": r.created_at,
    }


def _tool_row(r: ToolUsageRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "interception_id": r.interception_id,
        "provider_response_id": r.provider_response_id,
        # Reference §5.7: an empty provider tool call id is stored as NULL.
        "provider_tool_call_id": r.tool_call_id or None,
        "item_id": r.item_id,
        "server_url": r.server_url,
        "tool": r.tool,
        "input": r.input,
        "injected": r.injected,
        "invocation_error": r.invocation_error,
        "metadata": _json_safe(r.metadata),
        "created_at": r.created_at,
    }


def _thought_row(r: ThoughtRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "interception_id": r.interception_id,
        "content": r.content,
        "metadata": _json_safe(r.metadata),
        "created_at": r.created_at,
    }


_INSERTS: list[tuple[type[Any], Table, Callable[[Any], dict[str, Any]]]] = [
    # Interceptions first so that end records later in the same batch find their row.
    (InterceptionStarted, Interception.__table__, _start_row),  # type: ignore[list-item]
    (TokenUsageRecord, TokenUsage.__table__, _token_row),  # type: ignore[list-item]
    (PromptRecord, UserPrompt.__table__, _prompt_row),  # type: ignore[list-item]
    (ToolUsageRecord, ToolUsage.__table__, _tool_row),  # type: ignore[list-item]
    (ThoughtRecord, ModelThought.__table__, _thought_row),  # type: ignore[list-item]
]

_ITABLE: Table = Interception.__table__  # type: ignore[assignment]

# ``ended_at IS NULL``: the first end wins, so a replayed end is a harmless no-op
# (reference §5.7). A NULL hint keeps the one recorded at start.
_END_UPDATE = (
    update(_ITABLE)
    .where(_ITABLE.c.id == bindparam("b_id"), _ITABLE.c.ended_at.is_(None))
    .values(
        ended_at=bindparam("b_ended_at"),
        error_type=bindparam("b_error_type"),
        error_message=bindparam("b_error_message"),
        credential_hint=func.coalesce(bindparam("b_hint", type_=Text), _ITABLE.c.credential_hint),
    )
)


GATEWAY_RESTART_MESSAGE = "the gateway stopped before the interception ended"

# The interceptions a replica's previous runs left open (started before this run).
_ABANDONED_UPDATE = (
    update(_ITABLE)
    .where(
        _ITABLE.c.replica_id == bindparam("b_replica"),
        _ITABLE.c.ended_at.is_(None),
        _ITABLE.c.started_at < bindparam("b_before"),
    )
    .values(
        ended_at=bindparam("b_ended_at"),
        error_type=bindparam("b_error_type"),
        error_message=bindparam("b_error_message"),
    )
)


def abandoned_params(replica: str, before: datetime, ended_at: datetime) -> dict[str, Any]:
    """Parameters of :data:`_ABANDONED_UPDATE` for one replica."""
    return {
        "b_replica": replica,
        "b_before": before,
        "b_ended_at": ended_at,
        "b_error_type": GATEWAY_RESTART,
        "b_error_message": GATEWAY_RESTART_MESSAGE,
    }


class DatabaseSink:
    """Writes batches with one transaction each: an idempotent bulk insert per table
    (insert-if-not-exists by primary key), then the end records as UPDATEs by id."""

    def __init__(self, sessions: Callable[[], AsyncSession]) -> None:
        self._sessions = sessions

    async def write(self, records: Sequence[Record]) -> list[InterceptionEnded]:
        """See :meth:`Sink.write`."""
        if not records:
            return []
        async with self._sessions() as session, session.begin():
            dialect = session.get_bind().dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            for cls, table, to_row in _INSERTS:
                rows = [to_row(r) for r in records if type(r) is cls]
                if rows:
                    stmt = insert(table).on_conflict_do_nothing(index_elements=["id"])
                    await session.execute(stmt, rows)
            ends = [r for r in records if isinstance(r, InterceptionEnded)]
            if not ends:
                return []
            ids = list({e.id for e in ends})
            found = await session.execute(select(_ITABLE.c.id).where(_ITABLE.c.id.in_(ids)))
            existing: set[uuid.UUID] = set(found.scalars())
            ready = [e for e in ends if e.id in existing]
            if ready:
                await session.execute(
                    _END_UPDATE,
                    [
                        {
                            "b_id": e.id,
                            "b_ended_at": e.ended_at,
                            "b_error_type": e.error_type,
                            "b_error_message": e.error_message,
                            "b_hint": e.credential_hint,
                        }
                        for e in ready
                    ],
                )
            return [e for e in ends if e.id not in existing]

    async def end_abandoned(
        self, replicas: Sequence[str], before: datetime, ended_at: datetime
    ) -> int:
        """See :meth:`Sink.end_abandoned`."""
        ended = 0
        async with self._sessions() as session, session.begin():
            for replica in replicas:
                result = await session.execute(
                    _ABANDONED_UPDATE, abandoned_params(replica, before, ended_at)
                )
                ended += result.rowcount  # type: ignore[attr-defined]
        return ended

    async def ping(self) -> None:
        """``SELECT 1`` on a fresh session."""
        async with self._sessions() as session:
            await session.execute(text("SELECT 1"))


def database_sink(sessions: Callable[[], AsyncSession]) -> Sink:
    """The sink for the database behind ``sessions``: a :class:`SqliteSink` (one writer
    thread, one handoff per transaction) for a SQLite file, else a :class:`DatabaseSink`."""
    # Imported here: the SQLite sink builds on this module.
    from aibridge.recording.sqlite_sink import SqliteSink

    bind = getattr(sessions, "kw", {}).get("bind")
    dialect = getattr(bind, "dialect", None)
    if dialect is not None and dialect.name == "sqlite":
        path = bind.url.database  # type: ignore[union-attr]
        if path and path != ":memory:" and not path.startswith("file:"):
            return SqliteSink(path, dialect)
    return DatabaseSink(sessions)


class ListSink:
    """In-memory sink for unit tests of code that records: ``records`` holds every record
    written, in order. Ends are never reported as missing."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    async def write(self, records: Sequence[Record]) -> list[InterceptionEnded]:
        """Append ``records``."""
        self.records.extend(records)
        return []

    async def end_abandoned(
        self, replicas: Sequence[str], before: datetime, ended_at: datetime
    ) -> int:
        """Nothing is ever open here."""
        return 0

    async def ping(self) -> None:
        """Always reachable."""

    def of_type(self, cls: type[Any]) -> list[Any]:
        """The written records of one type."""
        return [r for r in self.records if isinstance(r, cls)]
