"""Small HTTP helpers shared by the admin API and the data plane (no policy here)."""

from __future__ import annotations

import orjson
from aiohttp import web

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers (lower case) that describe one connection and are never forwarded."""


def json_response(data: object, status: int = 200) -> web.Response:
    """Serialise ``data`` with orjson (UUIDs and datetimes handled)."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def route_not_supported(request: web.Request) -> web.Response:
    """404 for any path no provider serves."""
    return json_response(
        {"message": f"route not supported: {request.method} {request.path}"}, status=404
    )
