"""The long-lived objects one gateway process shares between its components."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aibridge.auth import Authenticator
from aibridge.bridge import RequestBridge
from aibridge.config import Settings
from aibridge.pool import CachedBridgePool
from aibridge.providers.http import UpstreamSessions
from aibridge.recording.recorder import Recorder
from aibridge.reload import ProviderReloader
from aibridge.store.crypto import Encryptor
from aibridge.store.pubsub import PubSub
from aibridge.telemetry import GatewayMetrics


@dataclass
class Services:
    """Database, pub/sub, authentication and crypto handles for one process."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    pubsub: PubSub
    authenticator: Authenticator
    encryptor: Encryptor | None = None
    recorder: Recorder | None = None
    upstream: UpstreamSessions | None = None
    reloader: ProviderReloader | None = None
    pool: CachedBridgePool[RequestBridge] | None = None
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    extras: dict[str, object] = field(default_factory=dict)


SERVICES = web.AppKey("services", Services)
