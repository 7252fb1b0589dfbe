"""First-start bootstrap of the provider table from the environment.

:func:`seed_providers_from_env` creates ``anthropic`` / ``openai`` from
``ANTHROPIC_API_KEY`` / ``OPENAI_API_KEY`` only while the provider table has never held
a row: once an admin has created, changed or deleted anything, the database is the
only source of truth and the environment is ignored. A base URL from the environment
must pass the admin API's rule (:func:`~aibridge.providers.validation.base_url_error`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aibridge.providers.validation import base_url_error
from aibridge.secrets_mask import mask_url
from aibridge.store import providers as store
from aibridge.store.crypto import Encryptor
from aibridge.store.pubsub import PROVIDERS_CHANGED, PubSub, publish_quietly

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"


@dataclass(frozen=True, slots=True)
class EnvProvider:
    """How one provider is derived from the environment."""

    name: str
    type: str
    key_var: str
    url_var: str
    default_url: str


ENV_PROVIDERS = (
    EnvProvider(
        "anthropic",
        "anthropic",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "https://api.anthropic.com",
    ),
    EnvProvider(
        "openai", "openai", "OPENAI_API_KEY", "OPENAI_BASE_URL", "https://api.openai.com/v1"
    ),
)


def _wanted(env: Mapping[str, str]) -> list[store.ProviderSpec]:
    specs: list[store.ProviderSpec] = []
    for item in ENV_PROVIDERS:
        key = env.get(item.key_var, "").strip()
        if not key:
            continue
        base_url = env.get(item.url_var, "").strip() or item.default_url
        problem = base_url_error(base_url)
        if problem:
            log.error(
                "not seeding provider %r: %s=%r is invalid (%s); fix it or create the "
                "provider with `aibridge providers create`",
                item.name,
                item.url_var,
                # An invalid URL may be one that carries credentials: never log those.
                mask_url(base_url),
                problem,
            )
            continue
        specs.append(
            store.ProviderSpec(
                type=item.type, name=item.name, base_url=base_url, api_keys=[key], enabled=True
            )
        )
    return specs


async def seed_providers_from_env(
    sessions: async_sessionmaker[AsyncSession],
    encryptor: Encryptor | None,
    pubsub: PubSub,
    env: Mapping[str, str],
) -> list[str]:
    """On a never-configured database, create providers from ``*_API_KEY`` variables.

    Safe across restarts and concurrent replicas: the check and the inserts run in one
    transaction holding the provider write lock. Returns the names created.
    """
    specs = _wanted(env)
    if not specs:
        return []
    created: list[store.ProviderRecord] = []
    async with sessions() as session, session.begin():
        await store.lock_provider_writes(session)
        if await store.count_all_providers(session) > 0:
            log.info(
                "providers are already configured in the database; ignoring %s "
                "(manage providers with `aibridge providers` or the admin API)",
                ", ".join(e.key_var for e in ENV_PROVIDERS if e.name in {s.name for s in specs}),
            )
            return []
        for spec in specs:
            record = await store.create_provider(session, encryptor, spec)
            store.audit_created(session, record, actor_id=None, actor_username=SYSTEM_ACTOR)
            created.append(record)
    for record in created:
        log.info(
            "seeded provider %r (type %s, base_url %s) with one key from the environment",
            record.name,
            record.type,
            record.base_url,
        )
    await publish_quietly(pubsub, PROVIDERS_CHANGED)
    return [r.name for r in created]


__all__ = ["ENV_PROVIDERS", "EnvProvider", "seed_providers_from_env"]
