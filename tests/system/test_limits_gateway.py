"""The gateway's limits end to end on one gateway: the injected-MCP-tool loop settles
every upstream call against the token rate and the budget; ``allowed_models`` per
provider (``NAME/GLOB``) with a key stricter than its user; the budget soft threshold
logged once per subject and period and counted in /metrics.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from aibridge.clock import FakeClock
from aibridge.fakellm import Scenario, ToolCall, Usage
from aibridge.fakellm.tooluse import tool_caller
from aibridge.governance.prices import Price, PriceTable
from aibridge.testing.mcp_server import (
    MCPTestServer,
    install_mcp_servers,
    mcp_server,
    server_settings,
)
from aibridge.testing.stack import TIMEOUT, Stack, stack

ANTHROPIC = {"anthropic-version": "2023-06-01"}


def real_now() -> datetime:
    """The real time to whole seconds (records are stamped with the real time)."""
    return datetime.now(UTC).replace(microsecond=0)


async def post(
    s: Stack, path: str, body: dict[str, Any], token: str | None = None
) -> tuple[int, dict[str, str], Any]:
    """POST ``body`` (sent as these exact bytes) with the member's key or ``token``."""
    token = token or s.user_token
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if "/ant/" in path:
        headers = {"x-api-key": token, "Content-Type": "application/json", **ANTHROPIC}
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.post(path, data=orjson.dumps(body), headers=headers)
        raw = await resp.read()
    return resp.status, dict(resp.headers), orjson.loads(raw) if raw.startswith(b"{") else raw


async def admin(s: Stack, method: str, path: str, body: Any) -> Any:
    """An admin API call that must succeed."""
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.request(method, path, json=body, headers=s.admin_headers())
        data = await resp.json()
    assert resp.status in (200, 201), (resp.status, data)
    return data


async def key_id(s: Stack, token: str | None = None) -> str:
    """The id of the member's key (or ``token``'s), from /api/v1/me."""
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.get(
            "/api/v1/me", headers={"Authorization": f"Bearer {token or s.user_token}"}
        )
        return str((await resp.json())["key_id"])


async def metrics_text(s: Stack) -> str:
    """The gateway's /metrics."""
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.get("/metrics")
        return await resp.text()


# ---------------------------------------------------------------------------------------
# The injected-tool loop
# ---------------------------------------------------------------------------------------


@pytest.fixture
async def mcp() -> AsyncIterator[MCPTestServer]:
    """A real MCP server with the test tools (add, lookup, …)."""
    async with mcp_server("test") as srv:
        yield srv


async def test_the_injected_tool_loop_settles_every_upstream_call_against_tokens_and_budget(
    sqlite_url: str, tmp_path: Path, mcp: MCPTestServer
) -> None:
    # Three upstream turns: two tool calls (310 in + 48 out each) and the answer (25 + 12):
    # 753 tokens, at $1 per million tokens in and out $0.000753. The budget is below
    # that but above two turns' worth (716): only the sum of all three exhausts it.
    turns = [Scenario.tool_call().usage, Scenario.tool_call().usage, Usage()]
    tokens = sum(u.input_tokens + u.output_tokens for u in turns)
    assert tokens == 753
    overrides = {"default_tokens_per_minute": 100_000, "default_budget": "0.00074/day"}
    async with stack(sqlite_url, tmp_path, settings_overrides=overrides, clock=FakeClock()) as s:
        await s.add_provider("oai", "openai")
        s.services.prices.replace(
            PriceTable([Price("openai", "gpt-4.1", 1_000_000, 1_000_000, 0, 0, "2025-01-01")])
        )
        install_mcp_servers(s.services, server_settings(mcp.url))
        s.fake.responder = tool_caller(
            [ToolCall("bmcp_test_add", {"a": 2, "b": 40}), ToolCall("bmcp_test_lookup", {})]
        )
        body = {
            "model": "gpt-4.1",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "What is 2+40?"}],
        }
        status, _, answer = await post(s, "/oai/v1/chat/completions", body)
        assert status == 200, answer
        assert len(s.fake.generation_requests()) == 3
        assert [c.name for c in mcp.calls] == ["add", "lookup"]
        rec = await s.only_recording()
        assert sum(u.cost_pusd or 0 for u in rec.token_usages) == tokens * 1_000_000

        # The next request is refused by the budget: the limiter counted all three turns.
        status, headers, refused = await post(s, "/oai/v1/chat/completions", body)
        assert status == 429
        assert refused["error"]["code"] == "budget_exceeded"
        assert refused["error"]["message"].startswith(
            "Budget exceeded: user dev has spent $0.000753 of its $0.00074 daily budget;"
        )
        # And its token-rate headers: the three turns' tokens are in the window.
        reserve = math.ceil(len(orjson.dumps(body)) / 4) + 50
        assert headers["x-ratelimit-remaining-tokens"] == str(100_000 - tokens - reserve)
        assert len(s.fake.generation_requests()) == 3


# ---------------------------------------------------------------------------------------
# allowed_models
# ---------------------------------------------------------------------------------------


def chat(model: str) -> dict[str, Any]:
    """A small Chat Completions request."""
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


async def test_allowed_models_per_provider_and_a_key_stricter_than_its_user(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("oai", "openai")
        await s.add_provider("other", "openai")
        await s.add_provider("ant", "anthropic")
        # The user: GPT-5 models on provider oai only, Claude models anywhere; the key:
        # gpt-5-mini only (on any provider, or the OpenRouter-style name "oai/…").
        await admin(
            s,
            "PATCH",
            "/api/v1/users/dev",
            {"limits": {"allowed_models": ["oai/gpt-5*", "claude-*"]}},
        )
        limited = await key_id(s)
        await admin(
            s,
            "PATCH",
            f"/api/v1/users/dev/keys/{limited}",
            {"limits": {"allowed_models": ["gpt-5-mini", "oai/gpt-5-mini"]}},
        )
        free = (await admin(s, "POST", "/api/v1/users/dev/keys", {"name": "free"}))["token"]
        claude = {"model": "claude-sonnet-4", "max_tokens": 8, "messages": chat("x")["messages"]}
        key_refusal = "is not allowed for key " + limited
        user_refusal = "is not allowed for user dev"
        cases: list[tuple[str, str, dict[str, Any], int, str]] = [
            ("limited", "/oai/v1/chat/completions", chat("gpt-5-mini"), 200, ""),
            ("limited", "/oai/v1/chat/completions", chat("gpt-5"), 403, key_refusal),
            ("limited", "/oai/v1/responses", {"model": "gpt-5", "input": "hi"}, 403, key_refusal),
            ("limited", "/other/v1/chat/completions", chat("gpt-5-mini"), 403, user_refusal),
            # A model named like a provider-scoped pattern matches it literally.
            ("limited", "/other/v1/chat/completions", chat("oai/gpt-5-mini"), 200, ""),
            ("limited", "/ant/v1/messages", claude, 403, key_refusal),
            ("free", "/ant/v1/messages", claude, 200, ""),
            ("free", "/oai/v1/chat/completions", chat("gpt-5"), 200, ""),
            ("free", "/other/v1/chat/completions", chat("gpt-5"), 403, user_refusal),
        ]
        for who, path, body, expected, fragment in cases:
            before = len(s.fake.generation_requests())
            status, _, answer = await post(s, path, body, free if who == "free" else None)
            assert status == expected, (who, path, body, answer)
            if expected == 200:
                assert len(s.fake.generation_requests()) == before + 1
                continue
            assert len(s.fake.generation_requests()) == before
            error = answer["error"]
            assert fragment in error["message"], (who, path, error)
            assert (
                f"Model {body['model']!r} on provider {path.split('/')[1]!r}" in (error["message"])
            )
            if path.startswith("/ant/"):
                assert error["type"] == "permission_error"
            else:
                assert error["code"] == "model_not_allowed"
        types = await s.error_types()
        assert types.count("model_not_allowed") == 5


# ---------------------------------------------------------------------------------------
# The soft threshold
# ---------------------------------------------------------------------------------------


async def test_the_soft_threshold_warns_once_per_subject_and_period_and_shows_in_metrics(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aibridge.governance.limiter")
    clock = FakeClock(now=real_now())
    usage = Usage(input_tokens=1000, output_tokens=500)
    overrides = {"default_budget": "0.1/day", "budget_soft_fraction": 0.5}
    async with stack(
        sqlite_url,
        tmp_path,
        settings_overrides=overrides,
        clock=clock,
        default=Scenario.text_reply(usage=usage),
    ) as s:
        await s.add_provider("oai", "openai")
        # $0.025 a call: the user's $0.10 is half spent after two, the key's $0.08 too.
        s.services.prices.replace(
            PriceTable([Price("openai", "gpt-5", 10_000_000, 30_000_000, 0, 0, "2025-01-01")])
        )
        key = await key_id(s)
        budget = {"budget": {"amount_usd": 0.08, "period": "day"}}
        await admin(s, "PATCH", f"/api/v1/users/dev/keys/{key}", {"limits": budget})

        def warnings() -> list[str]:
            return [
                r.getMessage()
                for r in caplog.records
                if r.getMessage().startswith("budget soft threshold crossed")
            ]

        assert (await post(s, "/oai/v1/chat/completions", chat("gpt-5")))[0] == 200
        assert warnings() == []
        for _ in range(2):
            assert (await post(s, "/oai/v1/chat/completions", chat("gpt-5")))[0] == 200
        assert sorted(warnings()) == [
            f"budget soft threshold crossed: key {key} has spent $0.05 of $0.08 this period (62%)",
            "budget soft threshold crossed: user dev has spent $0.05 of $0.1 this period (50%)",
        ]
        text = await metrics_text(s)
        assert 'aibridge_budget_soft_exceeded_total{scope="user"} 1.0' in text
        assert 'aibridge_budget_soft_exceeded_total{scope="key"} 1.0' in text
        assert 'aibridge_budget_remaining_ratio{subject="user dev"} 0.25' in text
        assert f'aibridge_budget_remaining_ratio{{subject="key {key}"}} 0.0625' in text

        # A new period: spend starts over, and crossing again warns again.
        midnight = datetime.combine(clock.now().date() + timedelta(days=1), datetime.min.time())
        clock.advance((midnight.replace(tzinfo=UTC) - clock.now()).total_seconds())
        for _ in range(2):
            assert (await post(s, "/oai/v1/chat/completions", chat("gpt-5")))[0] == 200
        assert len(warnings()) == 4
        text = await metrics_text(s)
        assert 'aibridge_budget_soft_exceeded_total{scope="user"} 2.0' in text
        assert 'aibridge_budget_soft_exceeded_total{scope="key"} 2.0' in text
