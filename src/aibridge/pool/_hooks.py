"""Test hooks of the pool (reference §2.6 names in brackets)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aibridge.pool._builder import BridgeKey


@dataclass
class PoolHooks:
    """Test hooks that park a call at a precise point.

    All default to None, which costs nothing in production.
    """

    after_build_before_store: Callable[[BridgeKey, int], Awaitable[None]] | None = None
    """[bridge_cache_publish] Inside the build task, after the bridge is built, before it is
    published to the cache; receives the key and the build's generation id."""
    before_admission: Callable[[BridgeKey, Any], Awaitable[None]] | None = None
    """[bridge_serve_admission] After a bridge was selected, before the request is admitted."""
    before_bridge_shutdown: Callable[[Any], Awaitable[None]] | None = None
    """In the background retirement task, before the bridge's admitted requests are drained."""
