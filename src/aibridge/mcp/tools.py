"""What the engine hands to the interception layer: an injected tool and a call's result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from mcp.types import (
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)


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


def result_text(result: CallToolResult) -> str:
    """An MCP tool result as the text a model reads.

    Text parts as they are; resources inline with their MIME type and URI; media the
    gateway cannot pass on as a short note (so the model knows something was there); no
    content but structured content: that content as JSON.
    """
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        elif isinstance(block, EmbeddedResource):
            res = block.resource
            if isinstance(res, TextResourceContents):
                body = res.text
            elif isinstance(res, BlobResourceContents):
                body = res.blob
            else:  # pragma: no cover - the SDK knows only these two
                body = ""
            parts.append(f"Resource (MIME: {res.mime_type}, URI: {res.uri}): {body}")
        elif isinstance(block, ResourceLink):
            parts.append(f"Resource link: {block.uri} ({block.name})")
        elif isinstance(block, ImageContent | AudioContent):
            parts.append(f"[{block.type} content ({block.mime_type}) not shown]")
        else:  # pragma: no cover - future content types
            parts.append(f"[{getattr(block, 'type', 'unknown')} content not shown]")
    if not parts and result.structured_content is not None:
        parts.append(orjson.dumps(result.structured_content).decode())
    return "\n".join(parts) if parts else "(the tool returned no content)"
