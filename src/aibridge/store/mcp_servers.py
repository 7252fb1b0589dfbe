"""Repository for ``mcp_servers`` and ``mcp_user_credentials``.

Every function works inside the caller's session/transaction. Secrets (a server's static
header value, users' tokens) are sealed on the way in and unsealed on the way out, so
callers see plaintext records and must mask them before showing them to anyone.

Server writes bump the config version that the provider snapshot is built from (the
snapshot carries the enabled MCP servers), *first*, for the same reason as provider
writes (:mod:`aibridge.store.providers`): on SQLite it takes the write lock before any
read, on PostgreSQL it row-locks the counter; and the replicas' reconcile poll then heals
a lost ``mcp_servers_changed`` notification. Credential writes do not touch it: they
change no snapshot, only one user's bridges.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from aibridge.secrets_mask import mask_secret
from aibridge.store import config_version
from aibridge.store.audit import add_audit
from aibridge.store.crypto import Encryptor, seal, unseal
from aibridge.store.models import MCPServer, MCPUserCredential
from aibridge.store.types import utcnow

AUTH_NONE = "none"
AUTH_HEADER = "header"
AUTH_PER_USER = "per_user"
AUTH_TYPES = (AUTH_NONE, AUTH_HEADER, AUTH_PER_USER)
"""``mcp_servers.auth_type`` values (the API's ``auth.type``)."""

AUDIT_MCP_SERVER = "mcp_server"
AUDIT_MCP_CREDENTIAL = "mcp_user_credential"


class MCPServerNotFoundError(LookupError):
    """No MCP server with that id."""


class MCPServerExistsError(Exception):
    """Another MCP server already uses this name (the unique index said so)."""

    def __init__(self, name: str) -> None:
        super().__init__(f'MCP server "{name}" already exists.')
        self.name = name


class HeaderValueRequiredError(ValueError):
    """A patch switched a server to header auth without giving the header's value."""


@dataclass(frozen=True, slots=True)
class MCPAuth:
    """How the gateway authenticates to a server: ``type`` is one of :data:`AUTH_TYPES`;
    ``header_name``/``header_value`` are set for ``header`` only."""

    type: str = AUTH_NONE
    header_name: str | None = None
    header_value: str | None = field(default=None, repr=False)

    @property
    def masked_value(self) -> str | None:
        """The header value as it may be shown, or None."""
        return mask_secret(self.header_value) if self.header_value else None


@dataclass(frozen=True, slots=True)
class MCPServerRecord:
    """An MCP server row, secrets decrypted. Empty regexes are None."""

    id: uuid.UUID
    name: str
    url: str
    enabled: bool
    tool_allow: str | None
    tool_deny: str | None
    auth: MCPAuth
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class MCPServerSpec:
    """Everything needed to create a server (already validated)."""

    name: str
    url: str
    enabled: bool = True
    tool_allow: str | None = None
    tool_deny: str | None = None
    auth: MCPAuth = MCPAuth()


@dataclass(frozen=True, slots=True)
class MCPServerPatch:
    """A partial update: ``None`` means unchanged, except the regexes, governed by
    ``tool_allow_set``/``tool_deny_set`` (so that ``None`` clears them). An ``auth`` of
    type ``header`` whose ``header_value`` is None keeps the current value, which the
    server must then already have."""

    name: str | None = None
    url: str | None = None
    enabled: bool | None = None
    tool_allow: str | None = None
    tool_allow_set: bool = False
    tool_deny: str | None = None
    tool_deny_set: bool = False
    auth: MCPAuth | None = None

    def is_empty(self) -> bool:
        """True when the patch changes nothing."""
        return (
            self.name is None
            and self.url is None
            and self.enabled is None
            and not self.tool_allow_set
            and not self.tool_deny_set
            and self.auth is None
        )


@dataclass(frozen=True, slots=True)
class MCPServerChange:
    """The outcome of an update; ``credentials_dropped`` counts the users' tokens deleted
    because the server stopped being ``per_user``."""

    before: MCPServerRecord
    after: MCPServerRecord
    credentials_dropped: int = 0


@dataclass(frozen=True, slots=True)
class CredentialRecord:
    """One user's token for one server, decrypted."""

    server_id: uuid.UUID
    user_id: uuid.UUID
    token: str = field(repr=False)
    created_at: datetime
    updated_at: datetime


# --- encoding -------------------------------------------------------------------------


def _encode_auth(encryptor: Encryptor | None, auth: MCPAuth) -> tuple[str | None, str | None]:
    if auth.type != AUTH_HEADER:
        return None, None
    # Name and value sealed together: one ciphertext per row, like provider settings.
    payload = orjson.dumps({"name": auth.header_name, "value": auth.header_value}).decode()
    return seal(encryptor, payload)


def _decode_auth(encryptor: Encryptor | None, row: MCPServer) -> MCPAuth:
    if row.auth_type != AUTH_HEADER or row.auth is None:
        return MCPAuth(row.auth_type)
    data = orjson.loads(unseal(encryptor, row.auth, row.auth_key_id))
    return MCPAuth(AUTH_HEADER, str(data.get("name") or ""), str(data.get("value") or ""))


def _record(encryptor: Encryptor | None, row: MCPServer) -> MCPServerRecord:
    return MCPServerRecord(
        id=row.id,
        name=row.name,
        url=row.url,
        enabled=row.enabled,
        tool_allow=row.tool_allow_regex or None,
        tool_deny=row.tool_deny_regex or None,
        auth=_decode_auth(encryptor, row),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


# --- reads ----------------------------------------------------------------------------


async def list_servers(
    session: AsyncSession, encryptor: Encryptor | None, *, include_disabled: bool = True
) -> list[MCPServerRecord]:
    """Servers ordered by name."""
    stmt = select(MCPServer).order_by(MCPServer.name).execution_options(populate_existing=True)
    if not include_disabled:
        stmt = stmt.where(MCPServer.enabled.is_(True))
    rows = (await session.scalars(stmt)).all()
    return [_record(encryptor, row) for row in rows]


async def load_enabled_servers(
    session: AsyncSession, encryptor: Encryptor | None
) -> list[MCPServerRecord]:
    """Every enabled server, in one read (the reloader calls it in its reload transaction)."""
    return await list_servers(session, encryptor, include_disabled=False)


async def get_server(
    session: AsyncSession, encryptor: Encryptor | None, server_id: uuid.UUID
) -> MCPServerRecord | None:
    """The server with this id, or None."""
    row = await session.get(MCPServer, server_id, populate_existing=True)
    return _record(encryptor, row) if row is not None else None


async def get_server_by_name(
    session: AsyncSession, encryptor: Encryptor | None, name: str
) -> MCPServerRecord | None:
    """The server with this name, or None."""
    row = await session.scalar(
        select(MCPServer).where(MCPServer.name == name).execution_options(populate_existing=True)
    )
    return _record(encryptor, row) if row is not None else None


# --- writes ---------------------------------------------------------------------------


def _is_name_conflict(exc: IntegrityError) -> bool:
    text_ = str(exc.orig).lower()
    return "uq_mcp_servers_name" in text_ or "mcp_servers.name" in text_


async def create_server(
    session: AsyncSession, encryptor: Encryptor | None, spec: MCPServerSpec
) -> MCPServerRecord:
    """Insert a server; raise :class:`MCPServerExistsError` on a duplicate name (detected
    by the unique index, so it is race-free)."""
    await config_version.bump(session)
    now = utcnow()
    stored, key_id = _encode_auth(encryptor, spec.auth)
    row = MCPServer(
        id=uuid.uuid4(),
        name=spec.name,
        url=spec.url,
        tool_allow_regex=spec.tool_allow or "",
        tool_deny_regex=spec.tool_deny or "",
        auth_type=spec.auth.type,
        auth=stored,
        auth_key_id=key_id,
        enabled=spec.enabled,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    try:
        await session.flush()
    except IntegrityError as exc:
        if _is_name_conflict(exc):
            raise MCPServerExistsError(spec.name) from exc
        raise
    return MCPServerRecord(
        id=row.id,
        name=row.name,
        url=row.url,
        enabled=row.enabled,
        tool_allow=spec.tool_allow,
        tool_deny=spec.tool_deny,
        auth=spec.auth,
        created_at=now,
        updated_at=now,
    )


async def update_server(
    session: AsyncSession,
    encryptor: Encryptor | None,
    server_id: uuid.UUID,
    patch: MCPServerPatch,
) -> MCPServerChange:
    """Apply ``patch`` to server ``server_id``.

    Raises :class:`MCPServerNotFoundError`, :class:`MCPServerExistsError` (a rename to a
    taken name) or :class:`HeaderValueRequiredError`; the caller's transaction must then
    be rolled back. Leaving ``per_user`` auth deletes the users' tokens for the server:
    they would otherwise linger as secrets nobody uses, and silently come back into use
    if the server became ``per_user`` again.
    """
    await config_version.bump(session)
    row = await session.scalar(
        select(MCPServer)
        .where(MCPServer.id == server_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if row is None:
        raise MCPServerNotFoundError(str(server_id))
    before = _record(encryptor, row)
    dropped = 0
    if patch.name is not None:
        row.name = patch.name
    if patch.url is not None:
        row.url = patch.url
    if patch.enabled is not None:
        row.enabled = patch.enabled
    if patch.tool_allow_set:
        row.tool_allow_regex = patch.tool_allow or ""
    if patch.tool_deny_set:
        row.tool_deny_regex = patch.tool_deny or ""
    if patch.auth is not None:
        auth = patch.auth
        if auth.type == AUTH_HEADER and auth.header_value is None:
            if before.auth.type != AUTH_HEADER:
                raise HeaderValueRequiredError(
                    "auth.value is required when switching a server to header auth"
                )
            auth = MCPAuth(AUTH_HEADER, auth.header_name, before.auth.header_value)
        row.auth_type = auth.type
        row.auth, row.auth_key_id = _encode_auth(encryptor, auth)
        if before.auth.type == AUTH_PER_USER and auth.type != AUTH_PER_USER:
            result = await session.execute(
                delete(MCPUserCredential)
                .where(MCPUserCredential.server_id == server_id)
                .execution_options(synchronize_session=False)
            )
            dropped = int(getattr(result, "rowcount", 0) or 0)
    row.updated_at = utcnow()
    try:
        await session.flush()
    except IntegrityError as exc:
        if patch.name is not None and _is_name_conflict(exc):
            raise MCPServerExistsError(patch.name) from exc
        raise
    return MCPServerChange(before, _record(encryptor, row), dropped)


async def delete_server(session: AsyncSession, server_id: uuid.UUID) -> bool:
    """Delete the server and its users' tokens. False when it did not exist (nothing is
    written then)."""
    row = await session.get(MCPServer, server_id)
    if row is None:
        return False
    await config_version.bump(session)
    # Explicitly rather than by the foreign key's cascade, which SQLite only honours with
    # the foreign_keys pragma (set by our engine, not necessarily by every tool).
    await session.execute(
        delete(MCPUserCredential)
        .where(MCPUserCredential.server_id == server_id)
        .execution_options(synchronize_session=False)
    )
    await session.delete(row)
    await session.flush()
    return True


# --- per-user credentials -------------------------------------------------------------


async def get_credential(
    session: AsyncSession, encryptor: Encryptor | None, server_id: uuid.UUID, user_id: uuid.UUID
) -> CredentialRecord | None:
    """``user_id``'s token for ``server_id``, or None."""
    row = await session.scalar(
        select(MCPUserCredential).where(
            MCPUserCredential.server_id == server_id, MCPUserCredential.user_id == user_id
        )
    )
    if row is None:
        return None
    return CredentialRecord(
        server_id=row.server_id,
        user_id=row.user_id,
        token=unseal(encryptor, row.credential, row.credential_key_id),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def credential_server_ids(
    session: AsyncSession, user_id: uuid.UUID, server_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of ``server_ids`` ``user_id`` has a token for (nothing is decrypted)."""
    if not server_ids:
        return set()
    rows = await session.scalars(
        select(MCPUserCredential.server_id).where(
            MCPUserCredential.user_id == user_id,
            MCPUserCredential.server_id.in_(list(server_ids)),
        )
    )
    return set(rows.all())


async def put_credential(
    session: AsyncSession,
    encryptor: Encryptor | None,
    server_id: uuid.UUID,
    user_id: uuid.UUID,
    token: str,
) -> tuple[CredentialRecord, bool]:
    """Set ``user_id``'s token for ``server_id``; returns it and whether it was new.

    The server row is read ``FOR UPDATE`` by the caller's lookup when it needs the server
    to stay ``per_user`` until commit (see :func:`lock_server`).
    """
    now = utcnow()
    stored, key_id = seal(encryptor, token)
    row = await session.scalar(
        select(MCPUserCredential)
        .where(MCPUserCredential.server_id == server_id, MCPUserCredential.user_id == user_id)
        .with_for_update()
    )
    created = row is None
    if row is None:
        row = MCPUserCredential(
            id=uuid.uuid4(),
            server_id=server_id,
            user_id=user_id,
            credential=stored,
            credential_key_id=key_id,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
    else:
        row.credential, row.credential_key_id, row.updated_at = stored, key_id, now
    await session.flush()
    record = CredentialRecord(server_id, user_id, token, row.created_at, row.updated_at)
    return record, created


async def delete_credential(
    session: AsyncSession, server_id: uuid.UUID, user_id: uuid.UUID
) -> bool:
    """Remove ``user_id``'s token for ``server_id``; False when there was none."""
    result = await session.execute(
        delete(MCPUserCredential)
        .where(MCPUserCredential.server_id == server_id, MCPUserCredential.user_id == user_id)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0) > 0


async def lock_server(session: AsyncSession, server_id: uuid.UUID) -> None:
    """Serialise with writers of this server until the transaction ends, so a credential
    write cannot race a change of the server's auth type (PostgreSQL: a row lock; SQLite:
    a no-op write that makes this the writing transaction)."""
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        await session.execute(
            select(MCPServer.id).where(MCPServer.id == server_id).with_for_update()
        )
    else:
        await session.execute(
            update(MCPServer)
            .where(MCPServer.id == server_id)
            .values(id=server_id)
            .execution_options(synchronize_session=False)
        )


async def user_tokens(
    session: AsyncSession, encryptor: Encryptor | None, user_id: uuid.UUID
) -> dict[uuid.UUID, str]:
    """``{server id: token}`` of ``user_id`` for every enabled ``per_user`` server, in
    one query (what a bridge build needs)."""
    stmt = (
        select(MCPUserCredential)
        .join(MCPServer, MCPServer.id == MCPUserCredential.server_id)
        .where(
            MCPUserCredential.user_id == user_id,
            MCPServer.auth_type == AUTH_PER_USER,
            MCPServer.enabled.is_(True),
        )
    )
    rows = (await session.scalars(stmt)).all()
    return {row.server_id: unseal(encryptor, row.credential, row.credential_key_id) for row in rows}


# --- audit ----------------------------------------------------------------------------


def server_summary(record: MCPServerRecord) -> dict[str, Any]:
    """Secret-free description of a server for audit diffs and logs."""
    auth: dict[str, Any] = {"type": record.auth.type}
    if record.auth.type == AUTH_HEADER:
        auth |= {"name": record.auth.header_name, "masked": record.auth.masked_value}
    return {
        "name": record.name,
        "url": record.url,
        "enabled": record.enabled,
        "tool_allow": record.tool_allow,
        "tool_deny": record.tool_deny,
        "auth": auth,
    }


def audit_server(
    session: AsyncSession,
    action: str,
    record: MCPServerRecord,
    *,
    actor_id: uuid.UUID | None,
    actor_username: str,
    status_code: int = 200,
    diff: dict[str, Any] | None = None,
) -> None:
    """An audit row for a server write (caller's transaction); ``diff`` defaults to the
    server's summary."""
    add_audit(
        session,
        actor_id=actor_id,
        actor_username=actor_username,
        action=action,
        resource_type=AUDIT_MCP_SERVER,
        resource_id=str(record.id),
        resource_name=record.name,
        diff=diff if diff is not None else server_summary(record),
        status_code=status_code,
    )


def audit_server_updated(
    session: AsyncSession,
    change: MCPServerChange,
    *,
    actor_id: uuid.UUID | None,
    actor_username: str,
) -> None:
    """An audit row for an update: the changed fields, old and new (masked)."""
    before, after = server_summary(change.before), server_summary(change.after)
    changes = {k: {"old": before[k], "new": after[k]} for k in before if before[k] != after[k]}
    diff: dict[str, Any] = {"changes": changes}
    if change.credentials_dropped:
        diff["credentials_dropped"] = change.credentials_dropped
    audit_server(
        session,
        "update",
        change.after,
        actor_id=actor_id,
        actor_username=actor_username,
        diff=diff,
    )


def audit_credential(
    session: AsyncSession,
    action: str,
    server: MCPServerRecord,
    *,
    actor_id: uuid.UUID,
    actor_username: str,
    token: str | None = None,
    status_code: int = 200,
) -> None:
    """An audit row for a user's credential write (the token masked)."""
    diff: dict[str, Any] = {"server_id": str(server.id), "user_id": str(actor_id)}
    if token is not None:
        diff["masked"] = mask_secret(token)
    add_audit(
        session,
        actor_id=actor_id,
        actor_username=actor_username,
        action=action,
        resource_type=AUDIT_MCP_CREDENTIAL,
        resource_id=str(actor_id),
        resource_name=server.name,
        diff=diff,
        status_code=status_code,
    )


__all__ = [
    "AUDIT_MCP_CREDENTIAL",
    "AUDIT_MCP_SERVER",
    "AUTH_HEADER",
    "AUTH_NONE",
    "AUTH_PER_USER",
    "AUTH_TYPES",
    "CredentialRecord",
    "HeaderValueRequiredError",
    "MCPAuth",
    "MCPServerChange",
    "MCPServerExistsError",
    "MCPServerNotFoundError",
    "MCPServerPatch",
    "MCPServerRecord",
    "MCPServerSpec",
    "audit_credential",
    "audit_server",
    "audit_server_updated",
    "create_server",
    "credential_server_ids",
    "delete_credential",
    "delete_server",
    "get_credential",
    "get_server",
    "get_server_by_name",
    "list_servers",
    "load_enabled_servers",
    "lock_server",
    "put_credential",
    "server_summary",
    "user_tokens",
]
