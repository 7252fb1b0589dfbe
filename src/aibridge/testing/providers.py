"""Provider rows built in memory, for tests of the code that runs on them (routing, key
rings, the pipeline, recording) without a database."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aibridge.store.providers import ProviderKeyRecord, ProviderRecord


def provider_record(
    name: str,
    ptype: str = "openai",
    base_url: str = "https://api.example.com/v1",
    *,
    keys: Sequence[str] | None = None,
    enabled: bool = True,
    settings: dict[str, Any] | None = None,
    display_name: str | None = None,
    at: datetime | None = None,
) -> ProviderRecord:
    """A provider row as the store returns it: ``keys`` oldest (primary) first, by default
    the one key ``sk-test-<name>-0001``; ``display_name`` defaults to the name; created and
    updated ``at`` (default now)."""
    now = at if at is not None else datetime.now(UTC)
    secrets = keys if keys is not None else [f"sk-test-{name}-0001"]
    return ProviderRecord(
        id=uuid.uuid4(),
        type=ptype,
        name=name,
        display_name=name if display_name is None else display_name,
        icon="",
        enabled=enabled,
        base_url=base_url,
        settings=settings,
        keys=[ProviderKeyRecord(uuid.uuid4(), secret, now) for secret in secrets],
        created_at=now,
        updated_at=now,
    )
