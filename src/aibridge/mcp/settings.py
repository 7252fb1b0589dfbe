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
