"""The long-lived objects one gateway process shares between its components."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aibridge.auth import Authenticator
from aibridge.bridge import RequestBridge
from aibridge.clock import SYSTEM_CLOCK, Clock
from aibridge.config import Settings
from aibridge.governance.limiter import Limiter
from aibridge.governance.price_reload import PriceReloader
from aibridge.governance.prices import PriceBook
from aibridge.intercept.responses.websocket import ResponsesSockets
from aibridge.mcp.settings import UserTokens
from aibridge.pool import CachedBridgePool
from aibridge.providers.upstream import UpstreamClients
from aibridge.recording import Recorder
from aibridge.recording.retention import RetentionJob
from aibridge.reload import ProviderReloader
from aibridge.store.crypto import Encryptor
from aibridge.store.pubsub import PubSub
from aibridge.telemetry import GatewayMetrics


@dataclass(frozen=True, slots=True)
class Services:
    """Every running component of one gateway process, once all of them have started
    (:func:`aibridge.server.startup.running_services` builds it; nothing is filled in
    later). ``encryptor`` is None when no ``AIBRIDGE_ENCRYPTION_KEY`` is configured."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    pubsub: PubSub
    encryptor: Encryptor | None
    authenticator: Authenticator
    metrics: GatewayMetrics
    upstream: UpstreamClients
    recorder: Recorder
    pool: CachedBridgePool[RequestBridge]
    reloader: ProviderReloader
    mcp_user_tokens: UserTokens
    """Each user's tokens for the per_user MCP servers (what a bridge build reads)."""
    prices: PriceBook
    """The live price table every recorded upstream call is priced with."""
    price_reloader: PriceReloader
    """Keeps ``prices`` in step with the database on every replica."""
    limiter: Limiter
    """Admits every bridged request and WebSocket (limits, budgets, max_concurrency)."""
    retention: RetentionJob
    """Deletes records older than ``retention_days`` (one replica at a time)."""
    clock: Clock = SYSTEM_CLOCK
    """The clock the gateway was started with (tests pass a ``FakeClock``)."""


SERVICES = web.AppKey("services", Services)
"""The app key of the gateway's :class:`Services`."""

RESPONSES_SOCKETS = web.AppKey("responses_sockets", ResponsesSockets)
"""The app key of the process's open Responses WebSockets (limits and shutdown)."""
