"""The real Codex CLI (``codex exec``) through the gateway over the Responses WebSocket.

Codex tries a WebSocket upgrade on ``{base_url}/responses`` first when its provider says
``supports_websockets``, and falls back to HTTP for the session when the upgrade fails.
Through the gateway it must complete its task on the socket alone: one upgrade reaches
the fake upstream, no HTTP ``POST /v1/responses`` does, and every ``response.create`` is
an interception with the usage of its ``response.completed``.

Install Codex with ``npm install -g --prefix /tmp/agents @openai/codex@0.171.0`` (or put it
on PATH, or point ``AIBRIDGE_AGENTS_BIN`` at its ``bin`` folder); the test skips without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aibridge.fakellm import Scenario, Usage
from aibridge.testing.agents import find_agent, install_hint, run_agent
from aibridge.testing.recorded import interceptions, recorded
from aibridge.testing.stack import stack

ANSWER = "The build is green: 42 tests passed."
TURN_USAGE = Usage(input_tokens=321, output_tokens=17, cache_read_tokens=2048)


def codex_binary() -> str:
    """The Codex binary's path, or a skip saying how to install it."""
    found = find_agent("codex")
    if found is None:
        pytest.skip("codex is not installed: " + install_hint("@openai/codex@0.171.0"))
    return found


async def test_codex_completes_a_task_over_the_websocket_without_http_fallback(
    db_url: str, tmp_path: Path
) -> None:
    codex = codex_binary()
    async with stack(db_url, tmp_path / "gw") as s:
        await s.add_provider("openai", "openai")
        s.fake.default = Scenario.text_reply(ANSWER, usage=TURN_USAGE)
        home = tmp_path / "home"
        (home / ".codex").mkdir(parents=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "TERM": "dumb",
            "NO_COLOR": "1",
            "CODEX_HOME": str(home / ".codex"),
            "GATEWAY_KEY": s.user_token,
        }
        provider = (
            'model_providers.gw={name="gateway",base_url="'
            f'{s.base}/openai/v1",env_key="GATEWAY_KEY",wire_api="responses",'
            "supports_websockets=true}"
        )
        code, out, err = await run_agent(
            [
                codex,
                "exec",
                "--skip-git-repo-check",
                "-c",
                provider,
                "-c",
                "model_provider=gw",
                "-m",
                "gpt-4.1",
                "Did the build pass? Answer in one sentence.",
            ],
            env,
            home,
        )
        assert code == 0, f"codex failed ({code}): {err[-2000:]}"
        assert ANSWER in out

        # The socket alone: one upgrade upstream, no HTTP Responses request at all.
        seen = [(r.method, r.path, r.status) for r in s.fake.requests]
        assert [x for x in seen if x[0] == "GET"] == [("GET", "/v1/responses", 101)]
        assert [x for x in seen if x[0] == "POST"] == []
        creates = [r for r in s.fake.requests if r.method == "WS"]
        assert creates and all(r.json["type"] == "response.create" for r in creates)
        assert s.fake.websockets_opened == 1
        assert s.fake.requests[0].headers["Authorization"] != f"Bearer {s.user_token}"

        # One interception per response.create, usage from its response.completed.
        await s.flush_records()
        rows = [await recorded(s.services, r.id) for r in await interceptions(s.services)]
        assert len(rows) == len(creates)
        assert {r.interception.error_type for r in rows} == {None}
        assert {r.interception.client for r in rows} == {"Codex"}
        usages = [
            [(u.input_tokens, u.output_tokens, u.cache_read_input_tokens) for u in r.token_usages]
            for r in rows
        ]
        warmups = [r for r in creates if r.json.get("generate") is False]
        expected = [
            [(0, 0, 0)] if r.json.get("generate") is False else [(321, 17, 2048)] for r in creates
        ]
        assert usages == expected
        assert len(creates) - len(warmups) == 1
