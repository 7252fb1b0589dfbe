"""Agent sessions: interceptions grouped by their user and the client's session id.

A session is ``(initiator_id, client_session_id)``: the same session id sent by two users
is two sessions (a member never sees, nor merges into, someone else's work). An
interception without a session id is a session of its own.

Session ids in the API are opaque, URL-safe strings (:func:`encode_session_id`): the
unpadded base64url of the JSON array ``[user id, client session id]``, or
``["i", interception id]`` for a session of one interception without a session id.

The listing pages newest first by last activity without aggregating the whole table:
it walks the interceptions newest first (index on ``(started_at, id)``) and keeps the
rows that are the latest matching one of their session (an anti-join probing
``(initiator_id, client_session_id, started_at)``), so a page costs about as many index
probes as the sessions it shows and their turns; the cursor is that latest row's
``(started_at, id)``. Only the page's sessions are then summed.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, and_, case, exists, func, not_, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from aibridge.store.interceptions import (
    COST_SUM,
    DESCRIBED_COLUMNS,
    TOKEN_FIELDS,
    UNPRICED_ROWS,
    Children,
    InterceptionFilter,
    InterceptionRow,
    conditions,
    cost_usd,
    encode_cursor,
    load_children,
    shape,
)
from aibridge.store.models import Interception, TokenUsage, User

CACHE_BREAK_FROM = 0.5
"""A turn breaks the cache when the previous turn served at least this share of its input
from the prompt cache…"""
CACHE_BREAK_TO = 0.2
"""…and this turn less than this share;"""
CACHE_BREAK_DROP = 0.5
"""or when the share fell by at least this much (absolute) on a turn whose input is at
least :data:`CACHE_BREAK_MIN_INPUT` tokens (small turns fluctuate harmlessly)."""
CACHE_BREAK_MIN_INPUT = 1024


@dataclass(frozen=True, slots=True)
class SessionKey:
    """Identity of a session: the user and the client's session id, or (no session id)
    the one interception."""

    user_id: uuid.UUID
    client_session_id: str | None
    interception_id: uuid.UUID | None = None


@dataclass(slots=True)
class SessionPage:
    """One page of sessions; ``next_cursor`` is None on the last page."""

    items: list[dict[str, Any]]
    next_cursor: str | None


def encode_session_id(key: SessionKey) -> str:
    """The opaque API id of ``key`` (see the module docstring)."""
    if key.client_session_id is None:
        payload: list[str] = ["i", str(key.interception_id)]
    else:
        payload = [str(key.user_id), key.client_session_id]
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def decode_session_id(value: str) -> tuple[uuid.UUID, str] | uuid.UUID:
    """``(user id, client session id)``, or the interception id of a one-interception
    session; ``ValueError`` for anything :func:`encode_session_id` did not produce."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        first, second = orjson.loads(raw)
        if not isinstance(first, str) or not isinstance(second, str):
            raise ValueError("not two strings")
        if first == "i":
            return uuid.UUID(second)
        return uuid.UUID(first), second
    except (binascii.Error, TypeError, ValueError) as exc:
        raise ValueError("not a session id returned by this API") from exc


def _later(t: Any, than: Any) -> ColumnElement[bool]:
    """``t`` sorts after ``than`` in the listing order ``(started_at, id)``."""
    # The redundant ``>=`` is what an index can range over (an OR it cannot): the
    # probe then starts at ``than``'s own time instead of reading the whole session.
    return and_(
        t.started_at >= than.started_at,
        or_(t.started_at > than.started_at, t.id > than.id),
    )


def _same_session(t: Any, i: Any) -> ColumnElement[bool]:
    # Equality on a NULL session id is never true: such rows have no siblings.
    return and_(t.initiator_id == i.initiator_id, t.client_session_id == i.client_session_id)


def _errors_condition(f: InterceptionFilter, has_errors: bool) -> ColumnElement[bool]:
    """Whether the session of the outer row has (or lacks) a failed matching interception."""
    e = aliased(Interception)
    own = and_(Interception.client_session_id.is_(None), Interception.error_type.is_not(None))
    sibling = exists().where(
        _same_session(e, Interception), e.error_type.is_not(None), *conditions(f, e)
    )
    return or_(own, sibling) if has_errors else and_(not_(own), not_(sibling))


async def list_sessions(
    session: AsyncSession,
    f: InterceptionFilter,
    *,
    has_errors: bool | None = None,
    limit: int = 50,
    cursor: tuple[datetime, uuid.UUID] | None = None,
) -> SessionPage:
    """Sessions with at least one interception matching ``f``, newest activity first,
    after ``cursor``; each summarises its matching interceptions."""
    newer = aliased(Interception)
    stmt = (
        select(
            Interception.id,
            Interception.initiator_id,
            Interception.client_session_id,
            Interception.started_at,
        )
        .where(
            *conditions(f),
            ~exists().where(
                _same_session(newer, Interception),
                _later(newer, Interception),
                *conditions(f, newer),
            ),
        )
        .order_by(Interception.started_at.desc(), Interception.id.desc())
        .limit(limit + 1)
    )
    if has_errors is not None:
        stmt = stmt.where(_errors_condition(f, has_errors))
    if cursor is not None:
        at, ident = cursor
        # ``<=`` lets the index scan start at the cursor (see _later).
        stmt = stmt.where(
            Interception.started_at <= at,
            or_(Interception.started_at < at, Interception.id < ident),
        )
    rows = (await session.execute(stmt)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    keys = [
        SessionKey(row.initiator_id, row.client_session_id, None)
        if row.client_session_id is not None
        else SessionKey(row.initiator_id, None, row.id)
        for row in rows
    ]
    summaries = await summarise(session, keys, f)
    items = [summaries[k] for k in keys]
    next_cursor = encode_cursor(rows[-1].started_at, rows[-1].id) if more else None
    return SessionPage(items, next_cursor)


async def summarise(
    session: AsyncSession, keys: list[SessionKey], f: InterceptionFilter
) -> dict[SessionKey, dict[str, Any]]:
    """The list entry of each of ``keys`` over its interceptions matching ``f``; keys
    without a matching interception are missing from the answer."""
    if not keys:
        return {}
    grouped = [k for k in keys if k.client_session_id is not None]
    singles = [k.interception_id for k in keys if k.interception_id is not None]
    # A superset of the sessions (any of these users x any of these ids); the grouping
    # separates them and only the asked keys are kept. Row-value IN would be exact but
    # is not portable.
    which: list[ColumnElement[bool]] = []
    if grouped:
        which.append(
            and_(
                Interception.initiator_id.in_({k.user_id for k in grouped}),
                Interception.client_session_id.in_({k.client_session_id for k in grouped}),
            )
        )
    if singles:
        which.append(and_(Interception.id.in_(singles), Interception.client_session_id.is_(None)))
    # Summed in SQL, one row per session: a page's sessions hold about a thousand
    # interceptions, which cost tens of milliseconds to fetch and add up in Python.
    single = case((Interception.client_session_id.is_(None), Interception.id))
    joined, sums, cost, unpriced = _token_sums(session)
    stmt = (
        select(
            Interception.initiator_id,
            Interception.client_session_id,
            single,
            User.username,
            func.min(Interception.started_at),
            func.max(Interception.started_at),
            # DISTINCT: on SQLite each interception appears once per token row.
            func.count(func.distinct(Interception.id)),
            func.count(
                func.distinct(case((Interception.error_type.is_not(None), Interception.id)))
            ),
            func.max(_bytewise(session, Interception.client)),
            *sums,
            cost,
            unpriced,
        )
        .select_from(joined)
        .outerjoin(User, User.id == Interception.initiator_id)
        .where(or_(*which), *conditions(f))
        .group_by(Interception.initiator_id, Interception.client_session_id, single, User.username)
    )
    wanted = set(keys)
    out: dict[SessionKey, dict[str, Any]] = {}
    for row in await session.execute(stmt):
        user_id, csid, single_id, username, first, last, count, errors, client = row[:9]
        *token_sums, pusd, unpriced_rows = row[9:]
        key = SessionKey(_uuid(user_id), csid, None if csid is not None else _uuid(single_id))
        if key not in wanted:
            continue
        out[key] = {
            "id": encode_session_id(key),
            "client_session_id": csid,
            "user": {"id": str(user_id), "username": username},
            "client": client,
            "first_at": first,
            "last_at": last,
            "interception_count": int(count),
            "tokens": {k: int(v or 0) for k, v in zip(TOKEN_FIELDS, token_sums, strict=True)},
            "cost_usd": cost_usd(int(pusd or 0)),
            "unpriced": int(unpriced_rows or 0) > 0,
            "error_count": int(errors),
        }
    return out


def _token_sums(session: AsyncSession) -> tuple[Any, list[Any], Any, Any]:
    """``(FROM clause, token sums, pico-USD sum, unpriced token rows)`` to aggregate over
    the interceptions of a grouped query.

    On PostgreSQL a ``LATERAL`` sum per interception: an index probe each, where a
    plain join makes the planner hash all of token_usages. SQLite has no ``LATERAL``
    (nor that planner): a plain outer join, one row per token row.
    """
    columns = (
        TokenUsage.input_tokens,
        TokenUsage.output_tokens,
        TokenUsage.cache_read_input_tokens,
        TokenUsage.cache_write_input_tokens,
        TokenUsage.reasoning_tokens,
    )
    if session.get_bind().dialect.name != "postgresql":
        joined = Interception.__table__.outerjoin(
            TokenUsage, TokenUsage.interception_id == Interception.id
        )
        return joined, [func.sum(c) for c in columns], COST_SUM, UNPRICED_ROWS
    per = (
        select(
            *(func.sum(c).label(c.key) for c in columns),
            COST_SUM.label("pusd"),
            UNPRICED_ROWS.label("unpriced"),
        )
        .where(TokenUsage.interception_id == Interception.id)
        .lateral("per_interception")
    )
    joined = Interception.__table__.join(per, true())
    sums = [func.sum(per.c[c.key]) for c in columns]
    return joined, sums, func.sum(per.c.pusd), func.sum(per.c.unpriced)


def _bytewise(session: AsyncSession, column: Any) -> Any:
    """``column`` compared by code point, as Python compares strings (SQLite's default;
    PostgreSQL's depends on the database's collation)."""
    if session.get_bind().dialect.name == "postgresql":
        return column.collate("C")
    return column


def _uuid(value: Any) -> uuid.UUID:
    # asyncpg returns its own UUID type, SQLite (through the CASE) sometimes a string:
    # normalise so keys compare equal.
    return value if type(value) is uuid.UUID else uuid.UUID(str(value))


async def get_session(
    session: AsyncSession, session_id: str, *, only_user_id: uuid.UUID | None
) -> dict[str, Any] | None:
    """The session's entry plus its interceptions oldest first (with the per-turn cache
    share and break flag); None when it does not exist or, with ``only_user_id``, is
    someone else's. ``ValueError`` when ``session_id`` is malformed."""
    decoded = decode_session_id(session_id)
    stmt = select(*DESCRIBED_COLUMNS, User.username).outerjoin(
        User, User.id == Interception.initiator_id
    )
    if isinstance(decoded, uuid.UUID):
        stmt = stmt.where(Interception.id == decoded, Interception.client_session_id.is_(None))
    else:
        user_id, csid = decoded
        stmt = stmt.where(
            Interception.initiator_id == user_id, Interception.client_session_id == csid
        )
    if only_user_id is not None:
        stmt = stmt.where(Interception.initiator_id == only_user_id)
    stmt = stmt.order_by(Interception.started_at, Interception.id)
    rows = [
        (InterceptionRow._make(values[:-1]), values[-1])
        for values in (await session.execute(stmt)).tuples()
    ]
    if not rows:
        return None
    children = await load_children(session, [i.id for i, _ in rows], full=True)
    turns = shape(rows, children, full=True)
    entry = _entry_of_turns(rows, children)
    mark_cache_breaks(turns)
    entry["interceptions"] = turns
    return entry


def _entry_of_turns(
    rows: list[tuple[InterceptionRow, str | None]], children: Children
) -> dict[str, Any]:
    """The list entry of a whole session (what :func:`summarise` answers without a
    filter) from its turns, oldest first, and their children: reading the session a
    second time to sum it costs as much as reading it."""
    first, username = rows[0]
    key = (
        SessionKey(_uuid(first.initiator_id), None, _uuid(first.id))
        if first.client_session_id is None
        else SessionKey(_uuid(first.initiator_id), first.client_session_id, None)
    )
    tokens = dict.fromkeys(TOKEN_FIELDS, 0)
    pusd = 0
    unpriced = False
    for i, _ in rows:
        for name, value in children.tokens.get(i.id, {}).items():
            tokens[name] += value
        cost, no_price = children.costs.get(i.id, (0, False))
        pusd += cost
        unpriced = unpriced or no_price
    clients = [i.client for i, _ in rows if i.client is not None]
    return {
        "id": encode_session_id(key),
        "client_session_id": first.client_session_id,
        "user": {"id": str(first.initiator_id), "username": username},
        # The greatest by code point, as summarise() compares them.
        "client": max(clients) if clients else None,
        "first_at": min(i.started_at for i, _ in rows),
        "last_at": max(i.started_at for i, _ in rows),
        "interception_count": len(rows),
        "tokens": tokens,
        "cost_usd": cost_usd(pusd),
        "unpriced": unpriced,
        "error_count": sum(i.error_type is not None for i, _ in rows),
    }


def cache_read_share(tokens: dict[str, int]) -> float | None:
    """The share of a turn's input served from the prompt cache; None without input.

    ``input`` counts uncached input only (the recorders normalise every provider to
    that), so the whole prompt is input + cache read + cache write.
    """
    whole = tokens["input"] + tokens["cache_read"] + tokens["cache_write"]
    if whole == 0:
        return None
    return tokens["cache_read"] / whole


def mark_cache_breaks(turns: list[dict[str, Any]]) -> None:
    """Set ``cache_read_share`` and ``cache_break`` on each turn (oldest first).

    A break is a collapse relative to the previous turn that had input: from at least
    :data:`CACHE_BREAK_FROM` to below :data:`CACHE_BREAK_TO`, or a fall of at least
    :data:`CACHE_BREAK_DROP` on a turn with :data:`CACHE_BREAK_MIN_INPUT`+ input tokens.
    """
    previous: float | None = None
    for turn in turns:
        tokens = turn["tokens"]
        share = cache_read_share(tokens)
        broke = False
        if share is not None and previous is not None:
            whole = tokens["input"] + tokens["cache_read"] + tokens["cache_write"]
            broke = (previous >= CACHE_BREAK_FROM and share < CACHE_BREAK_TO) or (
                previous - share >= CACHE_BREAK_DROP and whole >= CACHE_BREAK_MIN_INPUT
            )
        turn["cache_read_share"] = share
        turn["cache_break"] = broke
        if share is not None:
            previous = share
