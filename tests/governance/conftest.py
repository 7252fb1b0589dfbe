"""Redis fixtures of the limiter tests (the shared test Redis with a prefix per test)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from aibridge.testing.redis import (
    REDIS_ENV,
    REQUIRE_REDIS_ENV,
    configured_redis_url,
    delete_prefix,
    unique_prefix,
)


def require_redis() -> str:
    """The shared test Redis URL; skips the test when unset (fails in CI instead)."""
    url = configured_redis_url()
    if url is None:
        if os.environ.get(REQUIRE_REDIS_ENV) == "1":
            pytest.fail(f"{REQUIRE_REDIS_ENV}=1 but {REDIS_ENV} is not set")
        pytest.skip(f"set {REDIS_ENV}=redis://127.0.0.1:6379/0 to run the Redis tests")
    return url


@pytest.fixture
async def shared_redis() -> AsyncIterator[tuple[str, str]]:
    """(URL, key prefix of this test) on the shared Redis; the test's keys are deleted
    afterwards."""
    url = require_redis()
    prefix = unique_prefix()
    yield url, prefix
    await delete_prefix(url, prefix)
