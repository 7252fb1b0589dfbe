"""Fixtures of the interception tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aibridge.testing.clients import close_clients


@pytest.fixture(autouse=True)
async def close_sdk_clients() -> AsyncIterator[None]:
    """Close the SDK clients a test made (aibridge.testing.clients) on its own event loop."""
    yield
    await close_clients()
