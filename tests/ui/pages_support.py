"""Helpers of the Sessions, Providers and Users browser tests: admin API calls through the
stack's client, recording a Claude Code-shaped session through the real gateway, and the
screenshots the docs link (``AIBRIDGE_SCREENSHOTS``)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.async_api import Page

from aibridge.fakellm import Scenario
from aibridge.fakellm.scenario import ToolCall, Usage
from aibridge.store.models import AIProvider, AIProviderKey
from aibridge.testing.stack import TIMEOUT, Stack

SCREENSHOTS_ENV = "AIBRIDGE_SCREENSHOTS"
"""Folder the screenshot tests write into (``scripts/screenshots`` sets docs/screenshots);
unset: a temporary folder, so a normal run never touches the checked-in images."""
CLAUDE_UA = "claude-cli/1.0.0 (external, cli)"
ANTHROPIC_PROVIDER = "claude"
ANTHROPIC_MODEL = "claude-sonnet-4-5"
BROKEN_KEY = "sk-broken-duplicate-cccc3333"
"""The key :func:`add_broken_provider` stores twice."""


async def api(
    s: Stack, method: str, path: str, *, token: str | None = None, json: Any = None
) -> tuple[int, Any]:
    """Call the admin API with ``token`` (the admin's by default): (status, JSON or None)."""
    headers = {"Authorization": f"Bearer {token or s.admin_token}"}
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.request(method, path, json=json, headers=headers)
        body = await resp.json() if resp.status != 204 else None
    return resp.status, body


async def save_screenshot(page: Page, name: str, fallback: Path) -> Path:
    """A 1280x800 screenshot of ``page`` as ``<name>.png`` in ``AIBRIDGE_SCREENSHOTS`` (or
    ``fallback``, a temporary folder); returns the path."""
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or fallback)
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    await page.set_viewport_size({"width": 1280, "height": 800})
    # The top of the page, as a reader arriving on it sees it.
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=str(path))
    return path


@dataclass(frozen=True)
class Turn:
    """One scripted turn of the agent session: what the user asked, the tool calls the
    (fake) model answers with, and the usage it reports."""

    prompt: str
    calls: tuple[ToolCall, ...]
    usage: Usage


# Turns 1 and 2 reuse the prompt cache; turn 3 sends a changed system prompt, so the cache
# no longer matches: its share of input from the cache collapses (the flag to show).
CLAUDE_SESSION = (
    Turn(
        "List the files of the repository",
        (ToolCall("Bash", {"command": "ls -la", "description": "List files"}),),
        Usage(input_tokens=1200, output_tokens=60, cache_read_tokens=0, cache_write_tokens=4000),
    ),
    Turn(
        "Open the README and the <img src=x onerror=window.__pwned=1> notes "
        "<script>window.__pwned=2</script>",
        (
            ToolCall("Read", {"file_path": "/repo/README.md"}),
            ToolCall("Grep", {"pattern": "TODO", "path": "/repo"}),
        ),
        Usage(input_tokens=150, output_tokens=80, cache_read_tokens=5200, cache_write_tokens=0),
    ),
    Turn(
        "Fix the typo in the README",
        (
            ToolCall(
                "Edit", {"file_path": "/repo/README.md", "old_string": "teh", "new_string": "the"}
            ),
        ),
        Usage(input_tokens=5600, output_tokens=95, cache_read_tokens=0, cache_write_tokens=5600),
    ),
)


async def record_claude_session(s: Stack, session_id: str, token: str) -> None:
    """Send :data:`CLAUDE_SESSION` through the gateway as Claude Code would (its User-Agent
    and session header, Anthropic Messages with tools) and wait until it is recorded.
    Needs the ``claude`` anthropic provider (:func:`add_claude_provider`)."""
    history: list[dict[str, Any]] = []
    for turn in CLAUDE_SESSION:
        s.fake.enqueue(
            Scenario.parallel_tools(list(turn.calls), usage=turn.usage)
            if len(turn.calls) > 1
            else Scenario.tool_call(turn.calls[0], text="", usage=turn.usage)
        )
        history.append({"role": "user", "content": turn.prompt})
        body = {
            "model": ANTHROPIC_MODEL,
            "max_tokens": 1024,
            "system": "You are Claude Code.",
            "messages": history,
            "tools": [{"name": c.name, "input_schema": {"type": "object"}} for c in turn.calls],
        }
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.post(
                f"/{ANTHROPIC_PROVIDER}/v1/messages",
                json=body,
                headers={
                    "X-Api-Key": token,
                    "User-Agent": CLAUDE_UA,
                    "X-Claude-Code-Session-Id": session_id,
                    "anthropic-version": "2023-06-01",
                },
            )
            answer = await resp.json()
        assert resp.status == 200, answer
        history.append({"role": "assistant", "content": answer["content"]})
        history.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": b["id"], "content": "ok"}
                    for b in answer["content"]
                    if b["type"] == "tool_use"
                ],
            }
        )
    await s.flush_records()


async def add_claude_provider(s: Stack) -> None:
    """An ``anthropic`` provider named ``claude`` on the fake upstream."""
    await s.add_provider(ANTHROPIC_PROVIDER, "anthropic")


async def add_broken_provider(st: Stack) -> None:
    """A row written around the API's validation (the same key twice): the reload cannot
    build it, so its live status is ``error`` with the build error as reason."""
    async with asyncio.timeout(TIMEOUT), st.services.sessions() as s, s.begin():
        row = AIProvider(name="broken", type="openai", enabled=True, base_url=st.fake.url + "/v1")
        s.add(row)
        await s.flush()
        s.add(AIProviderKey(provider_id=row.id, api_key=BROKEN_KEY))
        s.add(AIProviderKey(provider_id=row.id, api_key=BROKEN_KEY))
    reloader = st.services.reloader
    assert reloader is not None
    async with asyncio.timeout(TIMEOUT):
        assert await reloader.reload()
