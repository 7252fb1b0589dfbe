"""The pool tests' fakes: a bridge that answers from its snapshot, a harness that builds
pools of them and counts what the pool did (used by test_pool and test_pool_internal)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

from prometheus_client import CollectorRegistry

from aibridge.actor import Actor
from aibridge.clock import FakeClock
from aibridge.pool import BridgeKey, CachedBridgePool, PoolHooks
from aibridge.providers.snapshot import ProviderSnapshot

WAIT = 5.0
"""Upper bound for any await in these tests (never reached when the code is right)."""


def make_actor(user_id: uuid.UUID | None = None, key_id: str | None = None) -> Actor:
    """An actor with fresh ids unless given."""
    return Actor(user_id or uuid.uuid4(), "someone", "member", key_id or uuid.uuid4().hex[:12])


def fake_snapshot(generation: int, **bodies: str) -> ProviderSnapshot:
    """A snapshot whose "providers" are the body each fake bridge answers for that name."""
    return ProviderSnapshot(generation, cast(dict[str, Any], dict(bodies)))


class FakeBridge:
    """A bridge that answers with its snapshot's bodies, and what the pool did with it.

    The pool owns a bridge's lifecycle, so the counters are kept by the test side:
    ``admitted_total`` by :func:`acquire_once` / ``Held`` when the pool hands the bridge
    out, ``shutdown_calls`` by the :class:`Harness` from the pool's retirement hook.
    """

    serial = 0

    def __init__(self, key: BridgeKey, snapshot: ProviderSnapshot):
        FakeBridge.serial += 1
        self.id = FakeBridge.serial
        self.key = key
        self.snapshot = snapshot
        self.shutdown_calls = 0
        self.admitted_total = 0

    def body(self, path: str) -> tuple[int, str]:
        """What serving ``GET path`` (``/{name}/v1/models``) would return."""
        name = path.split("/")[1]
        body = self.snapshot.providers.get(name)
        return (200, cast(str, body)) if body is not None else (404, "route not supported")

    def __repr__(self) -> str:
        return f"FakeBridge#{self.id}({self.key}, gen={self.snapshot.generation})"


class Harness:
    """Builder for a pool of :class:`FakeBridge`, recording every bridge it built."""

    def __init__(self) -> None:
        self.bridges: list[FakeBridge] = []
        self.build_error: BaseException | None = None
        # Awaited inside the builder when set (to park a build at a precise point).
        self.in_builder: Callable[[BridgeKey, ProviderSnapshot], Awaitable[None]] | None = None

    async def build(self, key: BridgeKey, actor: Actor, snapshot: ProviderSnapshot) -> FakeBridge:
        if self.in_builder is not None:
            await self.in_builder(key, snapshot)
        if self.build_error is not None:
            raise self.build_error
        bridge = FakeBridge(key, snapshot)
        self.bridges.append(bridge)
        return bridge

    def pool(self, **kwargs: Any) -> CachedBridgePool[FakeBridge]:
        """A pool over this harness; no background sweeper unless asked for.

        Every retirement the pool starts counts in the bridge's ``shutdown_calls`` (before
        any ``before_bridge_shutdown`` hook passed in runs).
        """
        hooks = kwargs.pop("hooks", None) or PoolHooks()
        then = hooks.before_bridge_shutdown

        async def count_shutdown(bridge: FakeBridge) -> None:
            bridge.shutdown_calls += 1
            if then is not None:
                await then(bridge)

        kwargs["hooks"] = dataclasses.replace(hooks, before_bridge_shutdown=count_shutdown)
        kwargs.setdefault("sweep_interval", None)
        kwargs.setdefault("clock", FakeClock())
        kwargs.setdefault("registry", CollectorRegistry())
        snapshot = kwargs.pop("snapshot", fake_snapshot(1))
        return CachedBridgePool(self.build, snapshot, **kwargs)


async def acquire_once(pool: CachedBridgePool[Any], actor: Actor) -> Any:
    """Acquire and release ``actor``'s bridge (like the Go tests' ``Acquire``)."""
    async with asyncio.timeout(WAIT), pool.acquire(actor) as bridge:
        if isinstance(bridge, FakeBridge):
            bridge.admitted_total += 1
        return bridge


def counters(pool: CachedBridgePool[Any]) -> tuple[int, int, int, int]:
    """(keys_added, keys_evicted, hits, misses), the order the seed asserts them in."""
    m = pool.cache_metrics()
    return (m.keys_added, m.keys_evicted, m.hits, m.misses)


def retirements(pool: CachedBridgePool[Any], reason: str) -> float | None:
    """How many bridges the pool retired for ``reason``."""
    return pool.metrics.registry.get_sample_value(
        "aibridge_bridge_pool_retirements_total", {"reason": reason}
    )


async def close_pool(pool: CachedBridgePool[Any]) -> None:
    """Shut the pool down (bounded), as the Go tests' ``t.Cleanup``."""
    async with asyncio.timeout(WAIT):
        await pool.shutdown()
