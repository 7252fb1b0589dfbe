"""Fixtures of the recording tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from aibridge.testing.databases import migrated_engine


@pytest.fixture
async def pg_engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated engine on a fresh PostgreSQL database (PostgreSQL-only scenarios)."""
    async with migrated_engine(pg_url) as eng:
        yield eng
