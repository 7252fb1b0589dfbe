"""The Interceptions page's status and error-type filters are the API's (``status``,
``error_type`` on ``GET /api/v1/interceptions``): the page sends them and lists exactly
what the API answers, also for rows that arrive while it polls."""

from __future__ import annotations

import asyncio

from playwright.async_api import Page, expect

from aibridge.fakellm import Scenario
from aibridge.testing.stack import TIMEOUT, Stack

from .helpers import api_get, chat, sign_in


async def failing_chat(st: Stack) -> None:
    """A request the upstream refuses with a 400: recorded with an error type."""
    st.fake.enqueue(Scenario.http_error(400, message="bad request from the test"))
    async with asyncio.timeout(TIMEOUT):
        resp = await st.client.post(
            "/openai/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "fail"}]},
            headers={"Authorization": f"Bearer {st.user_token}"},
        )
        assert resp.status == 400, await resp.text()
        await resp.read()
    await st.flush_records()


def ids_in(rows: list[dict[str, object]]) -> list[str]:
    return [str(r["id"]) for r in rows]


async def listed_ids(page: Page) -> list[str]:
    return [
        str(i)
        for i in await page.locator("main tbody tr[data-id]").evaluate_all(
            "rows => rows.map((r) => r.dataset.id)"
        )
    ]


async def test_status_and_error_type_filters_are_applied_by_the_api(
    page: Page, ui_stack: Stack
) -> None:
    st = ui_stack
    await chat(st, st.user_token, "first, fine")
    await failing_chat(st)
    await chat(st, st.user_token, "second, fine")
    everything = (await api_get(st, st.admin_token, "/api/v1/interceptions"))["interceptions"]
    failed = [i for i in everything if i["error_type"]]
    assert len(everything) == 3 and len(failed) == 1, everything
    error_type = failed[0]["error_type"]
    ok = (await api_get(st, st.admin_token, "/api/v1/interceptions", status="ok"))["interceptions"]
    assert ids_in(ok) == [i["id"] for i in everything if not i["error_type"]]

    await sign_in(page, st.admin_token, "/ui/interceptions")
    rows = page.locator("main tbody tr[data-id]")
    await expect(rows).to_have_count(3)

    # Status "Error" through the form: the request carries it, the table is the answer.
    form = page.get_by_role("form", name="Filter interceptions")
    await form.get_by_label("Status").select_option("error")
    async with page.expect_request(
        lambda r: "/api/v1/interceptions?" in r.url and "status=error" in r.url
    ):
        await form.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_count(1)
    assert await listed_ids(page) == ids_in(failed)
    await expect(rows.first.locator('td[data-col="status"]')).to_have_text(error_type)
    assert "status=error" in page.url

    # Status "OK": the two successful ones, newest first.
    await form.get_by_label("Status").select_option("ok")
    await form.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_count(2)
    assert await listed_ids(page) == ids_in(ok)

    # An error type, by URL: exactly the API's answer; one that matches nothing: empty.
    async with page.expect_request(lambda r: f"error_type={error_type}" in r.url):
        await page.goto(f"/ui/interceptions?error_type={error_type}")
    await expect(rows).to_have_count(1)
    assert await listed_ids(page) == ids_in(failed)
    await page.goto("/ui/interceptions?error_type=no_such_error")
    await expect(page.get_by_text("No interceptions match.")).to_be_visible()

    # A new failure appears while the filtered page polls; a new success does not.
    await page.goto("/ui/interceptions?status=error")
    await expect(rows).to_have_count(1)
    await chat(st, st.user_token, "third, fine")
    await failing_chat(st)
    newest = (await api_get(st, st.admin_token, "/api/v1/interceptions", status="error"))[
        "interceptions"
    ]
    assert len(newest) == 2
    await expect(rows).to_have_count(2)
    assert await listed_ids(page) == ids_in(newest)
