"""The OpenAPI document describes exactly the admin routes the app serves."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

from aibridge.admin.openapi import build_document
from aibridge.testing.gateway import gateway


def _served_api_routes(app: web.Application) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path and path.startswith("/api/v1") and route.method != "HEAD":
            routes.add((route.method.lower(), path))
    return routes


def _documented_routes() -> set[tuple[str, str]]:
    doc = build_document()
    out = set()
    for path, item in doc["paths"].items():
        for method in item:
            if method in {"get", "post", "patch", "delete", "put"}:
                out.add((method, path))
    return out


def _normalise(routes: set[tuple[str, str]]) -> set[tuple[str, str]]:
    # Parameter names may differ between the router and the document.
    return {(m, re.sub(r"\{[^}]+\}", "{}", p)) for m, p in routes}


async def test_every_admin_route_is_documented(sqlite_url: str, tmp_path: Path) -> None:
    async with gateway(sqlite_url, tmp_path) as (client, _services):
        served = _normalise(_served_api_routes(client.app))
        resp = await client.get("/api/v1/openapi.json")
        assert resp.status == 200
        body = await resp.json()
    documented = _normalise(_documented_routes())
    assert served == documented
    assert body["openapi"].startswith("3.")
    assert "Provider" in body["components"]["schemas"]
