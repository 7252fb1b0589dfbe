"""Screenshots of each dashboard page at 1280x800, for the README.

Written to ``$AIBRIDGE_SCREENSHOTS`` (``scripts/screenshots`` sets docs/screenshots) or, in
a normal test run, to the test's temporary folder. Other pages add their shot here.
"""

from __future__ import annotations

import os
from pathlib import Path

from playwright.async_api import Page, expect

from aibridge.testing.stack import Stack

from .helpers import chat, sign_in

SCREENSHOTS_ENV = "AIBRIDGE_SCREENSHOTS"


def _folder(tmp_path: Path) -> Path:
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def _shot(page: Page, folder: Path, name: str) -> None:
    path = folder / f"{name}.png"
    await page.screenshot(path=str(path), full_page=False)
    # A real picture of the page, not an empty frame.
    assert path.stat().st_size > 10_000, path


async def test_screenshots_of_each_page(page: Page, ui_stack: Stack, tmp_path: Path) -> None:
    st = ui_stack
    folder = _folder(tmp_path)
    prompts = [
        "Refactor the retry loop in client.py to use exponential backoff",
        "Why does test_upload fail on CI but not locally?",
        "Write a migration that adds an index on (user_id, created_at)",
    ]
    for prompt in prompts:
        await chat(st, st.user_token, prompt)
    await chat(st, st.admin_token, "Summarise yesterday's incident report", model="gpt-4o")
    # A budget, so the Usage page shows what is left of it.
    resp = await st.client.patch(
        "/api/v1/users/admin",
        json={"limits": {"budget": {"amount_usd": 25, "period": "month"}}},
        headers=st.admin_headers(),
    )
    assert resp.status == 200, await resp.text()
    await page.goto("/ui/")
    await _shot(page, folder, "sign-in")
    await sign_in(page, st.admin_token)
    await expect(page.locator("main svg.chart")).to_be_visible()
    await _shot(page, folder, "usage")
    await page.get_by_role("link", name="Interceptions").click()
    await expect(page.locator("main tbody tr[data-id]")).to_have_count(4)
    await _shot(page, folder, "interceptions")
    probe = await page.request.get("/api/v1/interceptions?limit=1")
    newest = (await probe.json())["interceptions"][0]["id"]
    if (await page.request.get(f"/api/v1/interceptions/{newest}")).status == 200:
        await page.goto(f"/ui/interceptions/{newest}")
        await expect(page.locator('pre[data-role="prompt"]')).to_be_visible()
        await _shot(page, folder, "interception")
