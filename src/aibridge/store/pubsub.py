"""Publish/subscribe interface and the in-process backend.

Messages are invalidation hints only (payloads are tiny and never secret). A
subscriber's callback receives ``(payload, error)``: ``error`` is set when messages
may have been lost (e.g. after the PostgreSQL listener reconnected) and the
subscriber should resynchronise from the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)

PROVIDERS_CHANGED = "ai_providers_changed"
API_KEYS_CHANGED = "api_keys_changed"
MCP_SERVERS_CHANGED = "mcp_servers_changed"
"""An MCP server was created, changed or deleted: replicas reload their snapshot."""
PRICES_CHANGED = "model_prices_changed"
"""A model price was set or deleted: replicas reload their price table."""
MCP_CREDENTIALS_CHANGED = "mcp_credentials_changed"
"""A user set or removed their own MCP token; the payload is the user id (ASCII UUID):
replicas retire that user's bridges so the next request builds one with the new token."""


class MessagesMayBeLost(Exception):
    """Delivered to subscribers when notifications may have been missed."""


Callback = Callable[[bytes, Exception | None], Awaitable[None] | None]
Unsubscribe = Callable[[], Awaitable[None]]


class PubSub(Protocol):
    """Channel-based publish/subscribe."""

    async def publish(self, channel: str, payload: bytes = b"") -> None:
        """Send ``payload`` to every subscriber of ``channel`` (on every replica)."""
        ...

    async def subscribe(self, channel: str, callback: Callback) -> Unsubscribe:
        """Register ``callback``; the returned coroutine function removes it."""
        ...

    async def close(self) -> None:
        """Stop delivering and release connections."""
        ...


async def _invoke(callback: Callback, payload: bytes, error: Exception | None) -> None:
    try:
        result = callback(payload, error)
        if asyncio.iscoroutine(result):
            await result
    except Exception:
        log.exception("pubsub subscriber failed")


class InProcessPubSub:
    """Pub/sub inside one process (embedded SQLite deployments, tests)."""

    def __init__(self) -> None:
        self._subs: dict[str, list[Callback]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def publish(self, channel: str, payload: bytes = b"") -> None:
        """Deliver to current subscribers asynchronously (never blocks the publisher)."""
        if self._closed:
            raise RuntimeError("pubsub is closed")
        for cb in list(self._subs.get(channel, ())):
            task = asyncio.create_task(_invoke(cb, payload, None))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def subscribe(self, channel: str, callback: Callback) -> Unsubscribe:
        """Register a callback for ``channel``."""
        if self._closed:
            raise RuntimeError("pubsub is closed")
        self._subs.setdefault(channel, []).append(callback)

        async def unsubscribe() -> None:
            subs = self._subs.get(channel, [])
            if callback in subs:
                subs.remove(callback)

        return unsubscribe

    async def close(self) -> None:
        """Drop all subscribers and wait for deliveries in flight."""
        self._closed = True
        self._subs.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def publish_quietly(pubsub: PubSub, channel: str, payload: bytes = b"") -> bool:
    """Publish after a commit; a failure is logged, never raised (the DB is the truth and
    replicas' reconciliation poll heals a lost hint). Returns whether it was sent."""
    try:
        await pubsub.publish(channel, payload)
    except Exception:
        log.warning(
            "could not publish change notification", extra={"channel": channel}, exc_info=True
        )
        return False
    return True
