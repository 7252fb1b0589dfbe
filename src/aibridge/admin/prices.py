"""Admin API for model prices: ``GET /api/v1/prices`` (any authenticated user: prices are
not secret and members see the cost of their own usage) and
``GET|PUT|DELETE /api/v1/prices/{provider_type}/{model}`` (writes admin only).

The model is the rest of the path, so names with a slash (OpenRouter's
``anthropic/claude-sonnet-4.5``) and ``prefix*`` patterns work as they are. Writes commit
the row, a ``prices`` config-version bump and an audit row in one transaction, then
publish ``model_prices_changed`` so every replica reloads its price table.
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.exc import IntegrityError

from aibridge.admin.context import admin_context
from aibridge.admin.deps import current_actor, require_admin
from aibridge.admin.errors import APIError, input_error, not_found, read_json_object, validations
from aibridge.httputil import json_response
from aibridge.inputcheck import InputError
from aibridge.store import prices as store
from aibridge.store.pubsub import PRICES_CHANGED, publish_quietly

BASE = "/api/v1/prices"
ITEM = BASE + "/{provider_type}/{model:.+}"


def _path(request: web.Request) -> tuple[str, str]:
    """The provider type and model of the path, or a 400 naming what is wrong."""
    provider_type = request.match_info["provider_type"]
    model = request.match_info["model"]
    errors = [
        e
        for e in (store.provider_type_error(provider_type), store.model_error(model))
        if e is not None
    ]
    if errors:
        raise APIError(400, store.INVALID_PRICE, validations=validations(errors))
    return provider_type, model


async def list_prices(request: web.Request) -> web.Response:
    """GET /api/v1/prices[?provider_type=…]: every price, by provider type then model."""
    await current_actor(request)
    provider_type = request.query.get("provider_type") or None
    if provider_type is not None:
        problem = store.provider_type_error(provider_type)
        if problem is not None:
            raise APIError(400, "Invalid query parameters.", validations=validations([problem]))
    async with admin_context(request).sessions() as session:
        rows = await store.list_prices(session, provider_type)
    return json_response({"prices": [r.to_json() for r in rows]})


async def get_price(request: web.Request) -> web.Response:
    """GET /api/v1/prices/{provider_type}/{model}: the stored price of exactly that name
    (a pattern is addressed by its own name, ``claude-sonnet-4-5*``)."""
    await current_actor(request)
    provider_type, model = _path(request)
    async with admin_context(request).sessions() as session:
        price = await store.get_price(session, provider_type, model)
    if price is None:
        raise not_found("Price")
    return json_response(price.to_json())


async def put_price(request: web.Request) -> web.Response:
    """PUT /api/v1/prices/{provider_type}/{model}: create (201) or replace (200) a price."""
    actor = await require_admin(request)
    provider_type = request.match_info["provider_type"]
    model = request.match_info["model"]
    body = await read_json_object(request)
    try:
        price = store.parse_price(provider_type, model, body)
    except InputError as err:
        raise input_error(err) from err
    admin = admin_context(request)
    try:
        async with admin.sessions() as session, session.begin():
            before = await store.upsert_price(session, price)
            store.audit_price(
                session,
                action="create" if before is None else "update",
                before=before,
                after=price,
                actor_id=actor.user_id,
                actor_username=actor.username,
                status_code=201 if before is None else 200,
            )
    except IntegrityError as err:
        # Two first writes of the same price raced; the other one won.
        raise APIError(409, "The price was created concurrently.", "retry the request") from err
    await publish_quietly(admin.pubsub, PRICES_CHANGED)
    return json_response(price.to_json(), status=201 if before is None else 200)


async def delete_price(request: web.Request) -> web.Response:
    """DELETE /api/v1/prices/{provider_type}/{model}: 204; 404 when there is no such price.
    Calls of the model are recorded unpriced from then on (never guessed)."""
    actor = await require_admin(request)
    provider_type, model = _path(request)
    admin = admin_context(request)
    async with admin.sessions() as session, session.begin():
        before = await store.delete_price(session, provider_type, model)
        if before is None:
            raise not_found("Price")
        store.audit_price(
            session,
            action="delete",
            before=before,
            after=None,
            actor_id=actor.user_id,
            actor_username=actor.username,
            status_code=204,
        )
    await publish_quietly(admin.pubsub, PRICES_CHANGED)
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    """Register the price routes on ``app``."""
    app.router.add_get(BASE, list_prices)
    app.router.add_get(ITEM, get_price)
    app.router.add_put(ITEM, put_price)
    app.router.add_delete(ITEM, delete_price)
