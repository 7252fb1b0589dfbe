"""Accessibility pass over every dashboard page in a real browser: labelled form controls,
column headers with ``scope="col"``, links that are links and buttons that are buttons,
unique ids, a visible focus ring; signing in and reaching Interceptions with only Tab and
Enter; the Usage and Interceptions pages at phone width."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Page, expect

from aibridge.testing.stack import Stack

from .helpers import chat, sign_in
from .pages_support import add_claude_provider, api, record_claude_session

PHONE = {"width": 390, "height": 844}

# Problems on the current page, as readable strings (empty: none).
AUDIT = """() => {
  const problems = [];
  const name = (el) => `${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}` +
    `${el.getAttribute('name') ? '[name=' + el.getAttribute('name') + ']' : ''}`;
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden') continue;
    const labelled = (el.labels && el.labels.length) || el.getAttribute('aria-label') ||
      el.getAttribute('aria-labelledby');
    if (!labelled) problems.push(`unlabelled ${name(el)}`);
  }
  for (const th of document.querySelectorAll('th')) {
    if (th.closest('thead') && th.getAttribute('scope') !== 'col') {
      problems.push(`column header without scope=col: ${th.textContent}`);
    }
  }
  for (const a of document.querySelectorAll('a')) {
    if (!a.getAttribute('href')) problems.push(`link without href: ${a.textContent}`);
  }
  for (const b of document.querySelectorAll('button')) {
    if (!b.getAttribute('type')) problems.push(`button without type: ${b.textContent}`);
    const named = b.textContent.trim() || b.getAttribute('aria-label');
    if (!named) problems.push('button without a name');
  }
  // Only real controls act: no div/span pretending to be a button or link.
  for (const el of document.querySelectorAll('[role=button], [role=link], [onclick]')) {
    problems.push(`fake control ${name(el)}`);
  }
  for (const el of document.querySelectorAll('[tabindex]')) {
    const t = Number(el.getAttribute('tabindex'));
    if (t > 0) problems.push(`positive tabindex on ${name(el)}`);
  }
  const ids = new Map();
  for (const el of document.querySelectorAll('[id]')) ids.set(el.id, (ids.get(el.id) || 0) + 1);
  for (const [id, n] of ids) if (n > 1) problems.push(`duplicate id ${id}`);
  if (!document.querySelector('h1')) problems.push('no h1');
  return problems;
}"""


async def audit(page: Page, where: str) -> None:
    """Fail with every accessibility problem :data:`AUDIT` finds on the page."""
    problems: list[Any] = await page.evaluate(AUDIT)
    assert problems == [], (where, problems)


async def test_every_page_passes_the_audit(page: Page, ui_stack: Stack) -> None:
    st = ui_stack
    await add_claude_provider(st)
    await record_claude_session(st, "cc-a11y", st.user_token)
    status, listing = await api(st, "GET", "/api/v1/sessions")
    assert status == 200, listing
    session = listing["sessions"][0]["id"]
    status, detail = await api(st, "GET", f"/api/v1/sessions/{session}")
    interception = detail["interceptions"][0]["id"]

    await page.goto("/ui/")
    await expect(page.get_by_label("Gateway key")).to_be_visible()
    await audit(page, "sign-in")
    await sign_in(page, st.admin_token)
    for path, ready in (
        ("/ui/usage", "main svg.chart"),
        ("/ui/sessions", f'tr[data-session="{session}"]'),
        (f"/ui/sessions/{session}", "li.turn >> nth=2"),
        ("/ui/interceptions", f'tr[data-id="{interception}"]'),
        (f"/ui/interceptions/{interception}", 'pre[data-role="prompt"]'),
        ("/ui/providers", 'tr[data-provider="claude"]'),
        ("/ui/users", 'tr[data-user="dev"]'),
        ("/ui/users/dev", "tr[data-key]"),
    ):
        await page.goto(path)
        await expect(page.locator(ready)).to_be_visible()
        await audit(page, path)
    # The providers' edit form too (its own inputs and the existing keys' checkboxes).
    await page.goto("/ui/providers")
    await page.get_by_role("button", name="Edit claude").click()
    await expect(page.get_by_role("heading", name="Edit provider claude")).to_be_visible()
    await audit(page, "/ui/providers (edit)")

    # The audit itself sees problems (so a pass above means something).
    found = await page.evaluate(
        "(audit) => { const t = document.createElement('table');"
        " t.createTHead().insertRow().appendChild(document.createElement('th')).textContent = 'X';"
        " document.querySelector('main').append(document.createElement('input'), t);"
        " return (0, eval)(audit)(); }",
        AUDIT,
    )
    assert found == ["unlabelled input", "column header without scope=col: X"], found


async def test_sign_in_and_reach_interceptions_with_tab_and_enter(
    page: Page, ui_stack: Stack
) -> None:
    st = ui_stack
    await page.goto("/ui/")
    key = page.get_by_label("Gateway key")
    await expect(key).to_be_focused()
    # Tab away and back: the field is reachable in tab order, not only by autofocus.
    await page.keyboard.press("Shift+Tab")
    await expect(key).not_to_be_focused()
    await tab_to(page, key)
    await page.keyboard.type(st.user_token)
    button = page.get_by_role("button", name="Sign in")
    await tab_to(page, button)
    await assert_focus_ring(page)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    link = page.get_by_role("link", name="Interceptions")
    await tab_to(page, link)
    await assert_focus_ring(page)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Interceptions")
    await expect(page).to_have_url(f"{st.base}/ui/interceptions")
    # The filter form works from the keyboard too: Tab to Status, pick Error, Tab to Filter.
    status = page.get_by_label("Status")
    await tab_to(page, status)
    await page.keyboard.press("End")  # the last option: "Error"
    await expect(status).to_have_value("error")
    await tab_to(page, page.get_by_role("button", name="Filter"))
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(f"{st.base}/ui/interceptions?status=error")


async def tab_to(page: Page, target: Any, limit: int = 40) -> None:
    """Press Tab until ``target`` has focus (at most ``limit`` times)."""
    for _ in range(limit):
        if await target.evaluate("el => el === document.activeElement"):
            return
        await page.keyboard.press("Tab")
    await expect(target).to_be_focused()


async def assert_focus_ring(page: Page) -> None:
    """The focused element shows a visible outline (keyboard focus, :focus-visible)."""
    ring = await page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, parseFloat(s.outlineWidth)]; }"
    )
    assert ring[0] != "none" and ring[1] >= 2, ring


async def test_usage_and_interceptions_fit_a_phone_screen(page: Page, ui_stack: Stack) -> None:
    st = ui_stack
    await chat(st, st.user_token, "a fairly long prompt " * 20)
    await page.set_viewport_size(PHONE)
    await sign_in(page, st.admin_token, "/ui/usage")
    for path, ready in (
        ("/ui/usage", "main svg.chart"),
        ("/ui/interceptions", "main tbody tr[data-id]"),
    ):
        await page.goto(path)
        await expect(page.locator(ready)).to_be_visible()
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (path, width)
        # The navigation and the first filter are on screen, not pushed off to the side.
        for locator in (page.get_by_role("link", name="Interceptions"), page.locator("main form")):
            box = await locator.first.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
