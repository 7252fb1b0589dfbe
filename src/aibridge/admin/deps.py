"""Request helpers shared by admin handlers: the caller, and role checks."""

from __future__ import annotations

from aiohttp import web

from aibridge.actor import Actor
from aibridge.admin.context import admin_context
from aibridge.admin.errors import APIError, database_unavailable
from aibridge.auth import AuthError, AuthUnavailable, extract_token

ACTOR_KEY = web.RequestKey("actor", Actor)


async def current_actor(request: web.Request) -> Actor:
    """Authenticate the caller by gateway key; 401 when missing, invalid, expired or revoked."""
    cached = request.get(ACTOR_KEY)
    if cached is not None:
        return cached
    token = extract_token(request.headers)
    try:
        actor = await admin_context(request).authenticator.authenticate(token)
    except AuthError as err:
        raise APIError(401, "Unauthorized.", str(err)) from err
    except AuthUnavailable as err:
        raise database_unavailable(str(err)) from err
    request[ACTOR_KEY] = actor
    return actor


async def require_admin(request: web.Request) -> Actor:
    """The caller, who must have the admin role (403 otherwise)."""
    actor = await current_actor(request)
    if not actor.is_admin:
        raise APIError(403, "Forbidden.", "this endpoint requires the admin role")
    return actor
