"""Records in and out of the database in bulk: export as dicts, import from dicts.

One exported record is one interception with every column (by database column name),
its username (informational) and its children: ``token_usages``, ``user_prompts``,
``tool_usages``, ``model_thoughts``, each with every column. Export reads keyset batches
over ``(started_at, id)`` and the batch's children with one query per table, so memory
stays bounded by the batch size whatever the number of records. Import writes batches
and skips interceptions that already exist, so a file may be imported twice.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Table, Uuid, and_, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.type_api import TypeEngine

from aibridge.store.interceptions import InterceptionFilter, conditions
from aibridge.store.models import Interception, User
from aibridge.store.retention import CHILD_TABLES
from aibridge.store.types import UTCDateTime, as_utc

RECORD_VERSION = 1
"""``record_version`` of every exported record; import refuses other versions."""
EXPORT_BATCH = 500
"""Interceptions read per query during an export."""
IMPORT_BATCH = 500
"""Records written per transaction during an import."""

INTERCEPTIONS: Table = Interception.__table__  # type: ignore[assignment]
CHILDREN: tuple[tuple[str, Table], ...] = tuple(
    (t.__tablename__, t.__table__) for t in CHILD_TABLES
)
"""(record key, table) of every child table."""


class RecordError(ValueError):
    """An imported record that cannot be stored; the message names the field."""


def _to_json(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _row_dict(table: Table, row: Any) -> dict[str, Any]:
    mapping = row._mapping
    # str(): column names are quoted_name, a str subclass orjson refuses as a key.
    return {str(c.name): _to_json(mapping[c]) for c in table.columns}


def _from_json(kind: TypeEngine[Any], name: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(kind, UTCDateTime):
        if not isinstance(value, str):
            raise RecordError(f"{name} must be an RFC 3339 time string")
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise RecordError(f"{name} needs a timezone offset")
        return as_utc(parsed)
    if isinstance(kind, Uuid):
        return uuid.UUID(str(value))
    if isinstance(kind, Boolean) and not isinstance(value, bool):
        raise RecordError(f"{name} must be true or false")
    return value


def _row_values(table: Table, data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise RecordError(f"{where} must be a JSON object")
    values: dict[str, Any] = {}
    for column in table.columns:
        if column.name not in data:
            if column.nullable:
                continue
            raise RecordError(f"{where}.{column.name} is missing")
        try:
            values[column.name] = _from_json(column.type, column.name, data[column.name])
        except (TypeError, ValueError) as exc:
            raise RecordError(f"{where}.{column.name}: {exc}") from exc
    return values


async def count_records(session: AsyncSession, f: InterceptionFilter) -> int:
    """How many interceptions an export with ``f`` writes."""
    stmt = select(func.count()).select_from(INTERCEPTIONS).where(*conditions(f))
    return int(await session.scalar(stmt) or 0)


async def iter_records(
    sessions: async_sessionmaker[AsyncSession],
    f: InterceptionFilter,
    *,
    batch_size: int = EXPORT_BATCH,
) -> AsyncIterator[dict[str, Any]]:
    """Every interception matching ``f`` as an export record, oldest first.

    Each batch is read in its own short session: a long export holds no snapshot open
    (and no lock on SQLite) between batches.
    """
    after: tuple[datetime, uuid.UUID] | None = None
    t = INTERCEPTIONS
    while True:
        stmt = (
            select(t, User.username)
            .outerjoin(User, User.id == t.c.initiator_id)
            .where(*conditions(f))
            .order_by(t.c.started_at, t.c.id)
            .limit(batch_size)
        )
        if after is not None:
            at, ident = after
            stmt = stmt.where(or_(t.c.started_at > at, and_(t.c.started_at == at, t.c.id > ident)))
        async with sessions() as session:
            rows = (await session.execute(stmt)).all()
            if not rows:
                return
            ids = [row._mapping[t.c.id] for row in rows]
            children: dict[str, dict[uuid.UUID, list[dict[str, Any]]]] = {}
            for key, table in CHILDREN:
                by_parent: dict[uuid.UUID, list[dict[str, Any]]] = {}
                child_rows = await session.execute(
                    select(table)
                    .where(table.c.interception_id.in_(ids))
                    .order_by(table.c.created_at, table.c.id)
                )
                for child in child_rows:
                    parent = child._mapping[table.c.interception_id]
                    by_parent.setdefault(parent, []).append(_row_dict(table, child))
                children[key] = by_parent
        for row in rows:
            ident = row._mapping[t.c.id]
            record: dict[str, Any] = {"record_version": RECORD_VERSION}
            record.update(_row_dict(t, row))
            record["username"] = row._mapping[User.username]
            for key, _table in CHILDREN:
                record[key] = children[key].get(ident, [])
            yield record
        last = rows[-1]._mapping
        after = (last[t.c.started_at], last[t.c.id])
        if len(rows) < batch_size:
            return


def parse_record(data: Any) -> tuple[dict[str, Any], list[tuple[Table, dict[str, Any]]]]:
    """An export record as (interception values, [(child table, values)]); RecordError
    naming the bad field otherwise."""
    if not isinstance(data, dict):
        raise RecordError("a record must be a JSON object")
    if data.get("record_version") != RECORD_VERSION:
        raise RecordError(
            f"record_version must be {RECORD_VERSION} (a file written by `aibridge records export`)"
        )
    parent = _row_values(INTERCEPTIONS, data, "interception")
    rows: list[tuple[Table, dict[str, Any]]] = []
    for key, table in CHILDREN:
        items = data.get(key, [])
        if not isinstance(items, list):
            raise RecordError(f"{key} must be a list")
        for index, item in enumerate(items):
            values = _row_values(table, item, f"{key}[{index}]")
            if values.get("interception_id") != parent["id"]:
                raise RecordError(f"{key}[{index}].interception_id is not the record's id")
            rows.append((table, values))
    return parent, rows


async def import_batch(
    session: AsyncSession,
    records: Iterable[tuple[dict[str, Any], list[tuple[Table, dict[str, Any]]]]],
) -> tuple[int, int]:
    """Insert parsed records inside the caller's transaction, skipping interceptions that
    already exist (with their children); (imported, skipped)."""
    batch = list(records)
    if not batch:
        return 0, 0
    ids = [parent["id"] for parent, _ in batch]
    existing = set(
        await session.scalars(select(INTERCEPTIONS.c.id).where(INTERCEPTIONS.c.id.in_(ids)))
    )
    fresh = [(p, c) for p, c in batch if p["id"] not in existing]
    seen: set[uuid.UUID] = set()
    parents: list[dict[str, Any]] = []
    by_table: dict[str, list[dict[str, Any]]] = {}
    for parent, children in fresh:
        if parent["id"] in seen:  # the same record twice in one file
            continue
        seen.add(parent["id"])
        parents.append(parent)
        for table, values in children:
            by_table.setdefault(table.name, []).append(values)
    if parents:
        await session.execute(insert(INTERCEPTIONS), _by_name(INTERCEPTIONS, parents))
    for _key, table in CHILDREN:
        rows = by_table.get(table.name)
        if rows:
            await session.execute(insert(table), _by_name(table, rows))
    return len(parents), len(batch) - len(parents)


def _by_name(table: Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Every row gets every column so executemany sees one shape (NULL for the nullable
    # columns a record left out).
    return [{c.name: row.get(c.name) for c in table.columns} for row in rows]


__all__ = [
    "EXPORT_BATCH",
    "IMPORT_BATCH",
    "RECORD_VERSION",
    "RecordError",
    "count_records",
    "import_batch",
    "iter_records",
    "parse_record",
]
