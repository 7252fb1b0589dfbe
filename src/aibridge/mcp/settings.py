"""One configured MCP server as the gateway uses it (the interface between the MCP
configuration — admin API, store, reload — and the MCP engine — proxies, injection)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class MCPServerSettings:
    """One enabled MCP server as the gateway uses it (secrets decrypted, regexes compiled)."""

    id: uuid.UUID
    name: str  # same name rules as providers
    url: str  # Streamable HTTP endpoint
    tool_allow: re.Pattern[str] | None
    tool_deny: re.Pattern[str] | None
    auth: Literal["none", "header", "per_user"]
    header_name: str | None = None  # auth == "header": the static header …
    header_value: str | None = field(default=None, repr=False)  # … and its (decrypted) value


UserTokens = Callable[[uuid.UUID], Awaitable[Mapping[uuid.UUID, str]]]
"""user id -> {server id: that user's token} for the per_user servers (one DB query)."""


@dataclass(frozen=True, slots=True)
class MCPOptions:
    """Time limits of the MCP engine (seconds).

    ``init_timeout`` bounds connecting and listing the tools at bridge build;
    ``call_timeout`` one tool call; ``tools_ttl`` how long a tool list is used before it
    is fetched again (a list-changed notification refreshes it at once);
    ``close_timeout`` how long closing a session may take before its task is cancelled;
    ``max_iterations`` the most upstream turns one request runs with injected tools.
    """

    max_iterations: int = 10
    init_timeout: float = 10.0
    call_timeout: float = 120.0
    tools_ttl: float = 300.0
    close_timeout: float = 5.0
