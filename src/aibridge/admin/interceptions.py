"""``GET /api/v1/interceptions`` and ``GET /api/v1/usage``.

Any authenticated user may call them: admins see everyone, members only themselves (the
filter is forced to their own id rather than answering 403).
"""

from __future__ import annotations

from aiohttp import web
from multidict import MultiMapping

from aibridge.actor import Actor
from aibridge.admin.context import admin_context
from aibridge.admin.deps import current_actor
from aibridge.admin.errors import APIError, Validation
from aibridge.httputil import json_response
from aibridge.store import interceptions as queries
from aibridge.store.interceptions import GROUP_BY, MAX_LIMIT, InterceptionFilter


def _filter(query: MultiMapping[str], actor: Actor, errors: list[Validation]) -> InterceptionFilter:
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


def _raise_if(errors: list[Validation]) -> None:
    if errors:
        raise APIError(400, "Invalid query parameters.", validations=errors)


async def list_interceptions(request: web.Request) -> web.Response:
    """List interceptions, newest first, with cursor paging."""
    actor = await current_actor(request)
    query = request.query
    errors: list[Validation] = []
    f = _filter(query, actor, errors)
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
    _raise_if(errors)
    async with admin_context(request).sessions() as session:
        page = await queries.list_interceptions(session, f, limit=limit, cursor=cursor)
    return json_response({"interceptions": page.items, "next_cursor": page.next_cursor})


async def get_usage(request: web.Request) -> web.Response:
    """Interception counts, token sums and cost grouped by user, key, model, provider or day."""
    actor = await current_actor(request)
    query = request.query
    errors: list[Validation] = []
    f = _filter(query, actor, errors)
    group_by = query.get("group_by") or "user"
    if group_by not in GROUP_BY:
        errors.append(Validation("group_by", f"must be one of: {', '.join(GROUP_BY)}"))
    _raise_if(errors)
    async with admin_context(request).sessions() as session:
        rows = await queries.usage(session, group_by, f)
    return json_response({"group_by": group_by, "rows": rows})


def add_routes(app: web.Application) -> None:
    """Register the interception and usage routes."""
    app.router.add_get("/api/v1/interceptions", list_interceptions)
    app.router.add_get("/api/v1/usage", get_usage)
