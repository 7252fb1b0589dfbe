"""The Usage and Interceptions pages in a real browser against a gateway with a fake
upstream: what they show equals what the API returns, members see only their own, and
attacker-controlled text stays text."""

from __future__ import annotations

from playwright.async_api import Page, expect

from aibridge.testing.stack import Stack
from aibridge.ui.routes import CONTENT_SECURITY_POLICY

from .helpers import api_get, chat, fmt_int, fmt_usd, sign_in

XSS = (
    'explain <img src=x onerror="window.__pwned=1"> and '
    "<script>window.__pwned=2</script><b onmouseover=window.__pwned=3>bold</b>"
)


def _row(page: Page, interception_id: str):  # type: ignore[no-untyped-def]
    return page.locator(f'main tbody tr[data-id="{interception_id}"]')


async def test_member_sees_a_request_just_made_with_its_exact_tokens_and_cost(
    page: Page, ui_stack: Stack
) -> None:
    st = ui_stack
    await sign_in(page, st.user_token, "/ui/interceptions")
    await expect(page.get_by_text("No interceptions match.")).to_be_visible()
    await page.evaluate("window.__sameDocument = true")
    await chat(st, st.user_token, "what is two plus two?")
    listed = (await api_get(st, st.user_token, "/api/v1/interceptions"))["interceptions"]
    assert len(listed) == 1
    item = listed[0]
    assert item["tokens"]["input"] > 0 and item["cost_usd"] > 0
    # Appears without a reload (the page polls).
    row = _row(page, item["id"])
    await expect(row).to_be_visible()
    tokens = item["tokens"]
    for col in ("input", "output", "cache_read", "cache_write"):
        await expect(row.locator(f'td[data-col="{col}"]')).to_have_text(fmt_int(tokens[col]))
    await expect(row.locator('td[data-col="cost_usd"]')).to_have_text(
        fmt_usd(item["cost_usd"], item["unpriced"])
    )
    await expect(row.locator('td[data-col="user"]')).to_have_text("dev")
    await expect(row.locator('td[data-col="model"]')).to_have_text(item["model"])
    await expect(row.locator('td[data-col="status"]')).to_have_text("OK")
    await expect(row.locator('td[data-col="prompt"]')).to_have_text("what is two plus two?")
    assert await page.evaluate("window.__sameDocument") is True  # no reload happened

    # Usage: the table's numbers are the usage API's, the budget /api/v1/me's.
    resp = await st.client.patch(
        "/api/v1/users/dev",
        json={"limits": {"budget": {"amount_usd": 2, "period": "day"}}},
        headers=st.admin_headers(),
    )
    assert resp.status == 200, await resp.text()
    await page.get_by_role("link", name="Usage").click()
    me = await api_get(st, st.user_token, "/api/v1/me")
    await expect(page.locator('[data-budget="remaining"]')).to_have_text(
        fmt_usd(me["budget"]["remaining_usd"])
    )
    await expect(page.locator('[data-budget="spent"]')).to_have_text(
        fmt_usd(me["budget"]["spent_usd"])
    )
    assert me["budget"]["spent_usd"] == item["cost_usd"]
    usage = (await api_get(st, st.user_token, "/api/v1/usage", group_by="user"))["rows"]
    assert [r["key"] for r in usage] == ["dev"]
    urow = page.locator('main tbody tr[data-key="dev"]')
    await expect(urow).to_be_visible()
    expected = usage[0]
    for col in ("interceptions", "input", "output", "cache_read", "cache_write"):
        await expect(urow.locator(f'td[data-col="{col}"]')).to_have_text(fmt_int(expected[col]))
    await expect(urow.locator('td[data-col="cost_usd"]')).to_have_text(
        fmt_usd(expected["cost_usd"], expected["unpriced"])
    )
    await expect(page.locator('[data-total="cost_usd"]')).to_have_text(
        fmt_usd(expected["cost_usd"], expected["unpriced"])
    )
    await expect(page.locator("main svg.chart rect")).to_have_count(1)
    # Group by model: the table follows, still the API's numbers.
    await page.get_by_label("Group by").select_option("model")
    await page.get_by_role("button", name="Show").click()
    by_model = (await api_get(st, st.user_token, "/api/v1/usage", group_by="model"))["rows"]
    mrow = page.locator(f'main tbody tr[data-key="{by_model[0]["key"]}"]')
    await expect(mrow.locator('td[data-col="input"]')).to_have_text(fmt_int(by_model[0]["input"]))


async def test_member_never_sees_another_users_interceptions(page: Page, ui_stack: Stack) -> None:
    st = ui_stack
    await chat(st, st.admin_token, "admin secret plans")
    await chat(st, st.user_token, "member question")
    everyone = (await api_get(st, st.admin_token, "/api/v1/interceptions"))["interceptions"]
    admin_row = next(i for i in everyone if i["user"]["username"] != "dev")
    await sign_in(page, st.user_token, "/ui/interceptions")
    await expect(page.locator("main tbody tr[data-id]")).to_have_count(1)
    await expect(page.get_by_text("admin secret plans")).to_have_count(0)
    # Members get no user filter; typing one in the URL still shows only their own.
    await expect(page.get_by_label("User", exact=True)).to_have_count(0)
    await page.goto(f"/ui/interceptions?user={admin_row['user']['username']}")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Interceptions")
    await expect(page.get_by_text("admin secret plans")).to_have_count(0)
    await expect(_row(page, admin_row["id"])).to_have_count(0)


async def test_an_admin_sees_everyone_and_filters(page: Page, ui_stack: Stack) -> None:
    st = ui_stack
    await chat(st, st.admin_token, "from the admin")
    await chat(st, st.user_token, "from the member")
    await sign_in(page, st.admin_token, "/ui/interceptions")
    await expect(page.locator("main tbody tr[data-id]")).to_have_count(2)
    await page.get_by_label("User", exact=True).fill("dev")
    await page.get_by_role("button", name="Filter").click()
    await expect(page).to_have_url(f"{st.base}/ui/interceptions?user=dev")
    await expect(page.locator("main tbody tr[data-id]")).to_have_count(1)
    await expect(page.locator('td[data-col="prompt"]')).to_have_text("from the member")
    await page.get_by_label("Status").select_option("error")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_text("No interceptions match.")).to_be_visible()


async def test_hostile_prompt_is_shown_as_text_and_runs_nothing(
    page: Page, ui_stack: Stack
) -> None:
    st = ui_stack
    await chat(st, st.user_token, XSS)
    response = await page.goto("/ui/")
    assert response is not None
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-frame-options"] == "DENY"
    await sign_in(page, st.user_token, "/ui/interceptions")
    cell = page.locator('main td[data-col="prompt"]')
    await expect(cell).to_have_text(XSS)
    await expect(page.locator("main img")).to_have_count(0)
    await expect(page.locator("main script")).to_have_count(0)
    await expect(page.locator("main b")).to_have_count(0)
    await cell.hover()
    assert await page.evaluate("typeof window.__pwned") == "undefined"
    # The detail view (GET /api/v1/interceptions/{id}) shows the full prompt as text too.
    iid = (await api_get(st, st.user_token, "/api/v1/interceptions"))["interceptions"][0]["id"]
    probe = await page.request.get(f"/api/v1/interceptions/{iid}")
    if probe.status == 200:
        await page.get_by_role("link", name=await page.locator("main td a").inner_text()).click()
        await expect(page.locator('pre[data-role="prompt"]')).to_have_text(XSS)
        await expect(page.locator("main img")).to_have_count(0)
        assert await page.evaluate("typeof window.__pwned") == "undefined"


async def test_pages_fit_a_phone_width_screen(page: Page, ui_stack: Stack) -> None:
    st = ui_stack
    await chat(st, st.user_token, "a long prompt " * 40)
    await page.set_viewport_size({"width": 390, "height": 844})
    await sign_in(page, st.user_token)
    for link in ("Usage", "Interceptions"):
        await page.get_by_role("link", name=link).click()
        await expect(page.locator("main table")).to_be_visible()
        # Wide tables scroll inside their own box; the page itself never scrolls sideways.
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (link, width)
        await expect(page.get_by_role("button", name="Sign out")).to_be_in_viewport()
