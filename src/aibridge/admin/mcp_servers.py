"""Admin API for MCP servers: ``/api/v1/mcp-servers`` (list, create) and
``/api/v1/mcp-servers/{id_or_name}`` (get, patch, delete), admin role only; and
``/api/v1/mcp-servers/{id_or_name}/credentials`` (get, put, delete), where any user
manages their *own* token for a ``per_user`` server.

Server writes commit the row, a config-version bump and an audit row in one transaction,
then publish ``mcp_servers_changed`` so every replica reloads its snapshot (new bridges
use the new set). Credential writes publish ``mcp_credentials_changed`` with the user's
id, so every replica retires that user's bridges. Secrets are write-only: a static
header value shows as a masked hint, a user's token never comes back at all.

``PUT …/credentials`` on a server that is not ``per_user`` answers 409: the request is
well-formed, the server's current configuration is what refuses it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from aibridge.actor import Actor
from aibridge.admin.context import admin_context
from aibridge.admin.deps import current_actor, require_admin
from aibridge.admin.errors import (
    APIError,
    Validation,
    input_error,
    not_found,
    path_reference,
    read_json_object,
)
from aibridge.httputil import json_response
from aibridge.mcp.config import (
    INVALID_REQUEST,
    MCPInputError,
    parse_id_or_name,
    validate_create,
    validate_credential,
    validate_patch,
)
from aibridge.store import mcp_servers as store
from aibridge.store.crypto import Encryptor
from aibridge.store.pubsub import MCP_CREDENTIALS_CHANGED, MCP_SERVERS_CHANGED, publish_quietly

BASE = "/api/v1/mcp-servers"
SERVER = "MCP server"


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def server_json(
    record: store.MCPServerRecord, *, has_credential: bool | None = None
) -> dict[str, Any]:
    """The API representation of a server: the header value masked, never plaintext.
    ``has_credential`` (per_user servers) says whether the *calling* user set a token."""
    auth: dict[str, Any] = {"type": record.auth.type}
    if record.auth.type == store.AUTH_HEADER:
        auth |= {"name": record.auth.header_name, "masked": record.auth.masked_value}
    body: dict[str, Any] = {
        "id": str(record.id),
        "name": record.name,
        "url": record.url,
        "enabled": record.enabled,
        "tool_allow": record.tool_allow,
        "tool_deny": record.tool_deny,
        "auth": auth,
    }
    if record.auth.type == store.AUTH_PER_USER:
        body["has_credential"] = bool(has_credential)
    body |= {"created_at": _rfc3339(record.created_at), "updated_at": _rfc3339(record.updated_at)}
    return body


async def resolve(
    session: AsyncSession, encryptor: Encryptor | None, ref: uuid.UUID | str
) -> store.MCPServerRecord:
    """The server for an id or name, or a 404."""
    if isinstance(ref, uuid.UUID):
        record = await store.get_server(session, encryptor, ref)
    else:
        record = await store.get_server_by_name(session, encryptor, ref)
    if record is None:
        raise not_found(SERVER)
    return record


def _exists(err: store.MCPServerExistsError) -> APIError:
    return APIError(409, str(err), "choose another name or change the existing server")


async def _with_credential_flags(
    session: AsyncSession, actor: Actor, records: list[store.MCPServerRecord]
) -> list[dict[str, Any]]:
    per_user = [r.id for r in records if r.auth.type == store.AUTH_PER_USER]
    mine = await store.credential_server_ids(session, actor.user_id, per_user)
    return [server_json(r, has_credential=r.id in mine) for r in records]


async def list_servers(request: web.Request) -> web.Response:
    """GET /api/v1/mcp-servers: every server (enabled and disabled) ordered by name."""
    actor = await require_admin(request)
    admin = admin_context(request)
    async with admin.sessions() as session:
        records = await store.list_servers(session, admin.encryptor)
        body = await _with_credential_flags(session, actor, records)
    return json_response(body)


async def create_server(request: web.Request) -> web.Response:
    """POST /api/v1/mcp-servers: 201 with the new server, 409 on a duplicate name."""
    actor = await require_admin(request)
    admin = admin_context(request)
    body = await read_json_object(request)
    try:
        spec = validate_create(body)
    except MCPInputError as err:
        raise input_error(err) from err
    try:
        async with admin.sessions() as session, session.begin():
            record = await store.create_server(session, admin.encryptor, spec)
            store.audit_server(
                session,
                "create",
                record,
                actor_id=actor.user_id,
                actor_username=actor.username,
                status_code=201,
            )
    except store.MCPServerExistsError as err:
        raise _exists(err) from err
    await publish_quietly(admin.pubsub, MCP_SERVERS_CHANGED)
    return json_response(server_json(record, has_credential=False), status=201)


async def get_server(request: web.Request) -> web.Response:
    """GET /api/v1/mcp-servers/{id_or_name}."""
    actor = await require_admin(request)
    ref = path_reference(request, parse_id_or_name)
    admin = admin_context(request)
    async with admin.sessions() as session:
        record = await resolve(session, admin.encryptor, ref)
        (body,) = await _with_credential_flags(session, actor, [record])
    return json_response(body)


async def update_server(request: web.Request) -> web.Response:
    """PATCH /api/v1/mcp-servers/{id_or_name}: absent fields unchanged; ``tool_allow`` /
    ``tool_deny`` null clears; ``auth`` replaces (a header without ``value`` keeps the
    current value); leaving ``per_user`` deletes the users' tokens for the server."""
    actor = await require_admin(request)
    ref = path_reference(request, parse_id_or_name)
    admin = admin_context(request)
    body = await read_json_object(request)
    try:
        patch = validate_patch(body)
    except MCPInputError as err:
        raise input_error(err) from err
    try:
        async with admin.sessions() as session, session.begin():
            record = await resolve(session, admin.encryptor, ref)
            change = await store.update_server(session, admin.encryptor, record.id, patch)
            store.audit_server_updated(
                session, change, actor_id=actor.user_id, actor_username=actor.username
            )
            (result,) = await _with_credential_flags(session, actor, [change.after])
    except store.MCPServerNotFoundError as err:
        raise not_found(SERVER) from err
    except store.MCPServerExistsError as err:
        raise _exists(err) from err
    except store.HeaderValueRequiredError as err:
        raise APIError(
            400, INVALID_REQUEST, validations=[Validation("auth.value", str(err))]
        ) from err
    # Also covers tokens dropped by leaving per_user: the reload this triggers retires
    # every bridge, their owners' included, so no per-user notification is needed.
    await publish_quietly(admin.pubsub, MCP_SERVERS_CHANGED)
    return json_response(result)


async def delete_server(request: web.Request) -> web.Response:
    """DELETE /api/v1/mcp-servers/{id_or_name}: the server and its users' tokens; 204."""
    actor = await require_admin(request)
    ref = path_reference(request, parse_id_or_name)
    admin = admin_context(request)
    async with admin.sessions() as session, session.begin():
        record = await resolve(session, admin.encryptor, ref)
        if not await store.delete_server(session, record.id):
            # Deleted by someone else between the lookup and the write.
            raise not_found(SERVER)
        store.audit_server(
            session,
            "delete",
            record,
            actor_id=actor.user_id,
            actor_username=actor.username,
            status_code=204,
        )
    await publish_quietly(admin.pubsub, MCP_SERVERS_CHANGED)
    return web.Response(status=204)


# --- the caller's own credential ------------------------------------------------------


def _credential_json(
    server: store.MCPServerRecord, credential: store.CredentialRecord | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "server_id": str(server.id),
        "server": server.name,
        "has_credential": credential is not None,
    }
    if credential is not None:
        body["updated_at"] = _rfc3339(credential.updated_at)
    return body


async def get_credential(request: web.Request) -> web.Response:
    """GET …/credentials: whether the caller has a token for the server (never the token)."""
    actor = await current_actor(request)
    ref = path_reference(request, parse_id_or_name)
    admin = admin_context(request)
    async with admin.sessions() as session:
        server = await resolve(session, admin.encryptor, ref)
        credential = await store.get_credential(session, admin.encryptor, server.id, actor.user_id)
    return json_response(_credential_json(server, credential))


async def put_credential(request: web.Request) -> web.Response:
    """PUT …/credentials ``{"token": "…"}``: set the caller's own token (sent to the server
    as ``Authorization: Bearer <token>``). 404 unknown server, 409 not a per_user server."""
    actor = await current_actor(request)
    ref = path_reference(request, parse_id_or_name)
    admin = admin_context(request)
    body = await read_json_object(request)
    try:
        token = validate_credential(body)
    except MCPInputError as err:
        raise input_error(err) from err
    async with admin.sessions() as session, session.begin():
        found = await resolve(session, admin.encryptor, ref)
        # Re-read under the lock: the auth type cannot change until this commits.
        await store.lock_server(session, found.id)
        server = await resolve(session, admin.encryptor, found.id)
        if server.auth.type != store.AUTH_PER_USER:
            raise APIError(
                409,
                f'MCP server "{server.name}" does not take per-user credentials.',
                f'its auth type is "{server.auth.type}"; only "per_user" servers take a token',
            )
        credential, created = await store.put_credential(
            session, admin.encryptor, server.id, actor.user_id, token
        )
        store.audit_credential(
            session,
            "create" if created else "update",
            server,
            actor_id=actor.user_id,
            actor_username=actor.username,
            token=token,
        )
    await publish_quietly(admin.pubsub, MCP_CREDENTIALS_CHANGED, str(actor.user_id).encode())
    return json_response(_credential_json(server, credential))


async def delete_credential(request: web.Request) -> web.Response:
    """DELETE …/credentials: remove the caller's token; 204, or 404 when there was none."""
    actor = await current_actor(request)
    ref = path_reference(request, parse_id_or_name)
    admin = admin_context(request)
    async with admin.sessions() as session, session.begin():
        server = await resolve(session, admin.encryptor, ref)
        if not await store.delete_credential(session, server.id, actor.user_id):
            raise not_found("MCP credential")
        store.audit_credential(
            session,
            "delete",
            server,
            actor_id=actor.user_id,
            actor_username=actor.username,
            status_code=204,
        )
    await publish_quietly(admin.pubsub, MCP_CREDENTIALS_CHANGED, str(actor.user_id).encode())
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    """Register the MCP server routes on ``app``."""
    app.router.add_get(BASE, list_servers)
    app.router.add_post(BASE, create_server)
    item = BASE + "/{id_or_name}"
    app.router.add_get(item, get_server)
    app.router.add_patch(item, update_server)
    app.router.add_delete(item, delete_server)
    credentials = item + "/credentials"
    app.router.add_get(credentials, get_credential)
    app.router.add_put(credentials, put_credential)
    app.router.add_delete(credentials, delete_credential)
