"""Mounts every admin API route group under ``/api/v1``."""

from __future__ import annotations

from aiohttp import web

from aibridge.admin import interceptions, openapi, providers, users


def add_admin_routes(app: web.Application) -> None:
    """Register the admin API on ``app``."""
    providers.add_routes(app)
    users.add_routes(app)
    interceptions.add_routes(app)
    openapi.add_routes(app)
