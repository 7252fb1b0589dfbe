"""Request helpers shared by admin handlers: the caller, and role checks.

A caller is identified by a gateway key in ``Authorization``/``X-Api-Key`` or, for the
dashboard, by the ``aibridge_session`` cookie that ``POST /api/v1/session`` sets (see
:mod:`aibridge.admin.session`). A cookie is sent by the browser on its own, so a
cookie-authenticated request that changes something must also prove it came from our
own pages: its ``X-CSRF-Token`` header must equal the ``aibridge_csrf`` cookie, which
only a page of the gateway's own origin can read (double-submit).
"""

from __future__ import annotations

import hmac

from aiohttp import web

from aibridge.actor import Actor
from aibridge.admin.context import admin_context
from aibridge.admin.errors import APIError, database_unavailable
from aibridge.auth import AuthError, AuthUnavailable, extract_token

ACTOR_KEY = web.RequestKey("actor", Actor)

SESSION_COOKIE = "aibridge_session"
"""HttpOnly cookie holding the gateway key of a dashboard sign-in."""
CSRF_COOKIE = "aibridge_csrf"
"""JS-readable cookie whose value cookie-authenticated unsafe requests echo in
:data:`CSRF_HEADER`."""
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _check_csrf(request: web.Request) -> None:
    """403 unless the CSRF header equals the CSRF cookie (both present)."""
    sent = request.headers.get(CSRF_HEADER, "")
    expected = request.cookies.get(CSRF_COOKIE, "")
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise APIError(
            403,
            "CSRF token missing or wrong",
            f"send the {CSRF_COOKIE} cookie's value in {CSRF_HEADER}",
        )


async def current_actor(request: web.Request) -> Actor:
    """Authenticate the caller by gateway key (header first, then the session cookie);
    401 when missing, invalid, expired or revoked, 403 for a cookie-authenticated unsafe
    request without the matching CSRF token."""
    cached = request.get(ACTOR_KEY)
    if cached is not None:
        return cached
    token = extract_token(request.headers)
    from_cookie = False
    if token is None:
        token = request.cookies.get(SESSION_COOKIE) or None
        from_cookie = token is not None
    if from_cookie and request.method not in SAFE_METHODS:
        # Checked before the key: a forged request learns nothing about the cookie's key.
        _check_csrf(request)
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
