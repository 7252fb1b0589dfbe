"""Audit log writes: one row per admin action, with secrets already masked."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from aibridge.store.models import AuditLog


def add_audit(
    session: AsyncSession,
    *,
    actor_id: uuid.UUID | None,
    actor_username: str,
    action: str,
    resource_type: str,
    resource_id: str = "",
    resource_name: str = "",
    diff: dict[str, Any] | None = None,
    status_code: int = 200,
) -> AuditLog:
    """Add an audit row to ``session`` (committed with the caller's transaction).

    ``diff`` must not contain plaintext secrets; pass masked values.
    """
    row = AuditLog(
        actor_id=actor_id,
        actor_username=actor_username,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        resource_name=resource_name,
        diff=diff or {},
        status_code=status_code,
    )
    session.add(row)
    return row
