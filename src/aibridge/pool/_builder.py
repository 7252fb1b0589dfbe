"""What the pool builds: the identity of a bridge, the builder protocol and the production
builder (a :class:`~aibridge.bridge.RequestBridge`)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from aibridge.actor import Actor
from aibridge.bridge import RequestBridge
from aibridge.intercept.hooks import NO_ADDONS, Addons
from aibridge.providers.snapshot import ProviderSnapshot
from aibridge.providers.upstream import UpstreamClients

B_co = TypeVar("B_co", covariant=True)


@dataclass(frozen=True, slots=True)
class BridgeKey:
    """Identity of a cached bridge: the user and the gateway key they presented."""

    user_id: uuid.UUID
    key_id: str

    @classmethod
    def of(cls, actor: Actor) -> BridgeKey:
        """The key for ``actor``."""
        return cls(actor.user_id, actor.key_id)

    def __str__(self) -> str:
        return f"{self.user_id}|{self.key_id}"


class BridgeBuilder(Protocol[B_co]):
    """Builds a bridge for ``key``/``actor`` over ``snapshot``.

    A bridge only serves requests: the pool admits requests onto it, retires and drains
    it, so it needs no lifecycle methods of its own.
    """

    def __call__(self, key: BridgeKey, actor: Actor, snapshot: ProviderSnapshot) -> Awaitable[B_co]:
        """Build the bridge."""
        ...


def request_bridge_builder(
    upstream: UpstreamClients,
    *,
    max_body_bytes: int,
    hooks: Addons = NO_ADDONS,
) -> BridgeBuilder[RequestBridge]:
    """The production builder: a :class:`RequestBridge` over the generation's snapshot;
    ``hooks`` (metrics, recording) observe every request it serves."""

    async def build(key: BridgeKey, actor: Actor, snapshot: ProviderSnapshot) -> RequestBridge:
        return RequestBridge(snapshot, actor, upstream, max_body_bytes=max_body_bytes, hooks=hooks)

    return build
