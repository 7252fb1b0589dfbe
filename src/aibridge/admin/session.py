"""``POST/DELETE /api/v1/session``: the dashboard's sign-in and sign-out.

Signing in exchanges a gateway key for two cookies: ``aibridge_session`` (the key itself,
HttpOnly so page scripts never see it, SameSite=Strict so other sites' requests never
carry it) and ``aibridge_csrf`` (random, readable by the page, echoed in ``X-CSRF-Token``
on unsafe requests; see :mod:`aibridge.admin.deps`). Both are session cookies: closing the
browser ends the sign-in. Only the admin API and ``/metrics``/``/readyz`` read the
session cookie; the data plane never does.
"""

from __future__ import annotations

import secrets

from aiohttp import web

from aibridge.admin.context import admin_context
from aibridge.admin.deps import ACTOR_KEY, CSRF_COOKIE, SESSION_COOKIE
from aibridge.admin.errors import APIError, Validation, database_unavailable, read_json_object
from aibridge.admin.users import get_me
from aibridge.auth import AuthError, AuthUnavailable


def _set_cookies(response: web.StreamResponse, request: web.Request, key: str) -> None:
    secure = request.secure
    response.set_cookie(
        SESSION_COOKIE, key, path="/", httponly=True, samesite="Strict", secure=secure
    )
    # 32 random bytes: unguessable, and different at every sign-in.
    response.set_cookie(
        CSRF_COOKIE, secrets.token_urlsafe(32), path="/", samesite="Strict", secure=secure
    )


async def sign_in(request: web.Request) -> web.StreamResponse:
    """Check the posted gateway key like any request's; on success set the session and
    CSRF cookies and answer with the ``/api/v1/me`` body."""
    # JSON only: a cross-site HTML form cannot send application/json without a CORS
    # preflight this gateway never grants, so another site cannot sign a browser in.
    if request.content_type != "application/json":
        raise APIError(
            415,
            "Unsupported media type.",
            'send Content-Type: application/json with a body like {"key": "aib-…"}',
        )
    body = await read_json_object(request)
    unknown = [Validation(name, "unknown field; allowed: key") for name in body if name != "key"]
    key = body.get("key")
    if not isinstance(key, str) or not key.strip():
        unknown.append(Validation("key", "required: the gateway key (aib-…) to sign in with"))
    if unknown:
        raise APIError(400, "Invalid sign-in request.", validations=unknown)
    assert isinstance(key, str)
    key = key.strip()
    try:
        actor = await admin_context(request).authenticator.authenticate(key)
    except AuthError as err:
        raise APIError(401, "Unauthorized.", str(err)) from err
    except AuthUnavailable as err:
        raise database_unavailable(str(err)) from err
    # The rest of this request runs as the key just checked (not any cookie it carried).
    request[ACTOR_KEY] = actor
    response = await get_me(request)
    _set_cookies(response, request, key)
    return response


async def sign_out(request: web.Request) -> web.Response:
    """Clear both cookies (204). Needs no valid key: signing out must work even after
    the key was revoked."""
    response = web.Response(status=204)
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.del_cookie(name, path="/", samesite="Strict")
    return response


def add_routes(app: web.Application) -> None:
    """Register the sign-in and sign-out routes."""
    app.router.add_post("/api/v1/session", sign_in)
    app.router.add_delete("/api/v1/session", sign_out)
