"""Seeding and snapshotting the recording tables in bulk for the record lifecycle tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from aibridge.store.models import Interception, ModelThought, TokenUsage, ToolUsage, UserPrompt

TABLES: tuple[Table, ...] = tuple(
    m.__table__  # type: ignore[misc]
    for m in (Interception, TokenUsage, UserPrompt, ToolUsage, ModelThought)
)
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
USER = uuid.UUID("00000000-0000-4000-8000-00000000beef")


def rows_for(
    i: int, started: datetime, prompt_bytes: int = 40, *, all_ended: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """One interception (number ``i``) with children that vary with ``i`` (some have no
    prompt, no tool call, no end unless ``all_ended``, a failure, odd text), so the round
    trip sees every shape."""
    iid = uuid.UUID(int=(1 << 64) + i)
    out: dict[str, list[dict[str, Any]]] = {t.name: [] for t in TABLES}
    out["interceptions"].append(
        {
            "id": iid,
            "initiator_id": USER,
            "api_key_id": None if i % 7 == 0 else f"key{i % 3}",
            "provider": "openai" if i % 2 else "anthropic",
            "provider_name": "p" if i % 2 else "a",
            "model": f"model-{i % 5}",
            "started_at": started,
            "ended_at": (
                None if i % 11 == 0 and not all_ended else started + timedelta(milliseconds=i % 997)
            ),
            "metadata": {"n": i, "nested": {"ü": ["✓", i % 4]}} if i % 3 else {},
            "client": "claude-code" if i % 4 else None,
            "user_agent": "agent/1.0",
            "client_session_id": f"s{i // 10}",
            "correlating_tool_call_id": None,
            "credential_kind": "centralized" if i % 9 else "byok",
            "credential_hint": None,
            "error_type": "upstream_error" if i % 13 == 0 else None,
            "error_message": 'boom "quoted"\nline' if i % 13 == 0 else None,
            "replica_id": "r:0",
        }
    )
    out["token_usages"].append(
        {
            "id": uuid.UUID(int=(2 << 64) + i),
            "interception_id": iid,
            "provider_response_id": f"resp_{i}",
            "provider_model": f"model-{i % 5}-2025",
            "input_tokens": i * 3,
            "output_tokens": i % 100,
            "cache_read_input_tokens": i % 17,
            "cache_write_input_tokens": 0,
            "reasoning_tokens": i % 5,
            "extra_token_types": {"audio": 1} if i % 6 == 0 else {},
            "cost_pusd": None if i % 8 == 0 else i * 1_000_003,
            "metadata": {},
            "created_at": started + timedelta(seconds=1),
        }
    )
    if i % 5:
        out["user_prompts"].append(
            {
                "id": uuid.UUID(int=(3 << 64) + i),
                "interception_id": iid,
                "provider_response_id": f"resp_{i}",
                "prompt": (f"prompt {i} — 日本語 " * (prompt_bytes // 20 + 1))[:prompt_bytes],
                "metadata": {},
                "created_at": started,
            }
        )
    if i % 4 == 1:
        out["tool_usages"].append(
            {
                "id": uuid.UUID(int=(4 << 64) + i),
                "interception_id": iid,
                "provider_response_id": f"resp_{i}",
                "provider_tool_call_id": f"call_{i}",
                "item_id": None,
                "server_url": "http://mcp.local/" if i % 8 == 1 else None,
                "tool": "read_file",
                "input": '{"path": "a.py"}' if i % 3 else "not json {",
                "injected": i % 8 == 1,
                "invocation_error": None,
                "metadata": {"k": i},
                "created_at": started + timedelta(seconds=2),
            }
        )
    if i % 10 == 3:
        out["model_thoughts"].append(
            {
                "id": uuid.UUID(int=(5 << 64) + i),
                "interception_id": iid,
                "content": "thinking…",
                "metadata": {},
                "created_at": started + timedelta(seconds=1),
            }
        )
    return out


async def seed(
    engine: AsyncEngine,
    count: int,
    *,
    start: datetime = EPOCH,
    step: timedelta = timedelta(minutes=1),
    first: int = 0,
    prompt_bytes: int = 40,
    batch: int = 2000,
    all_ended: bool = False,
) -> None:
    """Insert ``count`` interceptions numbered from ``first``, ``step`` apart from ``start``
    (every 11th without an end unless ``all_ended``)."""
    for lo in range(first, first + count, batch):
        pending: dict[str, list[dict[str, Any]]] = {t.name: [] for t in TABLES}
        for i in range(lo, min(lo + batch, first + count)):
            for name, rows in rows_for(
                i, start + step * (i - first), prompt_bytes, all_ended=all_ended
            ).items():
                pending[name].extend(rows)
        async with engine.begin() as conn:
            for table in TABLES:
                if pending[table.name]:
                    await conn.execute(insert(table), pending[table.name])


async def snapshot(engine: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    """Every row of every recording table, by table, sorted by id."""
    out: dict[str, list[dict[str, Any]]] = {}
    async with engine.connect() as conn:
        for table in TABLES:
            rows = await conn.execute(select(table).order_by(table.c.id))
            out[table.name] = [dict(r._mapping) for r in rows]
    return out
