"""Fixtures of the dashboard browser tests: one headless Chromium per worker, a fresh
browser context per test, a gateway stack with a fake upstream and an OpenAI provider.

The browser is started once per worker (starting Chromium costs more than most tests), so
it lives on the session's event loop; the tests that use it, and their other async
fixtures, run on that loop too (:func:`pytest_collection_modifyitems`)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, expect

from aibridge.testing.browser import (
    REQUIRE_BROWSER_ENV,
    browser_context,
    chromium,
    chromium_path,
    missing_browser_reason,
)
from aibridge.testing.stack import Stack, stack

UI_TIMEOUT_MS = 10_000
"""Milliseconds any single browser expectation may wait."""

expect.set_options(timeout=UI_TIMEOUT_MS)


def _executable() -> str:
    path = chromium_path()
    if path is None:
        if os.environ.get(REQUIRE_BROWSER_ENV) == "1":
            pytest.fail(f"{REQUIRE_BROWSER_ENV}=1 but {missing_browser_reason()}")
        pytest.skip(missing_browser_reason())
    return path


ON_SESSION_LOOP = frozenset({"browser", "context", "page", "ui_stack"})
"""Fixtures on the session's event loop: a test using one runs there too."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests of this folder that use the shared browser on the session's loop."""
    here = Path(__file__).resolve().parent
    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        if item.path.parent == here and uses & ON_SESSION_LOOP:
            item.add_marker(pytest.mark.asyncio(loop_scope="session"), append=False)


@pytest.fixture(autouse=True)
def close_sdk_clients() -> None:
    """The browser tests make no SDK clients; this replaces the suite's async fixture of
    the same name, which would run on another loop than these tests."""


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian Chromium (skips, or fails under AIBRIDGE_TEST_REQUIRE_BROWSER=1,
    when it is not installed)."""
    async with chromium(_executable()) as b:
        yield b


@pytest_asyncio.fixture(loop_scope="session")
async def ui_stack(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """Gateway + fake upstream, an ``openai`` provider, admin and member (``dev``) keys."""
    async with stack(sqlite_url, tmp_path) as s:
        await s.add_provider("openai", "openai")
        yield s


@pytest_asyncio.fixture(loop_scope="session")
async def context(browser: Browser, ui_stack: Stack) -> AsyncIterator[BrowserContext]:
    """A fresh browser context (no cookies) on the stack's gateway."""
    async with browser_context(browser, base_url=ui_stack.base) as ctx:
        ctx.set_default_timeout(UI_TIMEOUT_MS)
        yield ctx


@pytest_asyncio.fixture(loop_scope="session")
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    """A page that fails the test on any uncaught script error or CSP violation."""
    p = await context.new_page()
    problems: list[str] = []
    p.on("pageerror", lambda err: problems.append(f"uncaught: {err}"))
    p.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if msg.type == "error" and "Content Security Policy" in msg.text
            else None
        ),
    )
    yield p
    assert not problems, problems
