"""Headless Chromium for the dashboard tests: Debian's ``chromium`` driven by Playwright.

Playwright is told to use the system browser (``executable_path``) so nothing is
downloaded: gateways and their CI run in closed networks. Find it with
:func:`chromium_path` (``AIBRIDGE_CHROMIUM`` or ``/usr/bin/chromium``); whether a missing
browser skips or fails is the test suite's call (tests/ui/conftest.py), as with
PostgreSQL and Redis.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, async_playwright

CHROMIUM_ENV = "AIBRIDGE_CHROMIUM"
"""Path of the Chromium executable (default: ``/usr/bin/chromium``)."""
REQUIRE_BROWSER_ENV = "AIBRIDGE_TEST_REQUIRE_BROWSER"
"""``1``: a missing browser fails the browser tests instead of skipping them (CI)."""
DEFAULT_CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 800}
"""The size the issue asks the dashboard to be readable at (and screenshots are taken at)."""


def chromium_path() -> str | None:
    """The Chromium executable to drive, or None when there is none."""
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        return configured if Path(configured).is_file() else None
    if Path(DEFAULT_CHROMIUM).is_file():
        return DEFAULT_CHROMIUM
    return shutil.which("chromium")


def missing_browser_reason() -> str:
    """Why the browser tests cannot run here, and how to fix it."""
    return (
        f"dashboard browser tests need Chromium: apt-get install chromium "
        f"(or set {CHROMIUM_ENV}=/path/to/chromium)"
    )


@asynccontextmanager
async def chromium(executable: str) -> AsyncIterator[Browser]:
    """A headless Chromium from ``executable``, closed on exit."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable,
            headless=True,
            # Containers often run as root, where Chromium's sandbox cannot start; the
            # pages under test are our own, served on loopback.
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def browser_context(
    browser: Browser, *, base_url: str, width: int = 1280, height: int = 800
) -> AsyncIterator[BrowserContext]:
    """A fresh context (its own cookies) on ``base_url``, UTC and en-US for stable text."""
    context = await browser.new_context(
        base_url=base_url,
        viewport={"width": width, "height": height},
        locale="en-US",
        timezone_id="UTC",
    )
    try:
        yield context
    finally:
        await context.close()
