"""What the admin API needs from the running gateway, and the app key it lives under.

The admin API is handed this narrow context rather than the gateway's whole set of
services, so it depends on the store, pub/sub and authentication only (never on the
bridge pool, the reloader or the server that assembles them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.auth import Authenticator
from aibridge.clock import SYSTEM_CLOCK, Clock
from aibridge.limits import NO_LIMITS, Limits
from aibridge.providers.snapshot import ProviderSnapshot
from aibridge.store.crypto import Encryptor
from aibridge.store.pubsub import PubSub


@dataclass(frozen=True, slots=True)
class LiveProviders:
    """This replica's provider state for ``/api/v1/providers/status``: the installed
    snapshot and what the reloader reported (statuses by name: (type, enabled|disabled|
    error), the applied config version, the last reload)."""

    replica: str
    snapshot: ProviderSnapshot | None
    statuses: Mapping[str, tuple[str, str]]
    config_version: int
    loaded: bool
    last_success: float | None
    last_error: str | None
    reconcile_interval: float


@dataclass(frozen=True, slots=True)
class AdminContext:
    """Database sessions, pub/sub (change hints), the encryptor of stored secrets (None:
    stored in plain text) and the authenticator (callers, and cache invalidation); what
    ``/api/v1/me`` needs to show limits and budgets: the configured default limits, the
    time zone of budget periods and the clock (tests move it across a period)."""

    sessions: async_sessionmaker[AsyncSession]
    pubsub: PubSub
    encryptor: Encryptor | None
    authenticator: Authenticator
    default_limits: Limits = NO_LIMITS
    budget_zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    clock: Clock = SYSTEM_CLOCK
    budget_soft_fraction: float = 0.8
    """Past this fraction of a budget ``/api/v1/me`` says the soft threshold was crossed."""
    live_providers: Callable[[], LiveProviders] | None = None
    """This replica's live provider view (None: the status route answers 503)."""


ADMIN = web.AppKey("admin", AdminContext)
"""The app key of the admin API's :class:`AdminContext` (set by :func:`add_admin_routes`)."""


def admin_context(request: web.Request) -> AdminContext:
    """The admin API's context of the app serving ``request``."""
    return request.app[ADMIN]
