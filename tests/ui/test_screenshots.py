"""Screenshots of every dashboard page at 1280x800 with realistic data, for the README:
sign-in, usage, sessions, one session, interceptions, one interception, providers, users
and one user.

Written to ``$AIBRIDGE_SCREENSHOTS`` (``scripts/screenshots`` sets docs/screenshots) or, in
a normal test run, to the test's temporary folder (never the checked-in images).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from playwright.async_api import Page, expect

from aibridge.fakellm import Scenario
from aibridge.testing.stack import TIMEOUT, Stack

from .helpers import chat, sign_in
from .pages_support import (
    add_broken_provider,
    add_claude_provider,
    api,
    record_claude_session,
    save_screenshot,
)

PAGES = (
    "sign-in",
    "usage",
    "sessions",
    "session",
    "interceptions",
    "interception",
    "providers",
    "users",
    "user",
)
"""Every page the README links, in the order it shows them."""
TAKEN: list[str] = []
"""Names :func:`shot` saved, in order."""


async def shot(page: Page, name: str, tmp_path: Path) -> None:
    """Save ``name``.png and check it is a real picture of the page, not an empty frame."""
    path = await save_screenshot(page, name, tmp_path)
    size = (await asyncio.to_thread(path.stat)).st_size
    assert size > 10_000, path
    TAKEN.append(name)


async def new_member(st: Stack, username: str, budget_usd: int) -> str:
    """A member with a monthly budget; their new gateway key."""
    status, body = await api(
        st,
        "POST",
        "/api/v1/users",
        json={"username": username, "role": "member"},
    )
    assert status == 201, body
    status, body = await api(
        st,
        "PATCH",
        f"/api/v1/users/{username}",
        json={"limits": {"budget": {"amount_usd": budget_usd, "period": "month"}}},
    )
    assert status == 200, body
    status, body = await api(st, "POST", f"/api/v1/users/{username}/keys", json={"name": "laptop"})
    assert status == 201, body
    return str(body["token"])


async def seed(st: Stack) -> dict[str, Any]:
    """Providers in every state, three people, a Claude Code session and a failed request.
    Returns the ids the pages are opened on (session, interception) and the number of
    interceptions."""
    await add_claude_provider(st)
    await st.add_provider(
        "openai-backup", "openai", keys=["sk-backup-primary-0001", "sk-backup-second-0002"]
    )
    await st.add_provider("legacy-azure", "azure", enabled=False, settings={"api_version": "x"})
    await add_broken_provider(st)
    alice = await new_member(st, "alice", 50)
    await new_member(st, "bob", 20)

    await record_claude_session(st, "3f9c2e1a-claude-code", st.user_token)
    for token, prompt, model in (
        (alice, "Refactor the retry loop in client.py to use exponential backoff", "gpt-4o"),
        (alice, "Why does test_upload fail on CI but not locally?", "gpt-4o-mini"),
        (st.user_token, "Write a migration that adds an index on (user_id, created_at)", "gpt-4o"),
        (st.admin_token, "Summarise yesterday's incident report", "gpt-4o"),
    ):
        await chat(st, token, prompt, model=model)
    # The backup's primary key is rate-limited: the request fails over to the second key.
    st.fake.enqueue(Scenario.http_error(429, retry_after="600"), Scenario.text_reply("Done."))
    async with asyncio.timeout(TIMEOUT):
        resp = await st.client.post(
            "/openai-backup/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Draft a reply"}]},
            headers={"Authorization": f"Bearer {alice}"},
        )
        assert resp.status == 200, await resp.text()
    # And one request the upstream refused, so the tables show an error.
    st.fake.enqueue(Scenario.http_error(400, message="max_tokens is too large"))
    async with asyncio.timeout(TIMEOUT):
        resp = await st.client.post(
            "/openai/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Long essay"}]},
            headers={"Authorization": f"Bearer {st.user_token}"},
        )
        assert resp.status == 400, await resp.text()
    await st.flush_records()
    status, body = await api(st, "PATCH", "/api/v1/users/admin", json={
        "limits": {"budget": {"amount_usd": 25, "period": "month"}}})  # fmt: skip
    assert status == 200, body

    status, sessions = await api(st, "GET", "/api/v1/sessions", json=None)
    assert status == 200, sessions
    claude = next(s for s in sessions["sessions"] if s["client_session_id"])
    status, detail = await api(st, "GET", f"/api/v1/sessions/{claude['id']}")
    assert status == 200, detail
    # The turn with parallel tool calls: the most telling single record.
    status, listed = await api(st, "GET", "/api/v1/interceptions")
    assert status == 200, listed
    return {
        "session": claude["id"],
        "interception": detail["interceptions"][1]["id"],
        "count": len(listed["interceptions"]),
    }


async def test_screenshots_of_every_page(page: Page, ui_stack: Stack, tmp_path: Path) -> None:
    st = ui_stack
    ids = await seed(st)
    await page.set_viewport_size({"width": 1280, "height": 800})

    await page.goto("/ui/")
    await expect(page.get_by_label("Gateway key")).to_be_visible()
    await shot(page, "sign-in", tmp_path)
    await sign_in(page, st.admin_token)
    await expect(page.locator("main svg.chart")).to_be_visible()
    await expect(page.locator("[data-budget='remaining']")).to_be_visible()
    await shot(page, "usage", tmp_path)

    await page.get_by_role("link", name="Sessions").click()
    await expect(page.locator(f'tr[data-session="{ids["session"]}"]')).to_be_visible()
    await shot(page, "sessions", tmp_path)
    await page.goto(f"/ui/sessions/{ids['session']}")
    await expect(page.locator("li.turn")).to_have_count(3)
    await shot(page, "session", tmp_path)

    await page.get_by_role("link", name="Interceptions").click()
    await expect(page.locator("main tbody tr[data-id]")).to_have_count(ids["count"])
    await shot(page, "interceptions", tmp_path)
    await page.goto(f"/ui/interceptions/{ids['interception']}")
    await expect(page.locator('pre[data-role="prompt"]')).to_be_visible()
    await shot(page, "interception", tmp_path)

    await page.get_by_role("link", name="Providers").click()
    await expect(page.locator('tr[data-provider="broken"]')).to_contain_text("error")
    await expect(page.locator('tr[data-provider="openai-backup"]')).to_contain_text("cooling")
    await shot(page, "providers", tmp_path)

    await page.get_by_role("link", name="Users").click()
    await expect(page.locator('tr[data-user="alice"]')).to_be_visible()
    await shot(page, "users", tmp_path)
    await page.goto("/ui/users/alice")
    await expect(page.get_by_role("heading", level=1)).to_have_text("alice")
    await expect(page.locator('[data-field="budget"]')).to_have_text("$50.00 per month")
    await shot(page, "user", tmp_path)

    assert TAKEN[-len(PAGES) :] == list(PAGES)
