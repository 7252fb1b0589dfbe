"""What the engine hands to the interception layer: an injected tool and a call's result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class MCPTool:
    """One tool offered to the model.

    ``id`` is the injected name the model sees (``bmcp_<server>_<tool>``), ``name`` the
    tool's own name on its MCP server (what is called, recorded and counted).
    ``input_schema`` is the MCP tool's JSON schema for its arguments.
    """

    id: str
    name: str
    server_name: str
    server_url: str = field(repr=False)
    description: str
    input_schema: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a call gives back to the model.

    ``text`` is the result as text (what the model reads); ``is_error`` is True when the
    tool reported an error (MCP ``isError``) or the call itself failed; ``error`` is the
    invocation error for the record (the call failed, timed out, the tool is unknown),
    None when the server answered — even with ``isError``.
    """

    text: str
    is_error: bool = False
    error: str | None = None
