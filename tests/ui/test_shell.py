"""The shell in a real browser: sign-in, navigation by role, admin pages refused to
members (also by URL), sign-out ending access."""

from __future__ import annotations

from playwright.async_api import BrowserContext, Page, expect

from aibridge.testing.stack import Stack

from .helpers import sign_in

NAV_ALL = ["Usage", "Sessions", "Interceptions", "Providers", "Users"]


async def _nav_names(page: Page) -> list[str]:
    nav = page.get_by_role("navigation", name="Main")
    return [t.strip() for t in await nav.get_by_role("link").all_inner_texts()]


async def test_wrong_key_shows_the_api_message(page: Page, ui_stack: Stack) -> None:
    await page.goto("/ui/")
    await page.get_by_label("Gateway key").fill("aib-0000-wrong")
    await page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("Unauthorized.")
    await expect(page.get_by_role("button", name="Sign out")).to_have_count(0)


async def test_member_sees_no_admin_pages_even_by_url(page: Page, ui_stack: Stack) -> None:
    await sign_in(page, ui_stack.user_token)
    assert await _nav_names(page) == ["Usage", "Sessions", "Interceptions"]
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    for path, title in (("/ui/providers", "Providers"), ("/ui/users", "Users")):
        await page.goto(path)
        await expect(page.get_by_role("heading", level=1)).to_have_text(title)
        await expect(page.get_by_role("alert")).to_have_text("This page is for admins.")
        await expect(page.locator("main table")).to_have_count(0)
    # The page asked the API for nothing but who is signed in.
    api_calls = {u.split("?")[0].removeprefix(ui_stack.base) for u in requests if "/api/" in u}
    assert api_calls == {"/api/v1/me"}


async def test_admin_sees_every_page_and_navigates_without_reload(
    page: Page, ui_stack: Stack
) -> None:
    await sign_in(page, ui_stack.admin_token)
    assert await _nav_names(page) == NAV_ALL
    await page.evaluate("window.__sameDocument = true")
    await page.get_by_role("link", name="Interceptions").click()
    await expect(page).to_have_url(f"{ui_stack.base}/ui/interceptions")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Interceptions")
    await expect(page.get_by_role("link", name="Interceptions")).to_have_attribute(
        "aria-current", "page"
    )
    await page.go_back()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Usage")
    assert await page.evaluate("window.__sameDocument") is True


async def test_deep_link_survives_sign_in_and_reload(page: Page, ui_stack: Stack) -> None:
    await sign_in(page, ui_stack.user_token, "/ui/interceptions")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Interceptions")
    await page.reload()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Interceptions")


async def test_sign_out_ends_access(page: Page, context: BrowserContext, ui_stack: Stack) -> None:
    await sign_in(page, ui_stack.user_token)
    names = {c["name"] for c in await context.cookies()}
    assert {"aibridge_session", "aibridge_csrf"} <= names
    session = next(c for c in await context.cookies() if c["name"] == "aibridge_session")
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    # Page scripts cannot read the key.
    assert "aibridge_session" not in await page.evaluate("document.cookie")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_label("Gateway key")).to_be_visible()
    assert {c["name"] for c in await context.cookies()} & {
        "aibridge_session",
        "aibridge_csrf",
    } == set()
    resp = await page.request.get("/api/v1/me")
    assert resp.status == 401
    await page.goto("/ui/interceptions")
    await expect(page.get_by_label("Gateway key")).to_be_visible()
    await expect(page.get_by_role("navigation", name="Main")).to_have_count(0)


async def test_keyboard_only_sign_in_and_navigation(page: Page, ui_stack: Stack) -> None:
    await page.goto("/ui/")
    # The key field has focus: type and press Enter.
    await expect(page.get_by_label("Gateway key")).to_be_focused()
    await page.keyboard.type(ui_stack.user_token)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    link = page.get_by_role("link", name="Interceptions")
    for _ in range(10):
        await page.keyboard.press("Tab")
        if await link.evaluate("el => el === document.activeElement"):
            break
    await expect(link).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Interceptions")
