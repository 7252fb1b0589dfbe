"""The Sessions, Providers and Users pages at phone width (390 px): everything reachable
without the page scrolling sideways (wide tables scroll inside their own region)."""

from __future__ import annotations

from playwright.async_api import Page, expect

from aibridge.testing.stack import Stack
from tests.ui.helpers import sign_in
from tests.ui.pages_support import add_claude_provider, api, record_claude_session

PHONE = {"width": 390, "height": 844}


async def _page_width(page: Page) -> int:
    width: int = await page.evaluate("document.documentElement.scrollWidth")
    return width


async def test_pages_fit_a_phone_screen(page: Page, ui_stack: Stack) -> None:
    await add_claude_provider(ui_stack)
    await record_claude_session(ui_stack, "cc-phone", ui_stack.user_token)
    status, listing = await api(ui_stack, "GET", "/api/v1/sessions")
    assert status == 200, listing
    session_id = listing["sessions"][0]["id"]
    await page.set_viewport_size(PHONE)
    await sign_in(page, ui_stack.admin_token, f"/ui/sessions/{session_id}")
    await expect(page.locator("li.turn")).to_have_count(3)
    assert await _page_width(page) <= PHONE["width"]
    for path, ready in (
        ("/ui/sessions", f'tr[data-session="{session_id}"]'),
        ("/ui/providers", 'tr[data-provider="claude"]'),
        ("/ui/users/dev", "tr[data-key]"),
    ):
        await page.goto(path)
        await expect(page.locator(ready)).to_have_count(1)
        assert await _page_width(page) <= PHONE["width"], path
