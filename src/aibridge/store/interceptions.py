"""Read queries over the recording tables: interception listing and usage totals.

Both work on SQLite and PostgreSQL. The listing pages newest first with an opaque cursor
over ``(started_at, id)`` and loads each page's children with one query per table.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, NamedTuple

import orjson
from sqlalchemy import ColumnElement, Uuid, and_, bindparam, case, func, literal_column, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from aibridge.limits import usd_number
from aibridge.store.models import (
    ApiKey,
    Interception,
    ModelThought,
    TokenUsage,
    ToolUsage,
    User,
    UserPrompt,
)
from aibridge.store.types import as_utc

GROUP_BY = ("user", "key", "model", "provider", "client", "day")
"""Accepted ``group_by`` values of :func:`usage`."""

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
TOKEN_FIELDS = ("input", "output", "cache_read", "cache_write", "reasoning")
NO_KEY = "-"
"""The ``key`` of usage rows of interceptions made without a gateway key (or, grouped by
client, from no recognised client)."""
INTERVALS = ("day",)
"""Accepted ``interval`` values of :func:`usage` (a time series per group)."""


def cost_usd(pusd: int) -> int | float:
    """Pico-USD as a JSON number of USD (exact to the pico-dollar while the amount has at
    most 15 significant digits, i.e. below $1000; the records keep the exact integer)."""
    return usd_number(Decimal(pusd).scaleb(-12))


# Token rows of the joined interception that have no price. A usage row with no token
# rows at all (the call failed before usage arrived) is not "unpriced": it cost nothing.
UNPRICED_ROWS = func.coalesce(
    func.sum(
        case(
            (and_(TokenUsage.id.is_not(None), TokenUsage.cost_pusd.is_(None)), 1),
            else_=0,
        )
    ),
    0,
)
COST_SUM = func.coalesce(func.sum(TokenUsage.cost_pusd), 0)


@dataclass(slots=True)
class InterceptionFilter:
    """Filters shared by the listing and the usage query; None means "any".

    ``user`` is a user id or a username. ``only_user_id`` is the caller's own id for
    non-admins and is ANDed with everything else (so a member asking for someone else
    gets nothing, never someone else's data). ``status`` is ``ok`` (no error) or ``error``;
    ``error_type`` matches one exact error type.
    """

    user: str | None = None
    provider: str | None = None
    model: str | None = None
    client: str | None = None
    session: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    only_user_id: uuid.UUID | None = None
    status: str | None = None
    error_type: str | None = None


@dataclass(slots=True)
class InterceptionPage:
    """One page of the listing; ``next_cursor`` is None on the last page."""

    items: list[dict[str, Any]]
    next_cursor: str | None


def parse_time(value: str) -> datetime:
    """Parse an RFC 3339 timestamp (``2025-01-31T12:00:00Z``) or a date (UTC midnight).

    Raises ``ValueError`` for anything else, including a time without a zone offset.
    """
    text = value.strip()
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("timestamp needs a timezone offset, e.g. 2025-01-31T00:00:00Z")
    return as_utc(parsed)


def encode_cursor(started_at: datetime, interception_id: uuid.UUID) -> str:
    """Opaque cursor pointing just after the given row."""
    raw = orjson.dumps([started_at.astimezone(UTC).isoformat(), str(interception_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Inverse of :func:`encode_cursor`; ``ValueError`` when the cursor is not ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started, ident = orjson.loads(raw)
        when = datetime.fromisoformat(started)
        if when.tzinfo is None:
            raise ValueError("naive cursor time")
        return as_utc(when), uuid.UUID(ident)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise ValueError("cursor is not one returned by this API") from exc


def conditions(f: InterceptionFilter, t: Any = Interception) -> list[ColumnElement[bool]]:
    """The WHERE terms of ``f`` on ``t``: the interceptions table or an alias of it (the
    sessions query applies the same filter to a correlated copy)."""
    conds: list[ColumnElement[bool]] = []
    if f.only_user_id is not None:
        conds.append(t.initiator_id == f.only_user_id)
    if f.user:
        try:
            conds.append(t.initiator_id == uuid.UUID(f.user))
        except ValueError:
            by_name = select(User.id).where(User.username == f.user).scalar_subquery()
            conds.append(t.initiator_id == by_name)
    if f.provider:
        conds.append(t.provider_name == f.provider)
    if f.model:
        conds.append(t.model == f.model)
    if f.client:
        conds.append(t.client == f.client)
    if f.session:
        conds.append(t.client_session_id == f.session)
    if f.since is not None:
        conds.append(t.started_at >= f.since)
    if f.until is not None:
        conds.append(t.started_at < f.until)
    # An interception failed exactly when it recorded an error type.
    if f.status == "ok":
        conds.append(t.error_type.is_(None))
    elif f.status == "error":
        conds.append(t.error_type.is_not(None))
    if f.error_type:
        conds.append(t.error_type == f.error_type)
    return conds


def _arguments(raw: str) -> Any:
    """Tool arguments as parsed JSON, or the raw text when the model produced invalid JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


async def list_interceptions(
    session: AsyncSession,
    f: InterceptionFilter,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: tuple[datetime, uuid.UUID] | None = None,
) -> InterceptionPage:
    """Interceptions matching ``f``, newest first, after ``cursor``; children summarised."""
    stmt = (
        select(Interception, User.username)
        .outerjoin(User, User.id == Interception.initiator_id)
        .where(*conditions(f))
        .order_by(Interception.started_at.desc(), Interception.id.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        at, ident = cursor
        stmt = stmt.where(
            or_(
                Interception.started_at < at,
                and_(Interception.started_at == at, Interception.id < ident),
            )
        )
    rows = (await session.execute(stmt)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = await describe(session, [(row[0], row[1]) for row in rows])
    next_cursor = encode_cursor(rows[-1][0].started_at, rows[-1][0].id) if more else None
    return InterceptionPage(items, next_cursor)


async def get_interception(
    session: AsyncSession, interception_id: uuid.UUID, *, only_user_id: uuid.UUID | None
) -> dict[str, Any] | None:
    """One interception in full (:func:`describe` with ``full``), or None when it does not
    exist or, with ``only_user_id``, belongs to someone else."""
    stmt = (
        select(Interception, User.username)
        .outerjoin(User, User.id == Interception.initiator_id)
        .where(Interception.id == interception_id)
    )
    if only_user_id is not None:
        stmt = stmt.where(Interception.initiator_id == only_user_id)
    row = (await session.execute(stmt)).first()
    if row is None:
        return None
    return (await describe(session, [(row[0], row[1])], full=True))[0]


def duration_ms(i: Interception | InterceptionRow) -> int | None:
    """Milliseconds from start to end; None while the interception is open."""
    if i.ended_at is None:
        return None
    return int((i.ended_at - i.started_at).total_seconds() * 1000)


def among(session: AsyncSession, stmt: Any, column: Any, ids: Sequence[uuid.UUID]) -> Any:
    """``stmt`` restricted to ``column IN ids``. On PostgreSQL a join with
    ``unnest($1)``: one array parameter (prepared once, not once per list length) and
    an index probe per id — with ``= ANY`` or a long IN list the planner scans the whole
    table and tests every row against the list."""
    if session.get_bind().dialect.name == "postgresql":
        array = bindparam("ids", list(ids), type_=postgresql.ARRAY(Uuid()))
        wanted = func.unnest(array).table_valued("id").render_derived(name="wanted")
        return stmt.join(wanted, column == wanted.c.id)
    return stmt.where(column.in_(ids))


class InterceptionRow(NamedTuple):
    """The interception columns :func:`describe` reads (:data:`DESCRIBED_COLUMNS`), for
    queries that select these instead of the entity: that spares loading and
    JSON-decoding every row's metadata, and a named tuple's fields read about ten times
    faster than a SQLAlchemy ``Row``'s attributes (which add up over a long session)."""

    id: uuid.UUID
    initiator_id: uuid.UUID
    provider: str
    provider_name: str
    model: str
    client: str | None
    client_session_id: str | None
    started_at: datetime
    ended_at: datetime | None
    error_type: str | None
    error_message: str | None
    credential_kind: str
    credential_hint: str | None


DESCRIBED_COLUMNS = tuple(getattr(Interception, name) for name in InterceptionRow._fields)
"""The columns of :class:`InterceptionRow`, in its order."""


@dataclass(slots=True)
class Children:
    """What :func:`load_children` found for a list of interceptions, by interception id."""

    tokens: dict[uuid.UUID, dict[str, int]] = field(default_factory=dict)
    costs: dict[uuid.UUID, tuple[int, bool]] = field(default_factory=dict)
    """Pico-USD of the priced calls, and whether any call had no price."""
    prompts: dict[uuid.UUID, str] = field(default_factory=dict)
    tools: dict[uuid.UUID, list[dict[str, Any]]] = field(default_factory=dict)
    thoughts: dict[uuid.UUID, list[str]] = field(default_factory=dict)
    thought_counts: dict[uuid.UUID, int] = field(default_factory=dict)


async def load_children(
    session: AsyncSession, ids: Sequence[uuid.UUID], *, full: bool = False
) -> Children:
    """Token sums, costs, first prompts, tool calls and thoughts (their texts with
    ``full``, else only their counts) of the interceptions ``ids``, one query per table."""
    found = Children()
    if not ids:
        return found
    token_rows = await session.execute(
        among(
            session,
            select(
                TokenUsage.interception_id,
                func.sum(TokenUsage.input_tokens),
                func.sum(TokenUsage.output_tokens),
                func.sum(TokenUsage.cache_read_input_tokens),
                func.sum(TokenUsage.cache_write_input_tokens),
                func.sum(TokenUsage.reasoning_tokens),
                COST_SUM,
                UNPRICED_ROWS,
            ).select_from(TokenUsage),
            TokenUsage.interception_id,
            ids,
        ).group_by(TokenUsage.interception_id)
    )
    for iid, *sums, cost, unpriced_rows in token_rows:
        found.tokens[iid] = {k: int(v or 0) for k, v in zip(TOKEN_FIELDS, sums, strict=True)}
        found.costs[iid] = (int(cost or 0), int(unpriced_rows or 0) > 0)
    prompt_rows = await session.execute(
        among(
            session,
            select(UserPrompt.interception_id, UserPrompt.prompt),
            UserPrompt.interception_id,
            ids,
        ).order_by(UserPrompt.created_at, UserPrompt.id)
    )
    for iid, prompt in prompt_rows:
        found.prompts.setdefault(iid, prompt)
    # Columns, not the entity: no identity map, no metadata JSON to decode.
    tool_rows = await session.execute(
        among(
            session,
            select(
                ToolUsage.interception_id,
                ToolUsage.tool,
                ToolUsage.provider_tool_call_id,
                ToolUsage.injected,
                ToolUsage.server_url,
                ToolUsage.input,
                ToolUsage.invocation_error,
            ),
            ToolUsage.interception_id,
            ids,
        ).order_by(ToolUsage.created_at, ToolUsage.id)
    )
    for iid, tool, call_id, injected, server_url, raw, error in tool_rows:
        found.tools.setdefault(iid, []).append(
            {
                "name": tool,
                "call_id": call_id,
                "injected": injected,
                "server_url": server_url,
                "arguments": _arguments(raw),
                "error": error,
            }
        )
    if full:
        thought_rows = await session.execute(
            among(
                session,
                select(ModelThought.interception_id, ModelThought.content),
                ModelThought.interception_id,
                ids,
            ).order_by(ModelThought.created_at, ModelThought.id)
        )
        for iid, content in thought_rows:
            found.thoughts.setdefault(iid, []).append(content)
    else:
        counted = await session.execute(
            among(
                session,
                select(ModelThought.interception_id, func.count()).select_from(ModelThought),
                ModelThought.interception_id,
                ids,
            ).group_by(ModelThought.interception_id)
        )
        found.thought_counts = {iid: int(n) for iid, n in counted}
    return found


async def describe(
    session: AsyncSession,
    rows: Sequence[tuple[Interception, str | None]],
    *,
    full: bool = False,
) -> list[dict[str, Any]]:
    """The API shape of each ``(interception, username)``, children loaded with one query
    per table. ``full`` adds the thoughts' texts and ``duration_ms`` (one interception's
    record, a session's turns) instead of only counting the thoughts."""
    children = await load_children(session, [i.id for i, _ in rows], full=full)
    return shape(rows, children, full=full)


def shape(
    rows: Sequence[tuple[Interception | InterceptionRow, str | None]],
    children: Children,
    *,
    full: bool = False,
) -> list[dict[str, Any]]:
    """The API shape of each ``(interception, username)`` given its ``children`` (see
    :func:`describe`)."""
    zero = dict.fromkeys(TOKEN_FIELDS, 0)
    items: list[dict[str, Any]] = []
    for i, username in rows:
        cost, unpriced = children.costs.get(i.id, (0, False))
        item: dict[str, Any] = {
            # str(): asyncpg hands back its own UUID subclass, which orjson rejects.
            "id": str(i.id),
            "user": {"id": str(i.initiator_id), "username": username},
            "provider": i.provider,
            "provider_name": i.provider_name,
            "model": i.model,
            "client": i.client,
            "session_id": i.client_session_id,
            "started_at": i.started_at,
            "ended_at": i.ended_at,
            "error_type": i.error_type,
            "error_message": i.error_message,
            # Which credential went upstream: "centralized" (the provider's key pool, the
            # hint is the masked key used) or "byok" (the user's own key or token, e.g.
            # Copilot's, masked). Never the secret itself: only masked hints are stored.
            "credential_kind": i.credential_kind,
            "credential_hint": i.credential_hint,
            "tokens": children.tokens.get(i.id, zero),
            # The sum of the priced calls; "unpriced" says some call's model had no
            # price, so the cost is a lower bound (unknown models are never guessed).
            "cost_usd": cost_usd(cost),
            "unpriced": unpriced,
            "prompt": children.prompts.get(i.id),
            "tool_calls": children.tools.get(i.id, []),
        }
        if full:
            item["thought_count"] = len(children.thoughts.get(i.id, ()))
            item["thoughts"] = children.thoughts.get(i.id, [])
            item["duration_ms"] = duration_ms(i)
        else:
            item["thought_count"] = children.thought_counts.get(i.id, 0)
        items.append(item)
    return items


def _day(session: AsyncSession) -> Any:
    """``YYYY-MM-DD`` (UTC) of an interception's start, as SQL of the session's dialect."""
    if session.get_bind().dialect.name == "postgresql":
        # Literal constants, not bind parameters: PostgreSQL must see the SELECT and
        # GROUP BY expressions as identical.
        utc = func.timezone(literal_column("'UTC'"), Interception.started_at)
        day = func.date_trunc(literal_column("'day'"), utc)
        return func.to_char(day, literal_column("'YYYY-MM-DD'"))
    # SQLite stores UTC as "YYYY-MM-DD HH:MM:SS.ffffff".
    return func.strftime(literal_column("'%Y-%m-%d'"), Interception.started_at)


async def usage(
    session: AsyncSession, group_by: str, f: InterceptionFilter, interval: str | None = None
) -> list[dict[str, Any]]:
    """Interception counts, token sums and cost per ``group_by`` key (see
    :data:`GROUP_BY`), sorted by key. Keys: username (user id if the user is gone), gateway
    key id (:data:`NO_KEY` for none; the row also names the key and its user), model,
    provider name, client (:data:`NO_KEY` for none) or ``YYYY-MM-DD`` (UTC) of the start
    time. ``cost_usd`` sums the priced calls; ``unpriced`` is true when some call in the
    group had no price. ``interval="day"`` splits every group by UTC day: rows carry
    ``day`` too and are sorted by day, then key (a time series per group whose rows add
    up to the rows without it)."""
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {', '.join(GROUP_BY)}")
    if interval is not None and (interval not in INTERVALS or group_by == "day"):
        raise ValueError("interval must be day, with a group_by other than day")
    keys: list[Any]
    if group_by == "user":
        keys = [Interception.initiator_id, User.username]
    elif group_by == "key":
        keys = [Interception.api_key_id, ApiKey.name, Interception.initiator_id, User.username]
    elif group_by == "model":
        keys = [Interception.model]
    elif group_by == "provider":
        keys = [Interception.provider_name]
    elif group_by == "client":
        keys = [Interception.client]
    else:
        keys = [_day(session)]
    if interval is not None:
        keys = [_day(session), *keys]
    sums = [
        func.coalesce(func.sum(col), 0)
        for col in (
            TokenUsage.input_tokens,
            TokenUsage.output_tokens,
            TokenUsage.cache_read_input_tokens,
            TokenUsage.cache_write_input_tokens,
            TokenUsage.reasoning_tokens,
        )
    ]
    stmt = (
        select(*keys, func.count(func.distinct(Interception.id)), *sums, COST_SUM, UNPRICED_ROWS)
        .select_from(Interception)
        .outerjoin(TokenUsage, TokenUsage.interception_id == Interception.id)
        .where(*conditions(f))
        .group_by(*keys)
    )
    if group_by in ("user", "key"):
        stmt = stmt.outerjoin(User, User.id == Interception.initiator_id)
    if group_by == "key":
        stmt = stmt.outerjoin(ApiKey, ApiKey.id == Interception.api_key_id)
    result: list[dict[str, Any]] = []
    for row in await session.execute(stmt):
        values = list(row)
        named: dict[str, Any] = {}
        if interval is not None:
            named["day"] = values[0]
            values = values[1:]
        if group_by == "user":
            user_id, username = values[0], values[1]
            key: str = username or str(user_id)
            values = values[2:]
        elif group_by == "key":
            key_id, key_name, user_id, username = values[:4]
            key = key_id or NO_KEY
            named.update(name=key_name, user=username or str(user_id))
            values = values[4:]
        elif group_by == "client":
            key = values[0] or NO_KEY
            values = values[1:]
        else:
            key = str(values[0])
            values = values[1:]
        count, *token_sums, cost, unpriced_rows = values
        entry: dict[str, Any] = {"key": key, **named, "interceptions": int(count)}
        if interval is not None:
            # "day" first, as the series is read by day.
            entry = {"day": entry.pop("day"), **entry}
        entry.update({k: int(v) for k, v in zip(TOKEN_FIELDS, token_sums, strict=True)})
        entry["cost_usd"] = cost_usd(int(cost))
        entry["unpriced"] = int(unpriced_rows) > 0
        result.append(entry)
    # Sorted here, not in SQL: collation differs between the backends.
    result.sort(key=lambda e: (e.get("day", ""), e["key"]))
    return result
