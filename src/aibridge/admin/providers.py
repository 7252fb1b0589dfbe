"""Admin API for AI providers: ``/api/v1/providers`` (list, create) and
``/api/v1/providers/{id_or_name}`` (get, patch, delete). Admin role only.

Writes commit the provider rows, a config-version bump and audit rows in one
transaction, then publish an invalidation hint on ``ai_providers_changed`` so every
replica reloads. Upstream keys are write-only: responses carry masked renderings.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from aibridge.admin.context import admin_context
from aibridge.admin.deps import require_admin
from aibridge.admin.errors import (
    APIError,
    input_error,
    not_found,
    path_reference,
    read_json_object,
    validations,
)
from aibridge.admin.provider_status import providers_status
from aibridge.httputil import json_response
from aibridge.inputcheck import FieldError
from aibridge.providers.bedrock.credentials import missing_credentials
from aibridge.providers.bedrock.settings import merge_write_only
from aibridge.providers.settings import parse_settings
from aibridge.providers.validation import (
    INVALID_REQUEST,
    ProviderInputError,
    parse_id_or_name,
    patch_type_errors,
    validate_create,
    validate_patch,
)
from aibridge.secrets_mask import public_settings
from aibridge.store import providers as store
from aibridge.store.crypto import Encryptor
from aibridge.store.pubsub import PROVIDERS_CHANGED, publish_quietly

BASE = "/api/v1/providers"
UNKNOWN_KEY_MESSAGE = "api_keys references an unknown id for this provider"


def rfc3339(value: datetime) -> str:
    """UTC timestamp in RFC 3339 form with a ``Z`` suffix."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def provider_json(record: store.ProviderRecord) -> dict[str, Any]:
    """The API representation of a provider (keys masked, never plaintext)."""
    return {
        "id": str(record.id),
        "type": record.type,
        "name": record.name,
        "display_name": record.display_name or record.name,
        "icon": record.icon,
        "enabled": record.enabled,
        "base_url": record.base_url,
        "api_keys": [
            {"id": str(k.id), "masked": k.masked, "created_at": rfc3339(k.created_at)}
            for k in record.keys
        ],
        # Write-only members (the Bedrock secret) masked like API keys.
        "settings": public_settings(record.settings),
        "created_at": rfc3339(record.created_at),
        "updated_at": rfc3339(record.updated_at),
    }


async def check_bedrock_credentials(settings: dict[str, Any] | None) -> None:
    """A 400 when a new ``bedrock`` provider would have no credentials to sign with."""
    parsed = parse_settings(settings, "bedrock")
    if isinstance(parsed, list) or parsed.bedrock is None:
        return
    problem = await missing_credentials(parsed.bedrock)
    if problem is not None:
        raise APIError(
            400, INVALID_REQUEST, validations=validations([FieldError("settings.bedrock", problem)])
        )


async def resolve(
    session: AsyncSession, encryptor: Encryptor | None, ref: uuid.UUID | str
) -> store.ProviderRecord:
    """The live provider for an id or name, or a 404."""
    if isinstance(ref, uuid.UUID):
        record = await store.get_provider(session, encryptor, ref)
    else:
        record = await store.get_provider_by_name(session, encryptor, ref)
    if record is None:
        raise not_found("AI provider")
    return record


async def list_providers(request: web.Request) -> web.Response:
    """GET /api/v1/providers: live providers (enabled and disabled) ordered by name."""
    await require_admin(request)
    admin = admin_context(request)
    async with admin.sessions() as session:
        records = await store.list_providers(session, admin.encryptor)
    return json_response([provider_json(r) for r in records])


async def create_provider(request: web.Request) -> web.Response:
    """POST /api/v1/providers: 201 with the new provider, 409 on a live duplicate name."""
    actor = await require_admin(request)
    admin = admin_context(request)
    body = await read_json_object(request)
    try:
        spec = validate_create(body)
    except ProviderInputError as err:
        raise input_error(err) from err
    if spec.type == "bedrock":
        await check_bedrock_credentials(spec.settings)
    try:
        async with admin.sessions() as session, session.begin():
            record = await store.create_provider(session, admin.encryptor, spec)
            store.audit_created(
                session, record, actor_id=actor.user_id, actor_username=actor.username
            )
    except store.ProviderExistsError as err:
        raise APIError(
            409, str(err), "choose another name or delete the existing provider"
        ) from err
    await publish_quietly(admin.pubsub, PROVIDERS_CHANGED)
    return json_response(provider_json(record), status=201)


async def get_provider(request: web.Request) -> web.Response:
    """GET /api/v1/providers/{id_or_name}."""
    await require_admin(request)
    ref = path_reference(request, parse_id_or_name)
    admin = admin_context(request)
    async with admin.sessions() as session:
        record = await resolve(session, admin.encryptor, ref)
    return json_response(provider_json(record))


async def update_provider(request: web.Request) -> web.Response:
    """PATCH /api/v1/providers/{id_or_name}: absent fields unchanged; ``api_keys`` is the
    complete post-patch key set; ``settings`` replaces (null clears)."""
    actor = await require_admin(request)
    ref = path_reference(request, parse_id_or_name)
    admin = admin_context(request)
    body = await read_json_object(request)
    settings = body.get("settings")
    if isinstance(settings, dict) and "bedrock" in settings:
        # Write-only secrets are never shown, so a block sent back without them keeps them.
        async with admin.sessions() as session:
            stored = await resolve(session, admin.encryptor, ref)
        body = {**body, "settings": merge_write_only(settings, stored.settings)}
    try:
        patch = validate_patch(body)
    except ProviderInputError as err:
        raise input_error(err) from err
    try:
        async with admin.sessions() as session, session.begin():
            record = await resolve(session, admin.encryptor, ref)
            problems = patch_type_errors(patch, record.type)
            if problems:
                raise APIError(400, INVALID_REQUEST, validations=validations(problems))
            change = await store.update_provider(session, admin.encryptor, record.id, patch)
            store.audit_updated(
                session, change, actor_id=actor.user_id, actor_username=actor.username
            )
    except store.ProviderNotFoundError as err:
        raise not_found("AI provider") from err
    except store.UnknownProviderKeyError as err:
        raise APIError(400, UNKNOWN_KEY_MESSAGE, str(err)) from err
    await publish_quietly(admin.pubsub, PROVIDERS_CHANGED)
    return json_response(provider_json(change.after))


async def delete_provider(request: web.Request) -> web.Response:
    """DELETE /api/v1/providers/{id_or_name}: soft delete, 204 with an empty body."""
    actor = await require_admin(request)
    ref = path_reference(request, parse_id_or_name)
    admin = admin_context(request)
    async with admin.sessions() as session, session.begin():
        record = await resolve(session, admin.encryptor, ref)
        if not await store.delete_provider(session, record.id):
            # Deleted by someone else between the lookup and the write.
            raise not_found("AI provider")
        store.audit_deleted(session, record, actor_id=actor.user_id, actor_username=actor.username)
    await publish_quietly(admin.pubsub, PROVIDERS_CHANGED)
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    """Register the provider routes on ``app``."""
    app.router.add_get(BASE, list_providers)
    app.router.add_post(BASE, create_provider)
    # Before the item route: a GET of ".../status" is the status view, not a provider
    # named "status" (that one stays reachable by id, and in the list).
    app.router.add_get(BASE + "/status", providers_status)
    item = BASE + "/{id_or_name}"
    app.router.add_get(item, get_provider)
    app.router.add_patch(item, update_provider)
    app.router.add_delete(item, delete_provider)
