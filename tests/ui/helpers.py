"""Steps the dashboard browser tests share."""

from __future__ import annotations

from playwright.async_api import Page, expect


async def sign_in(page: Page, key: str, path: str = "/ui/") -> None:
    """Open ``path``, sign in with ``key`` and wait for the navigation to appear."""
    await page.goto(path)
    await page.get_by_label("Gateway key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
