"""``GET /api/v1/interceptions`` and ``GET /api/v1/usage``.

Any authenticated user may call them: admins see everyone, members only themselves (the
filter is forced to their own id rather than answering 403).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from aiohttp import web
from multidict import MultiMapping

from aibridge.actor import Actor
from aibridge.admin.context import admin_context
from aibridge.admin.deps import current_actor
from aibridge.admin.errors import APIError, Validation, not_found
from aibridge.httputil import json_response
from aibridge.store import interceptions as queries
from aibridge.store.interceptions import GROUP_BY, INTERVALS, MAX_LIMIT, InterceptionFilter


def query_filter(
    query: MultiMapping[str], actor: Actor, errors: list[Validation]
) -> InterceptionFilter:
    """Common filters from the query string; problems are appended to ``errors``."""
    f = InterceptionFilter(
        user=query.get("user") or None,
        provider=query.get("provider") or None,
        model=query.get("model") or None,
        client=query.get("client") or None,
        session=query.get("session") or None,
        only_user_id=None if actor.is_admin else actor.user_id,
    )
    for name in ("since", "until"):
        raw = query.get(name)
        if not raw:
            continue
        try:
            setattr(f, name, queries.parse_time(raw))
        except ValueError as err:
            errors.append(
                Validation(
                    name,
                    f"{raw!r} is not a usable RFC 3339 time ({err}); "
                    "send e.g. 2025-01-31T00:00:00Z",
                )
            )
    if f.since is not None and f.until is not None and f.since >= f.until:
        errors.append(Validation("until", "must be later than since"))
    return f


STATUSES = ("ok", "error")
"""Values of the listing's ``status`` filter: no error recorded, or some error."""


def outcome_filter(
    query: MultiMapping[str], f: InterceptionFilter, errors: list[Validation]
) -> None:
    """The listing's ``status`` and ``error_type`` filters into ``f``; problems appended to
    ``errors``. Only the listing takes them: usage and sessions count every outcome."""
    status = query.get("status") or None
    if status is not None and status not in STATUSES:
        errors.append(Validation("status", f"must be one of: {', '.join(STATUSES)}"))
    error_type = query.get("error_type") or None
    if status == "ok" and error_type is not None:
        errors.append(
            Validation("error_type", "status=ok rows have no error type; drop one of the two")
        )
    f.status = status
    f.error_type = error_type


def raise_if(errors: list[Validation]) -> None:
    """A 400 listing ``errors`` when there are any."""
    if errors:
        raise APIError(400, "Invalid query parameters.", validations=errors)


def paging(
    query: MultiMapping[str], errors: list[Validation]
) -> tuple[int, tuple[datetime, uuid.UUID] | None]:
    """``limit`` and the decoded ``cursor`` of a listing; problems appended to ``errors``."""
    limit = queries.DEFAULT_LIMIT
    raw_limit = query.get("limit")
    if raw_limit:
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            errors.append(Validation("limit", f"must be an integer from 1 to {MAX_LIMIT}"))
    cursor = None
    raw_cursor = query.get("cursor")
    if raw_cursor:
        try:
            cursor = queries.decode_cursor(raw_cursor)
        except ValueError:
            errors.append(Validation("cursor", "not a cursor returned by this API"))
    return limit, cursor


async def list_interceptions(request: web.Request) -> web.Response:
    """List interceptions, newest first, with cursor paging; filtered like usage plus
    ``status`` (ok|error) and ``error_type``."""
    actor = await current_actor(request)
    query = request.query
    errors: list[Validation] = []
    f = query_filter(query, actor, errors)
    outcome_filter(query, f, errors)
    limit, cursor = paging(query, errors)
    raise_if(errors)
    async with admin_context(request).sessions() as session:
        page = await queries.list_interceptions(session, f, limit=limit, cursor=cursor)
    return json_response({"interceptions": page.items, "next_cursor": page.next_cursor})


async def get_interception(request: web.Request) -> web.Response:
    """One interception's full record; 404 when unknown or another member's."""
    actor = await current_actor(request)
    try:
        ident = uuid.UUID(request.match_info["interception_id"])
    except ValueError as err:
        raise APIError(
            400,
            "Invalid interception id.",
            "use the id of an item of GET /api/v1/interceptions (a UUID)",
        ) from err
    async with admin_context(request).sessions() as session:
        item = await queries.get_interception(
            session, ident, only_user_id=None if actor.is_admin else actor.user_id
        )
    if item is None:
        raise not_found("Interception")
    return json_response(item)


async def get_usage(request: web.Request) -> web.Response:
    """Interception counts, token sums and cost grouped by user, key, model, provider, client
    or day; ``interval=day`` adds a per-day series of each group."""
    actor = await current_actor(request)
    query = request.query
    errors: list[Validation] = []
    f = query_filter(query, actor, errors)
    group_by = query.get("group_by") or "user"
    if group_by not in GROUP_BY:
        errors.append(Validation("group_by", f"must be one of: {', '.join(GROUP_BY)}"))
    interval = query.get("interval") or None
    if interval is not None and interval not in INTERVALS:
        errors.append(Validation("interval", f"must be one of: {', '.join(INTERVALS)}"))
    elif interval is not None and group_by == "day":
        errors.append(
            Validation("interval", "group_by=day is already per day; drop interval or group_by")
        )
    raise_if(errors)
    async with admin_context(request).sessions() as session:
        rows = await queries.usage(session, group_by, f, interval)
    body: dict[str, object] = {"group_by": group_by, "rows": rows}
    if interval is not None:
        body["interval"] = interval
    return json_response(body)


def add_routes(app: web.Application) -> None:
    """Register the interception and usage routes."""
    app.router.add_get("/api/v1/interceptions", list_interceptions)
    app.router.add_get("/api/v1/interceptions/{interception_id}", get_interception)
    app.router.add_get("/api/v1/usage", get_usage)
