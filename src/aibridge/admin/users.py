"""Admin API for users and their gateway API keys, plus ``/api/v1/me`` for everyone.

Routes (admin role unless noted):

* ``GET/POST /api/v1/users``
* ``GET/PATCH /api/v1/users/{id_or_username}`` (PATCH: ``email``, ``role``, ``status``,
  ``limits``)
* ``GET/POST /api/v1/users/{id_or_username}/keys`` (POST shows the token once)
* ``GET/PATCH /api/v1/users/{id_or_username}/keys/{key_id}`` (PATCH: ``limits``)
* ``DELETE /api/v1/users/{id_or_username}/keys/{key_id}`` (revoke, 204, idempotent)
* ``GET /api/v1/me`` and ``GET /api/v1/me/keys`` (any authenticated user)

``"limits"`` (:mod:`aibridge.limits`) is patched per field: ``null`` clears every limit;
in an object, a field present is set (``null`` clears it) and an absent one is kept.

Every write adds an audit row in the same transaction. After the commit, changes that
must lock a key out (revocation, suspension, role change), change what it may do
(limits) or add one (authenticators remember which key ids exist) invalidate this
replica's authenticator cache at once and publish ``api_keys_changed`` for the other
replicas (payload ``user:<id>`` for a user, the key id for a key).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from aibridge.actor import Actor
from aibridge.admin.budget_status import budget_status
from aibridge.admin.context import AdminContext, admin_context
from aibridge.admin.deps import current_actor, require_admin
from aibridge.admin.errors import (
    APIError,
    Validation,
    input_error,
    read_json_object,
)
from aibridge.admin.errors import validations as validations_of
from aibridge.httputil import json_response
from aibridge.inputcheck import InputError
from aibridge.limits import parse_limits
from aibridge.store import users as repo
from aibridge.store.audit import add_audit
from aibridge.store.models import User
from aibridge.store.pubsub import API_KEYS_CHANGED, publish_quietly
from aibridge.store.types import utcnow

MAX_EXPIRES_IN_DAYS = 3650


def _check_fields(body: dict[str, object], allowed: tuple[str, ...]) -> list[Validation]:
    """Validations for fields the endpoint does not know (typos must not pass silently)."""
    return [
        Validation(name, f"unknown field; allowed: {', '.join(allowed)}")
        for name in body
        if name not in allowed
    ]


def _collect(
    body: dict[str, object],
    field: str,
    check: Callable[[object], Any],
    validations: list[Validation],
) -> Any:
    """Run ``check`` on ``body[field]`` (when present), turning a failure into a validation."""
    if field not in body:
        return None
    try:
        return check(body[field])
    except repo.InvalidValue as err:
        validations.append(Validation(field, str(err)))
        return None


def _check_limits(body: dict[str, object], validations: list[Validation]) -> None:
    """Validate ``body["limits"]`` (when present) before any transaction starts, so its
    errors are reported together with those of the other fields."""
    if "limits" not in body:
        return
    try:
        parse_limits(body["limits"])
    except InputError as err:
        validations.extend(validations_of(err.errors))


async def _announce_user_change(admin: AdminContext, user: User) -> None:
    """Cached actors carry role, status and limits: drop them here now, elsewhere via
    pub/sub."""
    admin.authenticator.invalidate_user(user.id)
    await publish_quietly(admin.pubsub, API_KEYS_CHANGED, f"user:{user.id}".encode())


def _invalid(message: str, validations: list[Validation]) -> APIError:
    return APIError(400, message, "fix the fields listed in validations", validations)


async def _require_user(session: AsyncSession, ref: str) -> User:
    user = await repo.get_user(session, ref)
    if user is None:
        raise APIError(404, "User not found.", f"no user with id or username {ref!r}")
    return user


async def _load_user(admin: AdminContext, ref: str) -> User:
    async with admin.sessions() as session:
        return await _require_user(session, ref)


def _audit(session: AsyncSession, actor: Actor, **kwargs: Any) -> None:
    add_audit(session, actor_id=actor.user_id, actor_username=actor.username, **kwargs)


# --- users ------------------------------------------------------------------------


async def list_users(request: web.Request) -> web.Response:
    """``GET /api/v1/users``: every user, ordered by username."""
    await require_admin(request)
    async with admin_context(request).sessions() as session:
        users = await repo.list_users(session)
    return json_response([repo.user_as_dict(u) for u in users])


async def create_user(request: web.Request) -> web.Response:
    """``POST /api/v1/users`` with ``{"username", "email"?, "role"?}`` → 201 user."""
    actor = await require_admin(request)
    body = await read_json_object(request)
    validations = _check_fields(body, ("username", "email", "role"))
    if "username" not in body:
        validations.append(Validation("username", "username is required"))
    username = _collect(body, "username", repo.validate_username, validations)
    email = _collect(body, "email", repo.validate_email, validations)
    role = _collect(body, "role", repo.validate_role, validations)
    if validations:
        raise _invalid("Invalid user request.", validations)
    admin = admin_context(request)
    try:
        async with admin.sessions() as session, session.begin():
            user = await repo.create_user(session, username, email or "", role or "member")
            _audit(
                session,
                actor,
                action="create",
                resource_type="user",
                resource_id=str(user.id),
                resource_name=user.username,
                diff={"username": user.username, "email": user.email, "role": user.role},
                status_code=201,
            )
    except repo.UserExists as err:
        raise APIError(409, "User already exists.", f"{err}; choose another username") from err
    return json_response(repo.user_as_dict(user), status=201)


async def get_user(request: web.Request) -> web.Response:
    """``GET /api/v1/users/{id_or_username}``."""
    await require_admin(request)
    user = await _load_user(admin_context(request), request.match_info["user"])
    return json_response(repo.user_as_dict(user))


async def update_user(request: web.Request) -> web.Response:
    """``PATCH /api/v1/users/{id_or_username}`` with any of ``email``, ``role``,
    ``status``, ``limits``.

    Suspension, role and limits changes take effect at once on every replica.
    """
    actor = await require_admin(request)
    body = await read_json_object(request)
    allowed = ("email", "role", "status", "limits")
    validations = _check_fields(body, allowed)
    if "username" in body:
        validations = [v for v in validations if v.field != "username"]
        validations.append(Validation("username", "username cannot be changed"))
    email = _collect(body, "email", repo.validate_email, validations)
    role = _collect(body, "role", repo.validate_role, validations)
    status = _collect(body, "status", repo.validate_status, validations)
    _check_limits(body, validations)
    if validations:
        raise _invalid("Invalid user request.", validations)
    if not any(f in body for f in allowed):
        raise APIError(400, "At least one field must be provided.", f"send any of {allowed}")
    admin = admin_context(request)
    ref = request.match_info["user"]
    try:
        async with admin.sessions() as session, session.begin():
            user = await _require_user(session, ref)
            changes: dict[str, Any] = await repo.update_user(
                session, user, email=email, role=role, status=status
            )
            if "limits" in body:
                limits = await repo.update_user_limits(session, user, body["limits"])
                if limits:
                    changes["limits"] = limits
            if changes:
                _audit(session, actor, **repo.user_updated_audit(user, changes))
    except repo.LastAdminError as err:
        raise APIError(400, "Cannot remove the last active admin.", str(err)) from err
    except InputError as err:  # checked above; only a race with a rule change lands here
        raise input_error(err) from err
    # Announced whenever these fields were sent, changed or not: the row may already hold
    # the value (written by the CLI, which a SQLite gateway only sees when its cache
    # entry expires), and re-sending it is how an operator says "apply this now".
    if body.keys() & {"role", "status", "limits"}:
        await _announce_user_change(admin, user)
    return json_response(repo.user_as_dict(user))


# --- keys -------------------------------------------------------------------------


def _parse_expiry(body: dict[str, object], validations: list[Validation]) -> datetime | None:
    """``expires_at`` (RFC 3339, future) or ``expires_in_days`` (positive integer)."""
    if "expires_at" in body and "expires_in_days" in body:
        validations.append(
            Validation("expires_in_days", "send either expires_at or expires_in_days, not both")
        )
        return None
    raw_at = body.get("expires_at")
    if raw_at is not None:
        if not isinstance(raw_at, str):
            validations.append(Validation("expires_at", "expires_at must be an RFC 3339 string"))
            return None
        try:
            when = datetime.fromisoformat(raw_at)
        except ValueError:
            validations.append(
                Validation(
                    "expires_at",
                    f"expires_at {raw_at!r} is not an RFC 3339 timestamp "
                    "(e.g. 2030-01-31T12:00:00Z)",
                )
            )
            return None
        try:
            return repo.validate_expires_at(when)
        except repo.InvalidValue as err:
            validations.append(Validation("expires_at", str(err)))
            return None
    days = body.get("expires_in_days")
    if days is not None:
        if (
            isinstance(days, bool)
            or not isinstance(days, int)
            or not 1 <= days <= MAX_EXPIRES_IN_DAYS
        ):
            validations.append(
                Validation(
                    "expires_in_days",
                    f"expires_in_days must be an integer from 1 to {MAX_EXPIRES_IN_DAYS}",
                )
            )
            return None
        return utcnow() + timedelta(days=days)
    return None


async def list_user_keys(request: web.Request) -> web.Response:
    """``GET /api/v1/users/{id_or_username}/keys``: never includes secrets or hashes."""
    await require_admin(request)
    admin = admin_context(request)
    user = await _load_user(admin, request.match_info["user"])
    async with admin.sessions() as session:
        keys = await repo.list_keys(session, user)
    return json_response([k.as_dict() for k in keys])


async def create_user_key(request: web.Request) -> web.Response:
    """``POST /api/v1/users/{id_or_username}/keys`` → 201 with the token, shown only now."""
    actor = await require_admin(request)
    body = await read_json_object(request)
    validations = _check_fields(body, ("name", "expires_at", "expires_in_days"))
    name = _collect(body, "name", repo.validate_key_name, validations)
    expires_at = _parse_expiry(body, validations)
    if validations:
        raise _invalid("Invalid API key request.", validations)
    admin = admin_context(request)
    ref = request.match_info["user"]
    async with admin.sessions() as session, session.begin():
        user = await _require_user(session, ref)
        key, token = await repo.create_key(session, user, name or "", expires_at)
        _audit(session, actor, **repo.key_created_audit(user, key))
    # Authenticators remember which key ids exist: tell them about this one.
    admin.authenticator.invalidate(key.id)
    await publish_quietly(admin.pubsub, API_KEYS_CHANGED, key.id.encode())
    info = repo.KeyInfo.from_row(key).as_dict()
    info["token"] = token
    return json_response(info, status=201)


async def get_user_key(request: web.Request) -> web.Response:
    """``GET /api/v1/users/{id_or_username}/keys/{key_id}``: one key, without secrets."""
    await require_admin(request)
    admin = admin_context(request)
    ref, key_id = request.match_info["user"], request.match_info["key_id"]
    async with admin.sessions() as session:
        user = await _require_user(session, ref)
        info = await repo.get_key(session, key_id, user)
    if info is None:
        raise APIError(
            404, "API key not found.", f"no API key {key_id!r} of user {user.username!r}"
        )
    return json_response(info.as_dict())


async def update_user_key(request: web.Request) -> web.Response:
    """``PATCH /api/v1/users/{id_or_username}/keys/{key_id}`` with ``limits``: the key's
    own limits (the user's apply too; the stricter wins), at once on every replica."""
    actor = await require_admin(request)
    body = await read_json_object(request)
    validations = _check_fields(body, ("limits",))
    _check_limits(body, validations)
    if validations:
        raise _invalid("Invalid API key request.", validations)
    if "limits" not in body:
        raise APIError(400, "At least one field must be provided.", "send limits")
    admin = admin_context(request)
    ref, key_id = request.match_info["user"], request.match_info["key_id"]
    try:
        async with admin.sessions() as session, session.begin():
            user = await _require_user(session, ref)
            info, changes = await repo.update_key_limits(session, key_id, body["limits"], user)
            if changes:
                _audit(session, actor, **repo.key_limits_audit(info, user.username, changes))
    except repo.KeyNotFound as err:
        raise APIError(404, "API key not found.", str(err)) from err
    except InputError as err:  # checked above; only a race with a rule change lands here
        raise input_error(err) from err
    # Announced even when nothing changed (see update_user).
    admin.authenticator.invalidate(key_id)
    await publish_quietly(admin.pubsub, API_KEYS_CHANGED, key_id.encode())
    return json_response(info.as_dict())


async def revoke_user_key(request: web.Request) -> web.Response:
    """``DELETE /api/v1/users/{id_or_username}/keys/{key_id}`` → 204 (also when already
    revoked); the key stops working at once on every replica."""
    actor = await require_admin(request)
    admin = admin_context(request)
    ref, key_id = request.match_info["user"], request.match_info["key_id"]
    async with admin.sessions() as session, session.begin():
        user = await _require_user(session, ref)
        try:
            info, changed = await repo.revoke_key(session, key_id, user)
        except repo.KeyNotFound as err:
            raise APIError(404, "API key not found.", str(err)) from err
        if changed:
            _audit(session, actor, **repo.key_revoked_audit(info, user.username))
    admin.authenticator.invalidate(key_id)
    if changed:
        await publish_quietly(admin.pubsub, API_KEYS_CHANGED, key_id.encode())
    return web.Response(status=204)


# --- me ---------------------------------------------------------------------------


async def _me(request: web.Request) -> tuple[AdminContext, User]:
    actor = await current_actor(request)
    admin = admin_context(request)
    async with admin.sessions() as session:
        user = await repo.get_user(session, actor.user_id)
    if user is None:
        # Deleted between authentication and now.
        raise APIError(401, "Unauthorized.", "the user of this API key no longer exists")
    return admin, user


async def get_me(request: web.Request) -> web.Response:
    """``GET /api/v1/me``: the caller's own user (any role), the limits that apply to
    this key, and the budget status when a budget applies.

    ``limits`` are the user's own over the configured defaults and ``key_limits`` the
    presented key's own, both as the authenticator holds them (what is enforced now); a
    request must pass both. ``budget`` (absent when none applies) is described in
    :mod:`aibridge.admin.budget_status`.
    """
    admin, user = await _me(request)
    actor = await current_actor(request)
    body = repo.user_as_dict(user)
    # Which of the caller's keys authenticated this request (handy for `whoami`).
    body["key_id"] = actor.key_id
    body["limits"] = actor.user_limits.inherit(admin.default_limits).to_json()
    body["key_limits"] = actor.key_limits.to_json()
    async with admin.sessions() as session:
        status = await budget_status(
            session, actor, admin.default_limits, admin.budget_zone, admin.clock.now()
        )
    if status is not None:
        body["budget"] = status.to_json(admin.budget_soft_fraction)
    return json_response(body)


async def list_my_keys(request: web.Request) -> web.Response:
    """``GET /api/v1/me/keys``: the caller's own keys, without secrets."""
    admin, user = await _me(request)
    async with admin.sessions() as session:
        keys = await repo.list_keys(session, user)
    return json_response([k.as_dict() for k in keys])


def add_routes(app: web.Application) -> None:
    """Register the user, key and ``me`` routes on ``app``."""
    r = app.router
    r.add_get("/api/v1/users", list_users)
    r.add_post("/api/v1/users", create_user)
    r.add_get("/api/v1/users/{user}", get_user)
    r.add_patch("/api/v1/users/{user}", update_user)
    r.add_get("/api/v1/users/{user}/keys", list_user_keys)
    r.add_post("/api/v1/users/{user}/keys", create_user_key)
    r.add_get("/api/v1/users/{user}/keys/{key_id}", get_user_key)
    r.add_patch("/api/v1/users/{user}/keys/{key_id}", update_user_key)
    r.add_delete("/api/v1/users/{user}/keys/{key_id}", revoke_user_key)
    r.add_get("/api/v1/me", get_me)
    r.add_get("/api/v1/me/keys", list_my_keys)
