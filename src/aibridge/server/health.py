"""Health and metrics endpoints: ``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import os
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from aibridge.admin.deps import current_actor, require_admin
from aibridge.admin.errors import APIError
from aibridge.httputil import json_response
from aibridge.server.services import SERVICES


async def healthz(_request: web.Request) -> web.Response:
    """Process liveness."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the database answers within two seconds and providers are loaded.

    With ``metrics_auth=admin`` only admin keys see the details (providers, versions,
    errors); everyone else gets the status and its HTTP code, which is what probes need.
    """
    services = request.app[SERVICES]
    started = time.perf_counter()
    body: dict[str, object] = {"status": "ok", "pid": os.getpid()}
    if services.recorder.replica is not None:
        body["replica"] = services.recorder.replica
    status = 200
    try:
        async with asyncio.timeout(2.0), services.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        body["database"] = "ok"
        body["database_ms"] = round((time.perf_counter() - started) * 1000, 2)
    except Exception as exc:
        body.update(status="unavailable", database="unreachable", detail=type(exc).__name__)
        status = 503
    reload_status = services.reloader.status
    body["providers_loaded"] = reload_status.loaded
    body["config_version"] = reload_status.config_version
    body["providers"] = {
        name: {"type": ptype, "status": pstatus}
        for name, (ptype, pstatus) in sorted(reload_status.provider_status.items())
    }
    body["mcp_servers"] = reload_status.mcp_servers
    if reload_status.mcp_errors:
        # Rows written around the validation, skipped by the reload (the others load).
        body["mcp_server_errors"] = dict(sorted(reload_status.mcp_errors.items()))
    if reload_status.last_error:
        body["last_reload_error"] = reload_status.last_error
    if not reload_status.loaded:
        body["status"] = "unavailable"
        status = 503
    if services.settings.metrics_auth == "admin" and not await _is_admin(request):
        return json_response({"status": body["status"]}, status=status)
    return json_response(body, status=status)


async def _is_admin(request: web.Request) -> bool:
    try:
        return (await current_actor(request)).is_admin
    except APIError:
        return False


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text exposition of this process's series (admin keys only with
    ``metrics_auth=admin``)."""
    services = request.app[SERVICES]
    if services.settings.metrics_auth == "admin":
        await require_admin(request)
    body = services.metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
