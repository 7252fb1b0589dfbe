"""Read back what the recorder wrote for interceptions (test helper).

Call ``await stack.flush_records()`` first so everything queued is in the database.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select

from aibridge.server import Services
from aibridge.store.models import (
    Interception,
    ModelThought,
    TokenUsage,
    ToolUsage,
    User,
    UserPrompt,
)


@dataclass
class Recorded:
    """One interception row with its child rows (each list in creation order)."""

    interception: Interception
    token_usages: list[TokenUsage]
    prompts: list[UserPrompt]
    tool_usages: list[ToolUsage]
    thoughts: list[ModelThought]


async def user_id(services: Services, username: str) -> uuid.UUID:
    """The id of the user called ``username`` (fails the test when there is none)."""
    async with services.sessions() as session:
        found = (
            await session.execute(select(User.id).where(User.username == username))
        ).scalar_one_or_none()
    assert found is not None, f"no user {username!r}"
    return uuid.UUID(str(found))


async def interceptions(
    services: Services, *, initiator_id: uuid.UUID | None = None
) -> list[Interception]:
    """All interception rows (of one user when ``initiator_id`` is given), oldest first."""
    stmt = select(Interception).order_by(Interception.started_at, Interception.id)
    if initiator_id is not None:
        stmt = stmt.where(Interception.initiator_id == initiator_id)
    async with services.sessions() as session:
        return list((await session.execute(stmt)).scalars())


async def recorded(services: Services, interception_id: uuid.UUID) -> Recorded:
    """The interception ``interception_id`` and everything recorded for it."""
    async with services.sessions() as session:
        row = await session.get(Interception, interception_id)
        assert row is not None, f"no interception {interception_id}"
        children = []
        for model in (TokenUsage, UserPrompt, ToolUsage, ModelThought):
            stmt = (
                select(model)
                .where(model.interception_id == interception_id)
                .order_by(model.created_at, model.id)
            )
            children.append(list((await session.execute(stmt)).scalars()))
    tokens, prompts, tools, thoughts = children
    return Recorded(row, tokens, prompts, tools, thoughts)  # type: ignore[arg-type]


async def only_interception(services: Services, initiator_id: uuid.UUID) -> Recorded:
    """The single interception of ``initiator_id`` with its rows; fails unless exactly one."""
    rows = await interceptions(services, initiator_id=initiator_id)
    assert len(rows) == 1, f"expected exactly one interception, got {len(rows)}"
    return await recorded(services, rows[0].id)
