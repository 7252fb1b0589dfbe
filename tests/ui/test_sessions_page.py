"""The Sessions page in a real browser: a Claude Code-shaped session of three turns with
tool calls, recorded through the real gateway and fake upstream, listed and replayed in
order with its tokens, cost, cache share and the turn where the prompt cache broke."""

from __future__ import annotations

import json

from playwright.async_api import Page, expect

from aibridge.testing.stack import Stack
from tests.ui.helpers import sign_in
from tests.ui.pages_support import (
    CLAUDE_SESSION,
    add_claude_provider,
    api,
    record_claude_session,
)


def _int(n: int) -> str:
    return f"{n:,}"


def _usd(n: float) -> str:
    """USD as the page formats it: every significant decimal, at least two."""
    whole, frac = f"{n:.12f}".split(".")
    frac = frac.rstrip("0").ljust(2, "0")
    return f"${int(whole):,}.{frac}"


async def test_a_claude_code_session_is_listed_and_replayed_turn_by_turn(
    page: Page, ui_stack: Stack
) -> None:
    await add_claude_provider(ui_stack)
    await record_claude_session(ui_stack, "cc-session-0001", ui_stack.user_token)
    status, listing = await api(ui_stack, "GET", "/api/v1/sessions", token=ui_stack.user_token)
    assert status == 200, listing
    [entry] = listing["sessions"]
    status, detail = await api(
        ui_stack, "GET", f"/api/v1/sessions/{entry['id']}", token=ui_stack.user_token
    )
    assert status == 200, detail
    turns = detail["interceptions"]
    assert [t["cache_break"] for t in turns] == [False, False, True]

    await sign_in(page, ui_stack.user_token, "/ui/sessions")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sessions")
    row = page.locator(f'tr[data-session="{entry["id"]}"]')
    await expect(row.locator('td[data-col="client"]')).to_have_text("Claude Code")
    await expect(row.locator('td[data-col="interceptions"]')).to_have_text("3")
    await expect(row.locator('td[data-col="errors"]')).to_have_text("0")
    await expect(row.locator('td[data-col="user"]')).to_have_text("dev")
    await expect(row.locator('td[data-col="cost"]')).to_have_text(_usd(entry["cost_usd"]))
    await expect(row.locator('td[data-col="tokens"]')).to_contain_text(
        f"in {_int(entry['tokens']['input'])} · out {_int(entry['tokens']['output'])}"
    )

    await row.get_by_role("link").click()
    await expect(page).to_have_url(f"{ui_stack.base}/ui/sessions/{entry['id']}")
    rendered = page.locator("li.turn")
    await expect(rendered).to_have_count(3)
    for i, (turn, api_turn) in enumerate(zip(CLAUDE_SESSION, turns, strict=True)):
        item = rendered.nth(i)
        await expect(item.get_by_role("heading", level=2)).to_have_text(f"Turn {i + 1}")
        # In order, prompt as the user typed it — markup included, as text.
        await expect(item.locator("pre.prompt")).to_have_text(turn.prompt)
        # The tool calls the API returns for the turn (the scripted ones), each with its
        # arguments pretty-printed in full, as text. Within a turn the page keeps the API's
        # order (the store does not yet keep parallel calls in the model's order).
        api_calls = api_turn["tool_calls"]
        scripted = {c.name: c.arguments for c in turn.calls}
        assert {c["name"]: c["arguments"] for c in api_calls} == scripted
        await expect(item.locator("code.tool-name")).to_have_text([c["name"] for c in api_calls])
        await expect(item.locator("pre.args")).to_have_text(
            [json.dumps(c["arguments"], indent=2) for c in api_calls]
        )
        t = api_turn["tokens"]
        await expect(item.locator("p.turn-tokens")).to_contain_text(
            f"input {_int(t['input'])} · output {_int(t['output'])} · "
            f"cache read {_int(t['cache_read'])} · cache write {_int(t['cache_write'])}"
            f" — cost {_usd(api_turn['cost_usd'])}"
        )
        share = api_turn["cache_read_share"]
        await expect(item.locator("strong.share")).to_have_text(f"{share * 100:.1f}%")
        link = item.get_by_role("link", name=f"Full record of turn {i + 1}")
        await expect(link).to_have_attribute("href", f"/ui/interceptions/{api_turn['id']}")
    # Only the third turn, where the share collapsed, is flagged.
    await expect(page.get_by_text("cache broke here")).to_have_count(1)
    await expect(rendered.nth(2).get_by_text("cache broke here")).to_be_visible()
    await expect(page.get_by_role("note").first).to_contain_text("The prompt cache broke once")
    # The hostile prompt stayed text: no element was created and nothing ran.
    await expect(page.locator("main img")).to_have_count(0)
    await expect(page.locator("main script")).to_have_count(0)
    assert await page.evaluate("window.__pwned") is None

    # Thoughts are collapsed, the link leads to the full record.
    await rendered.nth(0).get_by_role("link", name="Full record of turn 1").click()
    await expect(page).to_have_url(f"{ui_stack.base}/ui/interceptions/{turns[0]['id']}")


async def test_filters_narrow_the_list_and_another_members_session_stays_hidden(
    page: Page, ui_stack: Stack
) -> None:
    await add_claude_provider(ui_stack)
    await record_claude_session(ui_stack, "cc-session-0002", ui_stack.admin_token)
    # The member has no session: the admin's is not listed, and its URL shows the 404.
    status, listing = await api(ui_stack, "GET", "/api/v1/sessions")
    assert status == 200, listing
    [entry] = listing["sessions"]
    await sign_in(page, ui_stack.user_token, "/ui/sessions")
    await expect(page.get_by_text("No sessions match these filters.")).to_be_visible()
    await page.goto(f"/ui/sessions/{entry['id']}")
    await expect(page.get_by_role("alert")).to_contain_text("not found")
    await expect(page.locator("li.turn")).to_have_count(0)

    # The admin sees it; a filter that matches nothing empties the list (URL kept).
    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, ui_stack.admin_token, "/ui/sessions")
    await expect(page.locator(f'tr[data-session="{entry["id"]}"]')).to_have_count(1)
    await page.get_by_label("Errors").select_option("true")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(page).to_have_url(f"{ui_stack.base}/ui/sessions?has_errors=true")
    await expect(page.get_by_text("No sessions match these filters.")).to_be_visible()
    await page.get_by_label("Client").fill("Claude Code")
    await page.get_by_label("Errors").select_option("")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(page.locator(f'tr[data-session="{entry["id"]}"]')).to_have_count(1)


async def test_on_a_phone_a_sessions_token_counts_take_two_lines_and_never_break_inside(
    page: Page, ui_stack: Stack
) -> None:
    await add_claude_provider(ui_stack)
    await record_claude_session(ui_stack, "cc-session-0002", ui_stack.user_token)
    await page.set_viewport_size({"width": 390, "height": 844})
    await sign_in(page, ui_stack.user_token, "/ui/sessions")
    counts = page.locator('td[data-col="tokens"] .tokens > span')
    await expect(counts.first).to_be_visible()
    heights = await counts.evaluate_all("spans => spans.map(s => s.getClientRects().length)")
    # One box per count: "cache write 1,234" is never split over two lines.
    assert heights and all(n == 1 for n in heights), heights
    tops = await counts.evaluate_all(
        "spans => [...new Set(spans.map(s => Math.round(s.getBoundingClientRect().top)))]"
    )
    assert len(tops) <= 2, tops
