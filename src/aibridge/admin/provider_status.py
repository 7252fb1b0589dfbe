"""``GET /api/v1/providers/status`` (admin): this replica's live provider view — status and
reason, key pool, circuit breakers — and the provider config version every replica applied.

The live part is read from memory (the installed snapshot); the replicas come from the
``replicas`` table that each gateway's heartbeat writes (:mod:`aibridge.store.replicas`).
Keys are only ever shown as their masked hint.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from aibridge.admin.context import LiveProviders, admin_context
from aibridge.admin.deps import require_admin
from aibridge.admin.errors import APIError
from aibridge.httputil import json_response
from aibridge.providers.base import DisabledProvider, Provider
from aibridge.store import config_version
from aibridge.store.replicas import ReplicaRow, is_stale, list_replicas

STALE_INTERVALS = 3
"""A replica is stale after this many reconcile intervals without a heartbeat."""


def rfc3339(value: datetime) -> str:
    """UTC timestamp in RFC 3339 form with a ``Z`` suffix."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def key_pool_json(provider: Provider) -> list[dict[str, Any]]:
    """Each pool key in failover order: masked hint, valid/cooling, seconds left, reason."""
    ring = provider.keys
    out: list[dict[str, Any]] = []
    for key in ring.keys:
        left = ring.cooldown_remaining(key)
        out.append(
            {
                "id": key.key_id,
                "hint": key.hint,
                "primary": key.index == 0,
                "state": "cooling" if left > 0 else "valid",
                "cooldown_seconds": round(left, 1),
                "reason": ring.cooldown_reason(key),
            }
        )
    return out


def breakers_json(provider: Provider) -> list[dict[str, Any]]:
    """The breakers that have seen traffic here, by endpoint then model."""
    rows = [
        {
            "endpoint": b.key.endpoint,
            "model": b.key.model,
            "state": b.state.label,
            "retry_after_seconds": b.retry_after_seconds,
        }
        for b in provider.breakers.breakers()
    ]
    return sorted(rows, key=lambda r: (r["endpoint"], r["model"]))


def providers_json(live: LiveProviders) -> list[dict[str, Any]]:
    """Every provider the last reload saw, sorted by name (see the module docstring)."""
    snapshot = live.snapshot
    runtimes = snapshot.providers if snapshot is not None else {}
    errors = snapshot.errors if snapshot is not None else {}
    out: list[dict[str, Any]] = []
    for name, (ptype, status) in sorted(live.statuses.items()):
        runtime = runtimes.get(name)
        entry: dict[str, Any] = {
            "name": name,
            "type": ptype,
            # Only enabled rows are built, so only they can fail to build.
            "enabled": status != "disabled",
            "status": {"enabled": "ok"}.get(status, status),
            "reason": errors.get(name) if status == "error" else None,
            "keys": [],
            "breakers_enabled": False,
            "breakers": [],
        }
        if isinstance(runtime, Provider):
            entry["keys"] = key_pool_json(runtime)
            entry["breakers_enabled"] = runtime.breakers.enabled
            entry["breakers"] = breakers_json(runtime)
        elif isinstance(runtime, DisabledProvider):
            entry["enabled"] = False
        out.append(entry)
    return out


def replica_json(row: ReplicaRow, now: datetime, stale_after: float, own: str) -> dict[str, Any]:
    """One ``replicas`` row as the API shows it."""
    return {
        "id": row.id,
        "pid": row.pid,
        "host": row.host,
        "config_version": row.config_version,
        "started_at": rfc3339(row.started_at),
        "last_seen": rfc3339(row.last_seen),
        "stale": is_stale(row, now, stale_after),
        "current": row.id == own,
    }


async def providers_status(request: web.Request) -> web.Response:
    """GET /api/v1/providers/status: this replica's provider view and every replica."""
    await require_admin(request)
    admin = admin_context(request)
    if admin.live_providers is None:
        raise APIError(
            503,
            "Provider status is not available on this server",
            "it is served by a running gateway (aibridge serve)",
        )
    live = admin.live_providers()
    async with admin.sessions() as session:
        current = await config_version.read(session)
        rows = await list_replicas(session)
    now = admin.clock.now()
    stale_after = STALE_INTERVALS * live.reconcile_interval
    last = live.last_success
    return json_response(
        {
            "replica": live.replica,
            "config_version": live.config_version,
            "current_config_version": current,
            "loaded": live.loaded,
            "last_reload_at": rfc3339(datetime.fromtimestamp(last, UTC)) if last else None,
            "last_reload_error": live.last_error,
            "stale_after_seconds": stale_after,
            "providers": providers_json(live),
            "replicas": [replica_json(r, now, stale_after, live.replica) for r in rows],
        }
    )
