"""The Providers page in a real browser: the API's validation message next to the form,
creating a provider, disabling it and seeing its status change, deleting it after an
in-page confirmation; upstream keys never shown unmasked."""

from __future__ import annotations

from playwright.async_api import Page, expect

from aibridge.testing.stack import Stack
from tests.ui.helpers import sign_in
from tests.ui.pages_support import api

SECRET = "sk-team-b-secret-4242"


async def test_admin_creates_disables_and_deletes_a_provider(page: Page, ui_stack: Stack) -> None:
    await sign_in(page, ui_stack.admin_token, "/ui/providers")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Providers")
    await expect(page.locator('tr[data-provider="openai"] td[data-col="status"]')).to_contain_text(
        "enabled"
    )

    # An invalid name: the API's own message, next to the form.
    bad = {
        "name": "Team B!",
        "type": "openai",
        "base_url": ui_stack.fake.url + "/v1",
        "api_keys": [SECRET],
    }
    status, refused = await api(ui_stack, "POST", "/api/v1/providers", json=bad)
    assert status == 400
    name_problem = next(v["detail"] for v in refused["validations"] if v["field"] == "name")
    form = page.locator("form", has=page.get_by_role("button", name="Create provider"))
    await form.get_by_label("Name", exact=True).fill(bad["name"])
    await form.get_by_label("Type").select_option("openai")
    await form.get_by_label("Base URL").fill(bad["base_url"])
    await form.get_by_label("API key").fill(SECRET)
    await form.get_by_role("button", name="Create provider").click()
    alert = page.locator("#provider-form-alert")
    await expect(alert).to_have_attribute("role", "alert")
    await expect(alert).to_contain_text(refused["message"])
    await expect(alert).to_contain_text(f"name: {name_problem}")
    await expect(page.locator("tr[data-provider]")).to_have_count(1)

    # A valid one appears, enabled, with the key masked as the API renders it.
    await form.get_by_label("Name", exact=True).fill("team-b")
    await form.get_by_role("button", name="Create provider").click()
    row = page.locator('tr[data-provider="team-b"]')
    await expect(row.locator('td[data-col="status"]')).to_contain_text("enabled")
    await expect(page.get_by_role("status")).to_contain_text("Created team-b.")
    status, created = await api(ui_stack, "GET", "/api/v1/providers/team-b")
    assert status == 200 and created["enabled"] is True
    masked = created["api_keys"][0]["masked"]
    await expect(row.locator('td[data-col="keys"]')).to_contain_text(masked)
    assert SECRET not in await page.content()
    assert await page.get_by_label("API key").input_value() == ""

    # Disable: the status changes, here and in the API.
    await row.get_by_role("button", name="Disable team-b").click()
    await expect(row.locator('td[data-col="status"]')).to_contain_text("disabled")
    await expect(row.get_by_role("button", name="Enable team-b")).to_be_visible()
    status, disabled = await api(ui_stack, "GET", "/api/v1/providers/team-b")
    assert status == 200 and disabled["enabled"] is False

    # Edit: the form is filled from the API, the secret field stays empty.
    await row.get_by_role("button", name="Edit team-b").click()
    await expect(page.get_by_role("heading", name="Edit provider team-b")).to_be_visible()
    edit = page.locator("form", has=page.get_by_role("button", name="Save changes"))
    await expect(edit.get_by_label("Name", exact=True)).to_have_value("team-b")
    await expect(edit.get_by_label("Name", exact=True)).to_be_disabled()
    await expect(edit.get_by_label("API key")).to_have_value("")
    await edit.get_by_label("Display name").fill("Team B")
    await edit.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("status")).to_contain_text("Saved team-b.")
    status, edited = await api(ui_stack, "GET", "/api/v1/providers/team-b")
    assert edited["display_name"] == "Team B"
    assert [k["id"] for k in edited["api_keys"]] == [k["id"] for k in created["api_keys"]]

    # Delete asks first; Cancel keeps it, Confirm delete removes it.
    await row.get_by_role("button", name="Delete").click()
    await row.get_by_role("button", name="Cancel").click()
    await expect(row).to_have_count(1)
    await row.get_by_role("button", name="Delete").click()
    await row.get_by_role("button", name="Confirm delete").click()
    await expect(page.locator('tr[data-provider="team-b"]')).to_have_count(0)
    status, _ = await api(ui_stack, "GET", "/api/v1/providers/team-b")
    assert status == 404
