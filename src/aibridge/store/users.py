"""Users and gateway API keys: the repository shared by the admin API and the CLI.

Functions take an :class:`AsyncSession` whose transaction the caller owns (so an
audit row and the change commit together); only :func:`ensure_first_admin` opens its
own transactions. Nothing here knows about HTTP: failures are :class:`UserStoreError`
subclasses that say what was wrong and carry the offending ``field``.

Key secrets never leave this module except once, as the token returned by
:func:`create_key`; listings return :class:`KeyInfo`, which has no hash field.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.limits import (
    NO_LIMITS,
    Limits,
    limits_diff,
    limits_from_json,
    patch_limits,
    stored_limits,
)
from aibridge.store.audit import add_audit
from aibridge.store.locks import take_write_lock
from aibridge.store.models import USER_ROLES, USER_STATUSES, ApiKey, User
from aibridge.store.types import as_utc, utcnow
from aibridge.tokens import mint_token

log = logging.getLogger(__name__)

USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
_USERNAME_RE = re.compile(USERNAME_PATTERN)
USERNAME_RULE = (
    f"username must match {USERNAME_PATTERN} "
    "(1-63 characters: lowercase letters, digits, '.', '_', '-'; starting with a letter or digit)"
)
# Deliberately loose: one '@', no spaces, a dot in the domain. Deliverability is not our job.
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
MAX_EMAIL_LENGTH = 254
MAX_KEY_NAME_LENGTH = 128
FIRST_ADMIN_USERNAME = "admin"
BOOTSTRAP_KEY_NAME = "bootstrap"
# Arbitrary constant (distinct from the migration lock): serialises user writes that
# must see a consistent set of admins, across replicas sharing one PostgreSQL.
USERS_LOCK_ID = 0x41_49_42_55  # "AIBU"


class UserStoreError(Exception):
    """Base of every repository error; ``str(err)`` is safe to show to a caller."""

    field: str = ""


class InvalidValue(UserStoreError, ValueError):
    """A value failed validation; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class UserExists(UserStoreError):
    """The username is already taken (the API maps this to 409)."""

    field = "username"


class UserNotFound(UserStoreError, LookupError):
    """No user with that id or username."""


class KeyNotFound(UserStoreError, LookupError):
    """No API key with that id (for that user)."""


class LastAdminError(UserStoreError):
    """The change would leave the gateway without an active admin."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """Public view of an API key: everything except the secret hash."""

    id: str
    user_id: uuid.UUID
    name: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    limits: Limits = NO_LIMITS
    """The key's own limits (the user's apply too: the stricter wins)."""

    @classmethod
    def from_row(cls, key: ApiKey) -> KeyInfo:
        """Copy the public columns of ``key``."""
        return cls(
            id=key.id,
            user_id=key.user_id,
            name=key.name,
            created_at=key.created_at,
            expires_at=key.expires_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
            limits=limits_from_json(key.limits),
        )

    @property
    def status(self) -> str:
        """``revoked``, ``expired`` or ``active``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= utcnow():
            return "expired"
        return "active"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (datetimes as RFC 3339 strings)."""
        return {
            "id": self.id,
            "user_id": str(self.user_id),
            "name": self.name,
            "status": self.status,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "last_used_at": _iso(self.last_used_at),
            "revoked_at": _iso(self.revoked_at),
            "limits": self.limits.to_json(),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def user_as_dict(user: User) -> dict[str, Any]:
    """JSON-ready public form of a user."""
    return {
        "id": str(user.id),
        "username": user.username,
        "email": user.email,
        "role": user.role,
        "status": user.status,
        "created_at": _iso(user.created_at),
        "updated_at": _iso(user.updated_at),
        "limits": limits_from_json(user.limits).to_json(),
    }


# --- validation -------------------------------------------------------------------


def validate_username(username: object) -> str:
    """Return ``username`` if it follows the rule, else raise :class:`InvalidValue`."""
    if not isinstance(username, str) or not username:
        raise InvalidValue("username", "username is required")
    if not _USERNAME_RE.fullmatch(username):
        raise InvalidValue("username", f"{USERNAME_RULE}; got {username!r}")
    return username


def validate_email(email: object) -> str:
    """Return ``email`` (``""`` clears it) if plausible, else raise :class:`InvalidValue`."""
    if not isinstance(email, str):
        raise InvalidValue("email", "email must be a string")
    if email == "":
        return email
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL_RE.fullmatch(email):
        raise InvalidValue(
            "email", f"email {email!r} is not a valid address (e.g. bob@example.com)"
        )
    return email


def validate_role(role: object) -> str:
    """Return ``role`` if it is one of :data:`USER_ROLES`."""
    if not isinstance(role, str) or role not in USER_ROLES:
        raise InvalidValue("role", f"role must be one of {', '.join(USER_ROLES)}; got {role!r}")
    return role


def validate_status(status: object) -> str:
    """Return ``status`` if it is one of :data:`USER_STATUSES`."""
    if not isinstance(status, str) or status not in USER_STATUSES:
        raise InvalidValue(
            "status", f"status must be one of {', '.join(USER_STATUSES)}; got {status!r}"
        )
    return status


def validate_key_name(name: object) -> str:
    """Return ``name`` if it is a short single-line string."""
    if not isinstance(name, str):
        raise InvalidValue("name", "name must be a string")
    if len(name) > MAX_KEY_NAME_LENGTH:
        raise InvalidValue("name", f"name must be at most {MAX_KEY_NAME_LENGTH} characters")
    if any(ch in name for ch in "\r\n\t\x00"):
        raise InvalidValue("name", "name must be a single line without control characters")
    return name.strip()


def validate_expires_at(expires_at: datetime | None) -> datetime | None:
    """``expires_at`` must be timezone-aware and in the future (or None: never expires)."""
    if expires_at is None:
        return None
    if expires_at.tzinfo is None:
        raise InvalidValue("expires_at", "expires_at must include a timezone (e.g. ...Z)")
    try:
        expires_at = as_utc(expires_at)
    except ValueError as err:
        raise InvalidValue("expires_at", f"expires_at {err}") from err
    if expires_at <= utcnow():
        raise InvalidValue("expires_at", "expires_at must be in the future")
    return expires_at


# --- users ------------------------------------------------------------------------


async def _serialise_user_writes(session: AsyncSession) -> None:
    """Take a transaction-long lock that orders admin-set changes across processes (see
    :func:`~aibridge.store.locks.take_write_lock`)."""
    noop = update(User).where(text("1 = 0")).values(role=User.role)
    await take_write_lock(session, USERS_LOCK_ID, noop)


async def create_user(
    session: AsyncSession, username: str, email: str = "", role: str = "member"
) -> User:
    """Insert a new active user. Raises :class:`InvalidValue` or :class:`UserExists`."""
    username = validate_username(username)
    email = validate_email(email)
    role = validate_role(role)
    if await get_user_by_username(session, username) is not None:
        raise UserExists(f"a user named {username!r} already exists")
    now = utcnow()
    user = User(
        id=uuid.uuid4(),
        username=username,
        email=email,
        role=role,
        status="active",
        created_at=now,
        updated_at=now,
    )
    session.add(user)
    try:
        # No savepoint: pysqlite's RELEASE would commit the caller's transaction. A lost
        # race therefore ends the caller's transaction, which the error does anyway.
        await session.flush([user])
    except IntegrityError as exc:
        raise UserExists(f"a user named {username!r} already exists") from exc
    return user


async def get_user_by_username(session: AsyncSession, username: str) -> User | None:
    """The user called ``username``, or None."""
    return (
        await session.execute(select(User).where(User.username == username))
    ).scalar_one_or_none()


async def get_user(session: AsyncSession, ref: str | uuid.UUID) -> User | None:
    """Look a user up by id (UUID) or username; None when there is no such user.

    A string that parses as a UUID is tried as an id first, then as a username (the
    username rule allows UUID-shaped names).
    """
    if isinstance(ref, uuid.UUID):
        return await session.get(User, ref)
    try:
        user_id = uuid.UUID(ref)
    except ValueError:
        user_id = None
    if user_id is not None:
        user = await session.get(User, user_id)
        if user is not None:
            return user
    if not _USERNAME_RE.fullmatch(ref):
        return None
    return await get_user_by_username(session, ref)


async def require_user(session: AsyncSession, ref: str | uuid.UUID) -> User:
    """Like :func:`get_user` but raises :class:`UserNotFound`."""
    user = await get_user(session, ref)
    if user is None:
        raise UserNotFound(f"no user {str(ref)!r}")
    return user


async def list_users(session: AsyncSession) -> list[User]:
    """Every user, ordered by username."""
    return list((await session.execute(select(User).order_by(User.username))).scalars())


async def count_active_admins(session: AsyncSession) -> int:
    """Number of active users with the admin role."""
    stmt = (
        select(func.count()).select_from(User).where(User.role == "admin", User.status == "active")
    )
    return int((await session.execute(stmt)).scalar_one())


async def update_user(
    session: AsyncSession,
    user: User,
    *,
    email: str | None = None,
    role: str | None = None,
    status: str | None = None,
) -> dict[str, dict[str, str]]:
    """Apply the given changes; return ``{field: {"old", "new"}}`` for what changed.

    Raises :class:`InvalidValue`, or :class:`LastAdminError` when the change would leave
    no active admin (checked under a lock so two concurrent demotions cannot both win).
    """
    wanted: dict[str, str] = {}
    if email is not None:
        wanted["email"] = validate_email(email)
    if role is not None:
        wanted["role"] = validate_role(role)
    if status is not None:
        wanted["status"] = validate_status(status)
    if wanted.get("role", "admin") != "admin" or wanted.get("status", "active") != "active":
        # Might remove an active admin: take the lock, then decide on fresh rows.
        await _serialise_user_writes(session)
        await session.refresh(user)
    changes = {
        f: {"old": getattr(user, f), "new": v} for f, v in wanted.items() if getattr(user, f) != v
    }
    if not changes:
        return {}
    was_active_admin = user.role == "admin" and user.status == "active"
    stays_active_admin = (
        wanted.get("role", user.role) == "admin" and wanted.get("status", user.status) == "active"
    )
    if was_active_admin and not stays_active_admin and await count_active_admins(session) <= 1:
        raise LastAdminError(
            f"{user.username!r} is the last active admin; make another user an active admin "
            "before demoting or suspending this one"
        )
    for f, change in changes.items():
        setattr(user, f, change["new"])
    user.updated_at = utcnow()
    await session.flush([user])
    return changes


async def update_user_limits(
    session: AsyncSession, user: User, patch: object
) -> dict[str, dict[str, Any]]:
    """Apply an admin's ``"limits"`` patch (:func:`~aibridge.limits.patch_limits`) to
    ``user``; return ``{field: {"old", "new"}}`` for the limits that changed.

    Raises :class:`~aibridge.inputcheck.InputError` naming every bad field.
    """
    old = limits_from_json(user.limits)
    new = patch_limits(old, patch)
    changes = limits_diff(old, new)
    if changes:
        user.limits = stored_limits(new)
        user.updated_at = utcnow()
        await session.flush([user])
    return changes


# --- keys -------------------------------------------------------------------------


async def create_key(
    session: AsyncSession, user: User, name: str = "", expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Create a key for ``user``; return the row and the token (shown once, never stored)."""
    name = validate_key_name(name)
    expires_at = validate_expires_at(expires_at)
    new = mint_token()
    key = ApiKey(
        id=new.key_id,
        user_id=user.id,
        name=name,
        secret_hash=new.secret_hash,
        created_at=utcnow(),
        expires_at=expires_at,
    )
    session.add(key)
    await session.flush([key])
    return key, new.token


async def list_keys(session: AsyncSession, user: User) -> list[KeyInfo]:
    """The keys of ``user`` (revoked ones included), oldest first, without hashes."""
    rows = await session.execute(
        select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.created_at, ApiKey.id)
    )
    return [KeyInfo.from_row(k) for k in rows.scalars()]


async def get_key(session: AsyncSession, key_id: str, user: User | None = None) -> KeyInfo | None:
    """One key by id (restricted to ``user`` when given), or None."""
    stmt = select(ApiKey).where(ApiKey.id == key_id)
    if user is not None:
        stmt = stmt.where(ApiKey.user_id == user.id)
    key = (await session.execute(stmt)).scalar_one_or_none()
    return KeyInfo.from_row(key) if key is not None else None


async def update_key_limits(
    session: AsyncSession, key_id: str, patch: object, user: User | None = None
) -> tuple[KeyInfo, dict[str, dict[str, Any]]]:
    """Apply an admin's ``"limits"`` patch to key ``key_id`` (of ``user`` when given);
    return its view and ``{field: {"old", "new"}}`` for the limits that changed.

    Raises :class:`KeyNotFound` (also for a key of another ``user``) or
    :class:`~aibridge.inputcheck.InputError`. A revoked key's limits may still be set:
    they are only data until it works again, which it never does.
    """
    stmt = select(ApiKey).where(ApiKey.id == key_id)
    if user is not None:
        stmt = stmt.where(ApiKey.user_id == user.id)
    key = (await session.execute(stmt)).scalar_one_or_none()
    if key is None:
        raise KeyNotFound(
            f"no API key {key_id!r}" + (f" of user {user.username!r}" if user else "")
        )
    old = limits_from_json(key.limits)
    new = patch_limits(old, patch)
    changes = limits_diff(old, new)
    if changes:
        key.limits = stored_limits(new)
        await session.flush([key])
    return KeyInfo.from_row(key), changes


async def revoke_key(
    session: AsyncSession, key_id: str, user: User | None = None
) -> tuple[KeyInfo, bool]:
    """Revoke a key; return its view and whether this call revoked it.

    Idempotent: an already revoked key keeps its original ``revoked_at`` and returns
    ``False``. Raises :class:`KeyNotFound` (also for a key of another ``user``).
    """
    stmt = select(ApiKey).where(ApiKey.id == key_id)
    if user is not None:
        stmt = stmt.where(ApiKey.user_id == user.id)
    key = (await session.execute(stmt)).scalar_one_or_none()
    if key is None:
        raise KeyNotFound(
            f"no API key {key_id!r}" + (f" of user {user.username!r}" if user else "")
        )
    if key.revoked_at is not None:
        return KeyInfo.from_row(key), False
    key.revoked_at = utcnow()
    await session.flush([key])
    return KeyInfo.from_row(key), True


# --- bootstrap --------------------------------------------------------------------


async def ensure_first_admin(sessions: async_sessionmaker[AsyncSession]) -> str | None:
    """On a database without any user, create ``admin`` with a ``bootstrap`` key and
    return its token; otherwise return None.

    Safe when several replicas start at once: the check is repeated under a lock
    (advisory on PostgreSQL, the write lock on SQLite), and the unique username is the
    last line of defence — losing that race also returns None.
    """
    async with sessions() as session:
        if (await session.execute(select(User.id).limit(1))).first() is not None:
            return None
    try:
        async with sessions() as session, session.begin():
            await _serialise_user_writes(session)
            if (await session.execute(select(User.id).limit(1))).first() is not None:
                return None
            user = await create_user(session, FIRST_ADMIN_USERNAME, role="admin")
            key, token = await create_key(session, user, BOOTSTRAP_KEY_NAME)
            add_audit(
                session,
                actor_id=None,
                actor_username="system",
                action="create",
                resource_type="user",
                resource_id=str(user.id),
                resource_name=user.username,
                diff={"role": "admin", "bootstrap_key_id": key.id},
                status_code=201,
            )
    except UserExists:
        return None
    except IntegrityError:
        return None
    log.info("created the first admin user", extra={"username": FIRST_ADMIN_USERNAME})
    return token


# --- audit rows (shared by the admin API and the CLI) -----------------------------


def user_updated_audit(user: User, changes: dict[str, Any]) -> dict[str, Any]:
    """:func:`~aibridge.store.audit.add_audit` arguments (all but the actor) for an update
    of ``user`` that made ``changes``."""
    return {
        "action": "update",
        "resource_type": "user",
        "resource_id": str(user.id),
        "resource_name": user.username,
        "diff": changes,
    }


def key_created_audit(user: User, key: ApiKey) -> dict[str, Any]:
    """:func:`~aibridge.store.audit.add_audit` arguments (all but the actor) for ``key``,
    just created for ``user``."""
    return {
        "action": "create",
        "resource_type": "api_key",
        "resource_id": key.id,
        "resource_name": key.name,
        "diff": {
            "user_id": str(user.id),
            "username": user.username,
            "name": key.name,
            "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        },
        "status_code": 201,
    }


def key_limits_audit(info: KeyInfo, owner_name: str, changes: dict[str, Any]) -> dict[str, Any]:
    """:func:`~aibridge.store.audit.add_audit` arguments (all but the actor) for new
    limits on the key ``info`` of the user named ``owner_name``."""
    return {
        "action": "update",
        "resource_type": "api_key",
        "resource_id": info.id,
        "resource_name": info.name,
        "diff": {"username": owner_name, "limits": changes},
    }


def key_revoked_audit(info: KeyInfo, owner_name: str) -> dict[str, Any]:
    """:func:`~aibridge.store.audit.add_audit` arguments (all but the actor) for the key
    ``info``, just revoked, of the user named ``owner_name``."""
    return {
        "action": "revoke",
        "resource_type": "api_key",
        "resource_id": info.id,
        "resource_name": info.name,
        "diff": {"username": owner_name, "revoked_at": info.as_dict()["revoked_at"]},
        "status_code": 204,
    }
