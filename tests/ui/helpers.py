"""Steps the dashboard browser tests share."""

from __future__ import annotations

import asyncio
from typing import Any

from playwright.async_api import Page, expect

from aibridge.testing.stack import Stack

TIMEOUT = 60.0


async def sign_in(page: Page, key: str, path: str = "/ui/") -> None:
    """Open ``path``, sign in with ``key`` and wait for the navigation to appear."""
    await page.goto(path)
    await page.get_by_label("Gateway key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()


async def chat(st: Stack, token: str, prompt: str, model: str = "gpt-4o-mini") -> None:
    """One Chat Completions request through the gateway as ``token``; waits until it is
    recorded."""
    async with asyncio.timeout(TIMEOUT):
        resp = await st.client.post(
            "/openai/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": prompt}]},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status == 200, await resp.text()
        await resp.read()
    await st.flush_records()


async def api_get(st: Stack, token: str, path: str, **query: str) -> Any:
    """GET an admin API path as ``token``; the JSON body."""
    async with asyncio.timeout(TIMEOUT):
        resp = await st.client.get(path, params=query, headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 200, await resp.text()
        return await resp.json()


def fmt_int(n: int) -> str:
    """What lib/format.js formatInt shows."""
    return f"{n:,}"


def fmt_usd(value: float, unpriced: bool = False) -> str:
    """What lib/format.js formatUsd shows: every significant digit, at least two."""
    whole, frac = f"{abs(value):.12f}".split(".")
    frac = frac.rstrip("0").ljust(2, "0")
    text = f"{'-' if value < 0 else ''}${int(whole):,}.{frac}"
    return f"{text}+ (unpriced calls)" if unpriced else text
