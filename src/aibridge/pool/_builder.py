"""What the pool builds: the identity of a bridge, the builder protocol and the production
builder (a :class:`~aibridge.bridge.RequestBridge`)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from aibridge.actor import Actor
from aibridge.bridge import RequestBridge
from aibridge.governance.limiter import Limiter
from aibridge.intercept.agentic import DEFAULT_MAX_ITERATIONS
from aibridge.intercept.hooks import NO_ADDONS, Addons
from aibridge.mcp.settings import MCPOptions, UserTokens
from aibridge.mcp.toolset import build_toolset
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

    The pool admits requests onto a bridge, retires and drains it; a bridge with an
    ``aclose()`` coroutine method (its MCP sessions) has it awaited after the drain.
    """

    def __call__(self, key: BridgeKey, actor: Actor, snapshot: ProviderSnapshot) -> Awaitable[B_co]:
        """Build the bridge."""
        ...


def request_bridge_builder(
    upstream: UpstreamClients,
    *,
    limiter: Limiter,
    max_body_bytes: int,
    hooks: Addons = NO_ADDONS,
    user_tokens: UserTokens | None = None,
    mcp: MCPOptions | None = None,
) -> BridgeBuilder[RequestBridge]:
    """The production builder: a :class:`RequestBridge` over the generation's snapshot;
    ``hooks`` (metrics, recording) observe every request it serves, ``limiter`` admits
    each one.

    With ``mcp`` (the engine's limits) and MCP servers in the snapshot, the bridge gets
    the actor's toolset: a session with every server the user may use (``user_tokens``
    loads the user's tokens for per-user servers), opened concurrently. A server that
    fails is left out; the bridge is built all the same.
    """

    async def build(key: BridgeKey, actor: Actor, snapshot: ProviderSnapshot) -> RequestBridge:
        toolset = None
        if mcp is not None and snapshot.mcp_servers:
            toolset = await build_toolset(
                snapshot.mcp_servers, actor.user_id, user_tokens=user_tokens, options=mcp
            )
        return RequestBridge(
            snapshot,
            actor,
            upstream,
            limiter=limiter,
            max_body_bytes=max_body_bytes,
            hooks=hooks,
            toolset=toolset,
            max_iterations=mcp.max_iterations if mcp is not None else DEFAULT_MAX_ITERATIONS,
        )

    return build
