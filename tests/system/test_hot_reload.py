"""Hot reload end to end on one gateway process, driven only through the HTTP API.

Two fake upstreams, A and B, answer with different text, so every data-plane response
says which upstream served it; the fakes' request logs say which credential arrived.
After each admin write the test waits (bounded) for the reloader to install a snapshot
with the change, then checks what the data plane does. A second provider on its own
credential is exercised after every step and must keep working on upstream A.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select

from aibridge.fakellm import FakeLLM, Scenario
from aibridge.providers.base import DisabledProvider, Provider
from aibridge.store.models import Interception
from aibridge.testing.stack import TIMEOUT, Stack, stack

TEXT_A = "served by upstream A"
TEXT_B = "served by upstream B"
PRIMARY_KEY = "sk-primary-original-0001"
ROTATED_KEY = "sk-primary-rotated-0002"
SECONDARY_KEY = "sk-secondary-anthropic-0001"


@asynccontextmanager
async def two_upstreams(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[Stack, FakeLLM]]:
    """The stack on upstream A plus a second fake upstream B."""
    async with (
        stack(db_url, tmp_path, default=Scenario.text_reply(TEXT_A)) as s,
        FakeLLM(default=Scenario.text_reply(TEXT_B)).serve(host="127.0.0.1", port=0) as fake_b,
    ):
        yield s, fake_b


async def chat(s: Stack, provider: str) -> tuple[int, Any]:
    """One blocking Chat Completions call through the gateway: (status, JSON body)."""
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.post(
            f"/{provider}/v1/chat/completions",
            json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {s.user_token}"},
        )
        return resp.status, await resp.json()


def chat_text(body: Any) -> str:
    """The assistant text of a Chat Completions body."""
    return str(body["choices"][0]["message"]["content"])


async def readyz(s: Stack) -> dict[str, Any]:
    """``GET /readyz`` (must be 200)."""
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.get("/readyz")
        body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    return body


async def patch(s: Stack, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """PATCH a provider through the admin API (must be 200)."""
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.patch(
            f"/api/v1/providers/{name}", json=body, headers=s.admin_headers()
        )
        result: dict[str, Any] = await resp.json()
    assert resp.status == 200, result
    return result


async def check_secondary(s: Stack) -> None:
    """The untouched Anthropic provider still answers from upstream A with its own key."""
    before = len(s.fake.requests)
    async with asyncio.timeout(TIMEOUT):
        resp = await s.client.post(
            "/secondary/v1/messages",
            json={
                "model": "claude-test",
                "max_tokens": 20,
                "messages": [{"role": "user", "content": "hi"}],
            },
            headers={"Authorization": f"Bearer {s.user_token}"},
        )
        body = await resp.json()
    assert resp.status == 200, body
    assert body["content"][0]["text"] == TEXT_A
    assert len(s.fake.requests) == before + 1
    seen = s.fake.requests[-1]
    assert seen.path == "/v1/messages"
    assert seen.credential() == SECONDARY_KEY


async def test_provider_crud_is_hot_reloaded(db_url: str, tmp_path: Path) -> None:
    async with two_upstreams(db_url, tmp_path) as (s, fake_b):
        await s.add_provider("secondary", "anthropic", keys=[SECONDARY_KEY])
        versions = [(await readyz(s))["config_version"]]

        # Create → upstream A.
        await s.add_provider("primary", "openai", keys=[PRIMARY_KEY])
        status, body = await chat(s, "primary")
        assert status == 200, body
        assert chat_text(body) == TEXT_A
        assert s.fake.requests[-1].credential() == PRIMARY_KEY
        ready = await readyz(s)
        versions.append(ready["config_version"])
        assert ready["providers"] == {
            "primary": {"type": "openai", "status": "enabled"},
            "secondary": {"type": "anthropic", "status": "enabled"},
        }
        await check_secondary(s)

        # PATCH base_url → upstream B.
        await patch(s, "primary", {"base_url": fake_b.openai_url})
        await s.wait_for_provider(
            "primary", lambda p: p is not None and p.record.base_url == fake_b.openai_url
        )
        a_before = len(s.fake.requests)
        status, body = await chat(s, "primary")
        assert status == 200, body
        assert chat_text(body) == TEXT_B
        assert fake_b.requests[-1].credential() == PRIMARY_KEY
        assert len(s.fake.requests) == a_before
        versions.append((await readyz(s))["config_version"])
        await check_secondary(s)

        # Disable → 503 in the provider's error shape, nothing reaches an upstream.
        await patch(s, "primary", {"enabled": False})
        await s.wait_for_provider("primary", lambda p: isinstance(p, DisabledProvider))
        b_before = len(fake_b.requests)
        status, body = await chat(s, "primary")
        assert status == 503, body
        assert "disabled" in body["error"]["message"]
        assert len(fake_b.requests) == b_before
        ready = await readyz(s)
        versions.append(ready["config_version"])
        assert ready["providers"]["primary"] == {"type": "openai", "status": "disabled"}
        assert ready["providers"]["secondary"] == {"type": "anthropic", "status": "enabled"}
        await check_secondary(s)

        # Re-enable → upstream B again.
        await patch(s, "primary", {"enabled": True})
        await s.wait_for_provider("primary", lambda p: isinstance(p, Provider))
        status, body = await chat(s, "primary")
        assert status == 200, body
        assert chat_text(body) == TEXT_B
        ready = await readyz(s)
        versions.append(ready["config_version"])
        assert ready["providers"]["primary"] == {"type": "openai", "status": "enabled"}
        await check_secondary(s)

        # Rotate keys (the complete new key set) → upstream sees only the new key.
        await patch(s, "primary", {"api_keys": [{"api_key": ROTATED_KEY}]})
        await s.wait_for_provider(
            "primary",
            lambda p: isinstance(p, Provider) and [k.secret for k in p.keys.keys] == [ROTATED_KEY],
        )
        status, body = await chat(s, "primary")
        assert status == 200, body
        assert chat_text(body) == TEXT_B
        assert fake_b.requests[-1].credential() == ROTATED_KEY
        versions.append((await readyz(s))["config_version"])
        await check_secondary(s)

        # Delete → 404, and it is gone from /readyz.
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.delete("/api/v1/providers/primary", headers=s.admin_headers())
        assert resp.status == 204
        await s.wait_for_provider("primary", lambda p: p is None)
        b_before = len(fake_b.requests)
        status, body = await chat(s, "primary")
        assert status == 404, body
        assert len(fake_b.requests) == b_before
        ready = await readyz(s)
        versions.append(ready["config_version"])
        assert ready["providers"] == {"secondary": {"type": "anthropic", "status": "enabled"}}
        assert "last_reload_error" not in ready
        await check_secondary(s)

        # Every write advanced the config version the data plane runs on.
        assert versions == sorted(versions) and len(set(versions)) == len(versions), versions
        # The secondary's credential never went anywhere but upstream A.
        assert all(r.credential() != SECONDARY_KEY for r in fake_b.requests)


async def test_stream_in_flight_on_old_config_completes_after_patch(
    db_url: str, tmp_path: Path
) -> None:
    async with two_upstreams(db_url, tmp_path) as (s, fake_b):
        await s.add_provider("primary", "openai", keys=[PRIMARY_KEY])
        release = asyncio.Event()
        stalled = Scenario.stall(release=release, text=TEXT_A, chunks=4, deltas_before=2)
        s.fake.enqueue(stalled)

        async def stream() -> tuple[int, str]:
            resp = await s.client.post(
                "/primary/v1/chat/completions",
                json={
                    "model": "gpt-test",
                    "stream": True,
                    "messages": [{"role": "user", "content": "hi"}],
                },
                headers={"Authorization": f"Bearer {s.user_token}"},
            )
            return resp.status, await resp.text()

        async with asyncio.timeout(TIMEOUT):
            in_flight = asyncio.create_task(stream())
            await stalled.stalled.wait()

            await patch(s, "primary", {"base_url": fake_b.openai_url})
            await s.wait_for_provider(
                "primary", lambda p: p is not None and p.record.base_url == fake_b.openai_url
            )
            # New requests already use the new configuration...
            status, body = await chat(s, "primary")
            assert status == 200, body
            assert chat_text(body) == TEXT_B
            assert not in_flight.done(), "the in-flight stream was cut by the reload"

            # ...while the old stream finishes normally on upstream A.
            release.set()
            status, text = await in_flight
        assert status == 200, text
        assert text.rstrip().endswith("data: [DONE]"), text[-300:]
        pieces = stalled.text_pieces()
        for piece in pieces:
            assert piece.replace('"', '\\"') in text
        assert not any(r.disconnected for r in s.fake.requests)
        # Both interceptions (the old stream and the request on B) were recorded cleanly.
        await s.flush_records()
        async with s.services.sessions() as session:
            rows = (await session.execute(select(Interception))).scalars().all()
        assert len(rows) == 2
        assert all(r.ended_at is not None and r.error_type is None for r in rows), [
            (r.ended_at, r.error_type) for r in rows
        ]
