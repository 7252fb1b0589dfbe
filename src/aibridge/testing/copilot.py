"""A test stack with a ``copilot`` provider in front of the fake Copilot API, and the
official ``openai`` SDK set up the way GitHub Copilot clients call it.

Needs the ``openai`` package (the ``dev`` extra).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import openai

from aibridge.fakellm.copilot import FakeCopilot
from aibridge.testing.clients import closed_after_test
from aibridge.testing.stack import TIMEOUT, Stack, stack

COPILOT_TOKEN = "ghu_CopilotDeveloperToken0123456789abcd"
"""The developer's own Copilot token (what VS Code sends in ``Authorization``)."""
OTHER_TOKEN = "ghu_AnotherDeveloperToken9876543210wxyz"
"""A second developer's token, accepted by the fake too."""

COPILOT_HEADERS: Mapping[str, str] = {
    "Editor-Version": "vscode/1.99.3",
    "Editor-Plugin-Version": "copilot-chat/0.26.7",
    "Copilot-Integration-Id": "vscode-chat",
    "Openai-Intent": "conversation-panel",
    "X-Initiator": "user",
    "X-Request-Id": "3f1c2a9e-8d1b-4c55-9a7e-0d4b6f2e1a77",
    "X-Interaction-Id": "b7e0c0de-1111-4222-8333-944455566677",
    "User-Agent": "GitHubCopilotChat/0.26.7",
}
"""The request headers Copilot Chat in VS Code sends, which must reach upstream unchanged."""


@asynccontextmanager
async def copilot_stack(
    db_url: str, tmp_path: Path, *, name: str = "copilot"
) -> AsyncIterator[tuple[Stack, FakeCopilot]]:
    """The gateway with provider ``name`` (type ``copilot``, no keys, no settings) whose
    base URL is a fake Copilot API accepting :data:`COPILOT_TOKEN` and :data:`OTHER_TOKEN`."""
    copilot = FakeCopilot(tokens={COPILOT_TOKEN, OTHER_TOKEN})
    async with copilot.serve(), stack(db_url, tmp_path) as s:
        await s.add_provider(name, "copilot", keys=(), base_url=copilot.url)
        yield s, copilot


def copilot_headers(s: Stack, **extra: str) -> dict[str, str]:
    """Copilot's headers plus the member's gateway key in ``X-AIBridge-Token``."""
    return {**COPILOT_HEADERS, "X-AIBridge-Token": s.user_token, **extra}


def copilot_sdk(
    s: Stack,
    *,
    token: str = COPILOT_TOKEN,
    provider: str = "copilot",
    headers: Mapping[str, str] | None = None,
) -> openai.AsyncOpenAI:
    """The SDK at ``/{provider}`` (no ``/v1``: Copilot has none) with the developer's token
    as its API key and the gateway key in ``X-AIBridge-Token`` (no retries)."""
    return closed_after_test(
        openai.AsyncOpenAI(
            base_url=f"{s.base}/{provider}",
            api_key=token,
            max_retries=0,
            timeout=TIMEOUT,
            default_headers=dict(headers if headers is not None else copilot_headers(s)),
        )
    )


__all__ = [
    "COPILOT_HEADERS",
    "COPILOT_TOKEN",
    "OTHER_TOKEN",
    "copilot_headers",
    "copilot_sdk",
    "copilot_stack",
]
