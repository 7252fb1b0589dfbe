"""Actor headers end to end: the fake upstream sees X-AIBridge-Actor-* exactly when the
provider's ``send_actor_headers`` is on (every call of the injected-tool loop too), and
never a copy the client sent."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from aibridge.fakellm import ToolCall
from aibridge.fakellm.tooluse import tool_caller
from aibridge.intercept.actor_headers import header_value
from aibridge.testing.mcp_server import install_mcp_servers, mcp_server, server_settings
from aibridge.testing.stack import TIMEOUT, Stack, stack

SESSION = "sess-42"
# What a client would send to pose as someone else (all must be dropped).
SPOOFED = {
    "X-AIBridge-Actor-ID": "00000000-0000-0000-0000-000000000000",
    "X-AIBridge-Actor-Username": "mallory",
    "X-AIBridge-Actor-Metadata-Client": "Spoofed",
    "X-AIBridge-Actor-Metadata-Role": "admin",
    "x-aibridge-actor-metadata-session-id": "forged",
}
CHAT = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}


def actor_headers(headers: Any) -> dict[str, list[str]]:
    """Every X-AIBridge-Actor-* header the upstream got, by lower-case name."""
    out: dict[str, list[str]] = {}
    for name, value in headers.items():
        if name.lower().startswith("x-aibridge-"):
            out.setdefault(name.lower(), []).append(value)
    return out


async def chat(s: Stack, provider: str, extra: dict[str, str] | None = None) -> None:
    headers = {
        "Authorization": f"Bearer {s.user_token}",
        "User-Agent": "claude-cli/2.0.1 (external, cli)",
        "X-Claude-Code-Session-Id": SESSION,
        **SPOOFED,
        **(extra or {}),
    }
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.post(f"/{provider}/v1/chat/completions", json=CHAT, headers=headers)
        assert resp.status == 200, await resp.text()


def expected(member_id: str) -> dict[str, list[str]]:
    return {
        "x-aibridge-actor-id": [member_id],
        "x-aibridge-actor-username": ["dev"],
        "x-aibridge-actor-metadata-client": ["Claude Code"],
        "x-aibridge-actor-metadata-session-id": [SESSION],
    }


async def test_actor_headers_are_sent_when_on_and_client_copies_are_replaced(
    db_url: str, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path) as s:
        await s.add_provider("on", "openai", settings={"send_actor_headers": True})
        await chat(s, "on")
        (seen,) = s.fake.generation_requests()
        assert actor_headers(seen.headers) == expected(str(await s.member_id()))


async def test_no_actor_headers_when_off_and_client_copies_are_still_stripped(
    db_url: str, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path) as s:
        await s.add_provider("off", "openai")
        await s.add_provider("explicit-off", "openai", settings={"send_actor_headers": False})
        await chat(s, "off")
        await chat(s, "explicit-off", {"X-AIBridge-Anything": "x"})
        requests = s.fake.generation_requests()
        assert len(requests) == 2
        for seen in requests:
            assert actor_headers(seen.headers) == {}
            # The request itself went through (the client's other headers too).
            assert seen.headers["X-Claude-Code-Session-Id"] == SESSION


@pytest.mark.parametrize("api", ["chat", "messages"])
async def test_every_call_of_the_injected_tool_loop_carries_the_actor(
    db_url: str, tmp_path: Path, api: str
) -> None:
    async with mcp_server("test") as mcp, stack(db_url, tmp_path) as s:
        ptype = "openai" if api == "chat" else "anthropic"
        await s.add_provider("loop", ptype, settings={"send_actor_headers": True})
        install_mcp_servers(s.services, server_settings(mcp.url))
        s.fake.responder = tool_caller(
            [ToolCall("bmcp_test_add", {"a": 2, "b": 40})], answer="Final: {results}"
        )
        headers = {
            "User-Agent": "claude-cli/2.0.1 (external, cli)",
            "X-Claude-Code-Session-Id": SESSION,
            **SPOOFED,
        }
        if api == "chat":
            path, body = "/loop/v1/chat/completions", CHAT
            headers["Authorization"] = f"Bearer {s.user_token}"
        else:
            path = "/loop/v1/messages"
            body = {
                "model": "claude-sonnet-4-5",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": "hi"}],
            }
            headers |= {"x-api-key": s.user_token, "anthropic-version": "2023-06-01"}
        async with asyncio.timeout(TIMEOUT * 2):
            resp = await s.client.post(path, json=body, headers=headers)
            assert resp.status == 200, await resp.text()
        assert [c.name for c in mcp.calls] == ["add"]
        requests = s.fake.generation_requests()
        # The first call and the one after the tool result: both for the member.
        assert len(requests) == 2
        want = expected(str(await s.member_id()))
        for seen in requests:
            assert actor_headers(seen.headers) == want


async def test_settings_refuse_gateway_headers_and_non_boolean_values(
    db_url: str, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path) as s, asyncio.timeout(TIMEOUT):
        for settings, field, message in (
            (
                {"extra_headers": {"X-AIBridge-Actor-ID": "x"}},
                "settings.extra_headers.X-AIBridge-Actor-ID",
                "reserved for the gateway; use send_actor_headers",
            ),
            (
                {"send_actor_headers": "yes"},
                "settings.send_actor_headers",
                "send_actor_headers must be a boolean",
            ),
        ):
            resp = await s.client.post(
                "/api/v1/providers",
                json={
                    "type": "openai",
                    "name": "bad",
                    "base_url": s.fake.url + "/v1",
                    "api_keys": ["sk-x-0001"],
                    "settings": settings,
                },
                headers=s.admin_headers(),
            )
            assert resp.status == 400, await resp.text()
            text = await resp.text()
            assert field in text and message in text, text


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("dev", "dev"),
        ("sess 1/2:3", "sess 1/2:3"),
        ("a\r\nX-Evil: 1", "a%0D%0AX-Evil: 1"),
        ("100%", "100%25"),
        ("jürgen", "j%C3%BCrgen"),
    ],
)
def test_header_values_are_printable_ascii(value: str, sent: str) -> None:
    assert header_value(value) == sent
