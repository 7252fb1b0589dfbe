"""The Users page in a real browser: create a user, issue a key (shown once, and it
works), set a budget (and see the API's message for a bad one), suspend (the key stops
working) and reactivate, revoke a key after an in-page confirmation."""

from __future__ import annotations

import re

from playwright.async_api import BrowserContext, Page, expect

from aibridge.testing.stack import Stack
from tests.ui.helpers import sign_in
from tests.ui.pages_support import api


async def test_admin_manages_a_user_and_their_keys(
    page: Page, context: BrowserContext, ui_stack: Stack
) -> None:
    await sign_in(page, ui_stack.admin_token, "/ui/users")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Users")
    await expect(page.locator('tr[data-user="dev"]')).to_have_count(1)

    # A bad username: the API's message in the alert.
    await page.get_by_label("Username").fill("Carol Smith")
    await page.get_by_role("button", name="Create user").click()
    await expect(page.locator("#create-user-alert")).to_contain_text("username:")

    await page.get_by_label("Username").fill("carol")
    await page.get_by_label("Role").select_option("member")
    await page.get_by_role("button", name="Create user").click()
    await expect(page).to_have_url(f"{ui_stack.base}/ui/users/carol")
    await expect(page.get_by_role("heading", level=1)).to_have_text("carol")

    # Issue a key: shown once, with a Copy button; it authenticates as carol.
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    await page.get_by_label("Key name").fill("ci")
    await page.get_by_role("button", name="Issue key").click()
    secret = page.get_by_label("New gateway key")
    await expect(secret).to_have_value(re.compile(r"^aib-"))
    token = await secret.input_value()
    status, me = await api(ui_stack, "GET", "/api/v1/me", token=token)
    assert status == 200 and me["username"] == "carol"
    await page.get_by_role("button", name="Copy").click()
    await expect(page.locator(".copy-status")).not_to_be_empty()
    copied = await page.evaluate("navigator.clipboard.readText().catch(() => null)")
    if copied is not None:  # the clipboard API worked; else the fallback selected the text
        assert copied == token
    key_row = page.locator(f'tr[data-key="{me["key_id"]}"]')
    await expect(key_row.locator('td[data-col="status"]')).to_have_text("active")

    # A bad budget: the API's message next to the limits form; nothing saved.
    await page.get_by_label("Budget (USD)").fill("-5")
    await page.get_by_role("button", name="Save limits").click()
    await expect(page.locator("#limits-alert")).to_contain_text("limits.budget.amount_usd")
    # A good one is saved and shown.
    await page.get_by_label("Budget (USD)").fill("25")
    await page.get_by_label("Budget period").select_option("week")
    await page.get_by_label("Requests per minute").fill("120")
    await page.get_by_role("button", name="Save limits").click()
    await expect(page.get_by_role("status").filter(has_text="Limits saved.")).to_be_visible()
    await expect(page.locator('[data-field="budget"]')).to_have_text("$25.00 per week")
    status, carol = await api(ui_stack, "GET", "/api/v1/users/carol")
    assert carol["limits"]["budget"] == {"amount_usd": 25, "period": "week"}
    assert carol["limits"]["requests_per_minute"] == 120
    # The token was shown once: the re-rendered page no longer has it.
    await expect(page.get_by_label("New gateway key")).to_have_count(0)
    assert token not in await page.content()

    # Suspend: the key stops working; reactivate: it works again.
    await page.get_by_role("button", name="Suspend").click()
    await expect(page.locator('[data-field="status"]')).to_have_text("suspended")
    status, _ = await api(ui_stack, "GET", "/api/v1/me", token=token)
    assert status == 401
    await page.get_by_role("button", name="Reactivate").click()
    await expect(page.locator('[data-field="status"]')).to_have_text("active")
    status, _ = await api(ui_stack, "GET", "/api/v1/me", token=token)
    assert status == 200

    # Revoke asks first, then the key is revoked for good.
    key_row = page.locator(f'tr[data-key="{me["key_id"]}"]')
    await key_row.get_by_role("button", name="Revoke").click()
    await key_row.get_by_role("button", name="Confirm revoke").click()
    await expect(key_row.locator('td[data-col="status"]')).to_have_text("revoked")
    status, _ = await api(ui_stack, "GET", "/api/v1/me", token=token)
    assert status == 401

    # The list shows the new user with budget and status.
    await page.get_by_role("link", name="Users", exact=True).first.click()
    row = page.locator('tr[data-user="carol"]')
    await expect(row.locator('td[data-col="budget"]')).to_have_text("$25.00 per week")
    await expect(row.locator('td[data-col="status"]')).to_have_text("active")
