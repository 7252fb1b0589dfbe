"""The Providers page shows the live status of ``GET /api/v1/providers/status`` in a real
browser: a key cooling after an upstream 429 (with why and for how long), a disabled
provider, a provider that failed to build with its reason, and the configuration version
this replica has applied in the replicas table."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from playwright.async_api import Page, expect

from aibridge.fakellm import Scenario
from aibridge.secrets_mask import mask_secret
from aibridge.store.replicas import ReplicaRow, upsert
from aibridge.testing.stack import TIMEOUT, Stack
from tests.ui.helpers import sign_in
from tests.ui.pages_support import BROKEN_KEY, add_broken_provider, api

KEY_A = "sk-pool-primary-aaaa1111"
KEY_B = "sk-pool-fallback-bbbb2222"


async def test_live_status_keys_errors_disabled_and_replicas(page: Page, ui_stack: Stack) -> None:
    st = ui_stack
    await st.add_provider("pool", "openai", keys=[KEY_A, KEY_B])
    await st.add_provider("off", "openai", enabled=False)
    await add_broken_provider(st)

    # The primary key is rate-limited for 30 s; the request fails over to the second key.
    st.fake.enqueue(Scenario.http_error(429, retry_after="30"), Scenario.text_reply("hi"))
    await chat_on(st, "pool")

    await sign_in(page, st.admin_token, "/ui/providers")
    pool = page.locator('tr[data-provider="pool"]')
    await expect(pool.locator('td[data-col="status"]')).to_have_text("enabled")
    keys = pool.locator('td[data-col="keys"] li')
    await expect(keys).to_have_count(2)
    await expect(keys.nth(0)).to_contain_text(mask_secret(KEY_A))
    await expect(keys.nth(0)).to_contain_text("primary")
    await expect(keys.nth(0)).to_contain_text("cooling")
    await expect(keys.nth(0)).to_contain_text("rate limited (upstream 429)")
    await expect(keys.nth(1)).to_contain_text(mask_secret(KEY_B))
    await expect(keys.nth(1)).to_contain_text("valid")
    await expect(keys.nth(1)).not_to_contain_text("cooling")
    seconds = await keys.nth(0).locator(".badge").inner_text()
    assert seconds.startswith("cooling ") and 0 < int(seconds.split()[1]) <= 30, seconds

    _, status = await api(st, "GET", "/api/v1/providers/status")
    assert {p["name"]: p["status"] for p in status["providers"]} == {
        "broken": "error",
        "off": "disabled",
        "openai": "ok",
        "pool": "ok",
    }
    off = page.locator('tr[data-provider="off"] td[data-col="status"]')
    await expect(off).to_have_text("disabled")
    broken = page.locator('tr[data-provider="broken"] td[data-col="status"]')
    reason = next(p["reason"] for p in status["providers"] if p["name"] == "broken")
    assert reason and "duplicate" in reason
    await expect(broken).to_contain_text("error")
    await expect(broken).to_contain_text(reason)
    assert BROKEN_KEY not in await page.content() and KEY_A not in await page.content()

    # This replica's row carries the applied version (the heartbeat follows each reload,
    # and the page polls, so wait for it rather than read once).
    me = page.locator(f'tr[data-replica="{status["replica"]}"]')
    current = str(status["current_config_version"])
    await expect(me.locator('td[data-col="version"]')).to_have_text(current)
    await expect(me.locator('td[data-col="state"]')).to_have_text("up to date")
    await expect(me.locator('td[data-col="replica"]')).to_contain_text("(this one)")
    await expect(page.locator("p.config-version")).to_contain_text(
        f"Current configuration version: {current}."
    )

    # Another replica one version behind is catching up (not an error); one that stopped
    # heartbeating is stale.
    now = datetime.now(UTC)
    behind = status["current_config_version"] - 1
    async with asyncio.timeout(TIMEOUT), st.services.sessions() as s, s.begin():
        await upsert(s, ReplicaRow("other:1", 4242, "node-b", behind, now, now))
        old = now - timedelta(hours=1)
        await upsert(s, ReplicaRow("old:1", 77, "node-c", behind, old, old))
    other = page.locator('tr[data-replica="other:1"]')
    await expect(other.locator('td[data-col="state"]')).to_have_text("catching up")
    await expect(other.locator('td[data-col="version"]')).to_have_text(str(behind))
    await expect(other.locator('td[data-col="host"]')).to_have_text("node-b")
    await expect(other.locator('td[data-col="pid"]')).to_have_text("4242")
    old_row = page.locator('tr[data-replica="old:1"] td[data-col="state"]')
    await expect(old_row).to_contain_text("stale")


async def chat_on(st: Stack, provider: str) -> None:
    """One Chat Completions request through ``provider`` as the member."""
    async with asyncio.timeout(TIMEOUT):
        resp = await st.client.post(
            f"/{provider}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]},
            headers={"Authorization": f"Bearer {st.user_token}"},
        )
        assert resp.status == 200, await resp.text()
        await resp.read()
