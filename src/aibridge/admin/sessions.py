"""``GET /api/v1/sessions`` and ``GET /api/v1/sessions/{session_id}``: agent sessions.

Like the interception listing, any signed-in user may call them: admins see everyone's
sessions, members only their own (another member's session is a 404, never a 403, so
its existence is not revealed).
"""

from __future__ import annotations

from aiohttp import web

from aibridge.admin.context import admin_context
from aibridge.admin.deps import current_actor
from aibridge.admin.errors import APIError, Validation, not_found
from aibridge.admin.interceptions import paging, query_filter, raise_if
from aibridge.httputil import json_response
from aibridge.store import sessions as queries

_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


async def list_sessions(request: web.Request) -> web.Response:
    """Sessions newest activity first, filtered and cursor-paged."""
    actor = await current_actor(request)
    query = request.query
    errors: list[Validation] = []
    f = query_filter(query, actor, errors)
    limit, cursor = paging(query, errors)
    has_errors: bool | None = None
    raw = query.get("has_errors")
    if raw:
        if raw.lower() not in _BOOLEANS:
            errors.append(Validation("has_errors", "must be true or false"))
        else:
            has_errors = _BOOLEANS[raw.lower()]
    raise_if(errors)
    async with admin_context(request).sessions() as session:
        page = await queries.list_sessions(
            session, f, has_errors=has_errors, limit=limit, cursor=cursor
        )
    return json_response({"sessions": page.items, "next_cursor": page.next_cursor})


async def get_session(request: web.Request) -> web.Response:
    """One session with its interceptions oldest first."""
    actor = await current_actor(request)
    async with admin_context(request).sessions() as session:
        try:
            found = await queries.get_session(
                session,
                request.match_info["session_id"],
                only_user_id=None if actor.is_admin else actor.user_id,
            )
        except ValueError as err:
            raise APIError(
                400,
                "Invalid session id.",
                "use the id of an entry of GET /api/v1/sessions",
            ) from err
    if found is None:
        raise not_found("Session")
    return json_response(found)


def add_routes(app: web.Application) -> None:
    """Register the session routes."""
    app.router.add_get("/api/v1/sessions", list_sessions)
    app.router.add_get("/api/v1/sessions/{session_id}", get_session)
