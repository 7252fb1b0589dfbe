"""The provider runtimes one reload built, as an immutable snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aibridge.mcp.settings import MCPServerSettings
from aibridge.providers import routes
from aibridge.providers.base import DisabledProvider, Provider
from aibridge.providers.routes import BridgedRoute, PassthroughRoute, RoutingError, WebSocketRoute


@dataclass(frozen=True)
class ProviderSnapshot:
    """An immutable set of provider runtimes with the generation it was built at, and the
    enabled MCP servers whose tools bridges built over it inject."""

    generation: int
    providers: Mapping[str, Provider | DisabledProvider] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)
    mcp_servers: tuple[MCPServerSettings, ...] = ()

    def get(self, name: str) -> Provider | DisabledProvider | None:
        """The runtime named ``name``."""
        return self.providers.get(name)

    def resolve(
        self, name: str, raw_path: str, method: str, *, websocket: bool = False
    ) -> BridgedRoute | PassthroughRoute | WebSocketRoute | RoutingError:
        """Route a request for provider ``name`` against this snapshot (and only this one):
        ``raw_path`` is the path after ``/<name>`` exactly as sent, ``websocket`` whether
        the client asked for an upgrade. See :func:`aibridge.providers.routes.resolve`."""
        return routes.resolve(self.providers.get(name), name, raw_path, method, websocket=websocket)
