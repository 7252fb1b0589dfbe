"""The per-user MCP token loader a bridge build uses (:data:`~aibridge.mcp.settings.UserTokens`)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.mcp.settings import UserTokens
from aibridge.store import mcp_servers
from aibridge.store.crypto import Encryptor


def user_tokens_loader(
    sessions: async_sessionmaker[AsyncSession], encryptor: Encryptor | None
) -> UserTokens:
    """``user id -> {server id: token}`` for the user's enabled ``per_user`` servers, in
    one query, decrypted with ``encryptor``.

    Called once per bridge build (bridges are cached per user and key), never per
    request. A token whose server has since been disabled is not returned; one whose
    server is not in the bridge's snapshot yet is harmless (the builder only looks up the
    servers it has).
    """

    async def load(user_id: uuid.UUID) -> Mapping[uuid.UUID, str]:
        async with sessions() as session:
            return await mcp_servers.user_tokens(session, encryptor, user_id)

    return load


__all__ = ["user_tokens_loader"]
