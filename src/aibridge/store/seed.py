"""Start-up check of the secrets stored in the database against the configured key.

:func:`check_encryption` refuses to start when the database holds secrets that the
configured ``AIBRIDGE_ENCRYPTION_KEY`` cannot read (missing or different key), so the
failure is a clear message at boot rather than errors on every request. (Seeding the
provider table from the environment is :mod:`aibridge.providers.seed`.)
"""

from __future__ import annotations

from sqlalchemy import select, union
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.store.crypto import EncryptionKeyError, Encryptor
from aibridge.store.models import AIProvider, AIProviderKey, MCPServer, MCPUserCredential


async def _key_ids_in_use(session: AsyncSession) -> set[str]:
    columns = (
        AIProviderKey.api_key_key_id,
        AIProvider.settings_key_id,
        MCPServer.auth_key_id,
        MCPUserCredential.credential_key_id,
    )
    stmt = union(
        *(select(col.label("key_id")).where(col.is_not(None)).distinct() for col in columns)
    )
    return {str(v) for v in (await session.execute(stmt)).scalars().all()}


async def check_encryption(
    sessions: async_sessionmaker[AsyncSession], encryptor: Encryptor | None
) -> None:
    """Raise :class:`EncryptionKeyError` when stored secrets were encrypted with a key
    other than the configured one (or none is configured)."""
    async with sessions() as session:
        key_ids = await _key_ids_in_use(session)
    if not key_ids:
        return
    listed = ", ".join(sorted(key_ids))
    if encryptor is None:
        raise EncryptionKeyError(
            f"the database holds secrets encrypted at rest (key id {listed}) but "
            "AIBRIDGE_ENCRYPTION_KEY is not set; set it to the key they were written with"
        )
    foreign = key_ids - {encryptor.key_id}
    if foreign:
        raise EncryptionKeyError(
            f"the database holds secrets encrypted with a different AIBRIDGE_ENCRYPTION_KEY "
            f"(key id {', '.join(sorted(foreign))}; the configured key has id "
            f"{encryptor.key_id}); set AIBRIDGE_ENCRYPTION_KEY to the original key"
        )


__all__ = ["check_encryption"]
