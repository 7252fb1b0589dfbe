"""Mounts every admin API route group under ``/api/v1``."""

from __future__ import annotations

from aiohttp import web

from aibridge.admin import (
    interceptions,
    mcp_servers,
    openapi,
    prices,
    providers,
    session,
    sessions,
    users,
)
from aibridge.admin.context import ADMIN, AdminContext


def add_admin_routes(app: web.Application, context: AdminContext) -> None:
    """Register the admin API on ``app``, serving from ``context``."""
    app[ADMIN] = context
    providers.add_routes(app)
    mcp_servers.add_routes(app)
    users.add_routes(app)
    interceptions.add_routes(app)
    sessions.add_routes(app)
    prices.add_routes(app)
    session.add_routes(app)
    openapi.add_routes(app)
