"""The fake upstream's request log: every request as it arrived, and what was answered."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from multidict import CIMultiDict, MultiDict

from aibridge.fakellm.scenario import Scenario

Api = Literal["anthropic", "chat", "responses"]
"""The generation APIs the fake answers."""


@dataclass
class RecordedRequest:
    """One request as the fake upstream received it."""

    method: str
    path: str
    query: MultiDict[str]
    headers: CIMultiDict[str]
    body: bytes
    """The raw request body, byte for byte."""
    json: Any = None
    """The parsed body, or None when it is empty or not JSON."""
    api: Api | None = None
    """Which generation API answered (None for models, count_tokens, GET responses)."""
    scenario: Scenario | None = None
    """The scenario chosen for a generation request."""
    status: int | None = None
    """The HTTP status sent."""
    response_id: str | None = None
    """``msg_…`` / ``chatcmpl-…`` / ``resp_…`` of the generated response."""
    tool_call_ids: list[str] = field(default_factory=list)
    """``toolu_…`` / ``call_…`` ids of the generated tool calls."""
    disconnected: bool = False
    """The client went away before the response was complete."""
    dropped: bool = False
    """The fake closed the connection mid-response (DROP scenario)."""
    received_at: float = field(default_factory=time.time)
    target: str = ""
    """The request target exactly as it arrived (path and query, encoding and dot segments
    kept)."""

    def credential(self) -> str | None:
        """The API key the request carried (``x-api-key`` or ``Authorization: Bearer``)."""
        key = self.headers.get("x-api-key")
        return key if key else bearer(self.headers)


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, if there is one."""
    auth = headers.get("Authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None
