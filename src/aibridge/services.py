"""The long-lived objects one gateway process shares between its components."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aibridge.auth import Authenticator
from aibridge.config import Settings
from aibridge.store.crypto import Encryptor
from aibridge.store.pubsub import PubSub


@dataclass
class Services:
    """Database, pub/sub, authentication and crypto handles for one process."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    pubsub: PubSub
    authenticator: Authenticator
    encryptor: Encryptor | None = None
    extras: dict[str, object] = field(default_factory=dict)


SERVICES = web.AppKey("services", Services)
