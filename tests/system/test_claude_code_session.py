"""A Claude Code-shaped session of three turns with tool calls, recorded through the real
gateway and the fake upstream, read back from ``/api/v1/sessions`` in order."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aibridge.fakellm import Scenario
from aibridge.fakellm.scenario import ToolCall, Usage
from aibridge.testing.gateway import add_member
from aibridge.testing.stack import TIMEOUT, Stack, stack

SESSION = "0f4c9a52-7d1e-4c1b-9a7e-3b2f5e6d8c01"
UA = "claude-cli/2.0.14 (external, cli)"
READ = ToolCall("Read", {"file_path": "/src/app.py"})
EDIT = ToolCall("Edit", {"file_path": "/src/app.py", "old_string": "a", "new_string": "b"})
# Turn 1 writes the cache, turns 2 and 3 read it (share 0 -> ~0.97 -> ~0.98: no break).
TURNS = [
    (
        "Fix the bug in app.py",
        Scenario.tool_call(
            READ,
            thinking="I should read the file first.",
            usage=Usage(input_tokens=120, output_tokens=30, cache_write_tokens=4000),
        ),
    ),
    (
        "tool_result: def f(): return a",
        Scenario.tool_call(
            EDIT, usage=Usage(input_tokens=150, output_tokens=40, cache_read_tokens=4000)
        ),
    ),
    (
        "tool_result: edited",
        Scenario.text_reply(
            "Fixed: f now returns b.",
            usage=Usage(input_tokens=90, output_tokens=12, cache_read_tokens=4200),
        ),
    ),
]


def messages(upto: int) -> list[dict[str, Any]]:
    """The conversation Claude Code would send on turn ``upto`` (0-based): every earlier
    user message, then this turn's (tool results arrive as the next user message)."""
    out: list[dict[str, Any]] = []
    for i, (prompt, _) in enumerate(TURNS[: upto + 1]):
        if i:
            out.append({"role": "assistant", "content": "…"})
        out.append({"role": "user", "content": prompt})
    return out


async def turn(s: Stack, index: int) -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "stream": True,
        "messages": messages(index),
        "tools": [
            {"name": "Read", "input_schema": {"type": "object"}},
            {"name": "Edit", "input_schema": {"type": "object"}},
        ],
    }
    headers = {
        "Authorization": f"Bearer {s.user_token}",
        "User-Agent": UA,
        "X-Claude-Code-Session-Id": SESSION,
        "anthropic-version": "2023-06-01",
    }
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.post("/claude/v1/messages", json=body, headers=headers)
        assert resp.status == 200, await resp.text()
        await resp.read()


async def test_three_turn_claude_code_session_reads_back_in_order(
    db_url: str, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path) as s:
        await s.add_provider("claude", "anthropic")
        s.fake.enqueue(*(scenario for _, scenario in TURNS))
        for index in range(len(TURNS)):
            await turn(s, index)
        await s.flush_records()

        headers = {"Authorization": f"Bearer {s.user_token}"}
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.get("/api/v1/sessions", headers=headers)
            assert resp.status == 200
            page = await resp.json()
        (entry,) = [e for e in page["sessions"] if e["client_session_id"] == SESSION]
        assert entry["client"] == "Claude Code"
        assert entry["interception_count"] == 3
        assert entry["tokens"]["input"] == sum(sc.usage.input_tokens for _, sc in TURNS)
        assert entry["tokens"]["cache_read"] == 8200
        assert entry["error_count"] == 0

        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.get(f"/api/v1/sessions/{entry['id']}", headers=headers)
            assert resp.status == 200
            detail = await resp.json()
        turns = detail["interceptions"]
        assert [t["prompt"] for t in turns] == [prompt for prompt, _ in TURNS]
        assert [t["started_at"] for t in turns] == sorted(t["started_at"] for t in turns)
        assert [[c["name"] for c in t["tool_calls"]] for t in turns] == [["Read"], ["Edit"], []]
        assert turns[0]["tool_calls"][0]["arguments"] == READ.arguments
        assert turns[1]["tool_calls"][0]["arguments"] == EDIT.arguments
        assert all(c["injected"] is False for t in turns for c in t["tool_calls"])
        assert turns[0]["thoughts"] == ["I should read the file first."]
        assert turns[1]["thoughts"] == [] and turns[2]["thoughts"] == []
        for t, (_, sc) in zip(turns, TURNS, strict=True):
            assert t["tokens"]["input"] == sc.usage.input_tokens
            assert t["tokens"]["output"] == sc.usage.output_tokens
            assert t["tokens"]["cache_read"] == sc.usage.cache_read_tokens
            assert t["tokens"]["cache_write"] == sc.usage.cache_write_tokens
            assert t["error_type"] is None and t["client"] == "Claude Code"
        assert [t["cache_break"] for t in turns] == [False, False, False]
        assert turns[0]["cache_read_share"] == 0
        assert turns[2]["cache_read_share"] > 0.9
        # Another member does not see it; the admin does.
        other = await add_member(s.services, "eve")
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.get(
                f"/api/v1/sessions/{entry['id']}", headers={"Authorization": f"Bearer {other}"}
            )
            assert resp.status == 404
            resp = await s.client.get(f"/api/v1/sessions/{entry['id']}", headers=s.admin_headers())
            assert resp.status == 200
