"""Repository for ``ai_providers`` and ``ai_provider_keys``.

Every function works inside the caller's session/transaction; secrets are sealed on
the way in and unsealed on the way out, so callers only ever see plaintext records
(and must mask them before showing them to anyone).

Write functions bump the providers config version *first*: on SQLite that statement
takes the database write lock before anything is read (the driver only opens a
transaction at the first write, so a read-then-write would otherwise not be atomic),
and on PostgreSQL it row-locks the counter, which serialises provider writes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Select, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from aibridge.secrets_mask import mask_secret, public_settings
from aibridge.store import config_version
from aibridge.store.audit import add_audit
from aibridge.store.crypto import Encryptor, seal, unseal
from aibridge.store.locks import take_write_lock
from aibridge.store.models import AIProvider, AIProviderKey
from aibridge.store.types import utcnow

# Arbitrary constant for pg_advisory_xact_lock: serialises env seeding across replicas.
SEED_LOCK_ID = 0x41_49_50_53  # "AIPS"

AUDIT_PROVIDER = "ai_provider"
AUDIT_PROVIDER_KEY = "ai_provider_key"


class ProviderNotFoundError(LookupError):
    """No live (non-deleted) provider with that id."""


class ProviderExistsError(Exception):
    """A live provider already uses this name (the partial unique index said so)."""

    def __init__(self, name: str) -> None:
        super().__init__(f'AI provider "{name}" already exists.')
        self.name = name


class UnknownProviderKeyError(LookupError):
    """A key mutation referenced an id that is not a key of this provider."""

    def __init__(self, key_id: uuid.UUID) -> None:
        super().__init__(f"key {key_id} does not belong to this provider")
        self.key_id = key_id


@dataclass(frozen=True, slots=True)
class ProviderKeyRecord:
    """One upstream credential, decrypted."""

    id: uuid.UUID
    secret: str
    created_at: datetime

    @property
    def masked(self) -> str:
        """The secret as it may be shown (``sk-…abcd``)."""
        return mask_secret(self.secret)


@dataclass(frozen=True, slots=True)
class ProviderRecord:
    """A provider row with its keys (oldest first = primary), secrets decrypted."""

    id: uuid.UUID
    type: str
    name: str
    display_name: str
    icon: str
    enabled: bool
    base_url: str
    settings: dict[str, Any] | None
    keys: list[ProviderKeyRecord]
    created_at: datetime
    updated_at: datetime
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """Everything needed to create a provider (already validated)."""

    type: str
    name: str
    base_url: str
    display_name: str = ""
    icon: str = ""
    enabled: bool = True
    api_keys: Sequence[str] = ()
    settings: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class KeyMutation:
    """One entry of the post-patch key set: keep ``id`` or add ``api_key``."""

    id: uuid.UUID | None = None
    api_key: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderPatch:
    """A partial update. ``None`` means unchanged, except ``settings`` which is governed
    by ``settings_set`` (so that ``None`` can clear it). ``api_keys`` is the complete
    post-patch key set when not ``None``."""

    display_name: str | None = None
    icon: str | None = None
    enabled: bool | None = None
    base_url: str | None = None
    settings: dict[str, Any] | None = None
    settings_set: bool = False
    api_keys: Sequence[KeyMutation] | None = None

    def is_empty(self) -> bool:
        """True when the patch changes nothing."""
        return (
            self.display_name is None
            and self.icon is None
            and self.enabled is None
            and self.base_url is None
            and not self.settings_set
            and self.api_keys is None
        )


@dataclass(frozen=True, slots=True)
class ProviderChange:
    """The outcome of an update: before/after and what happened to the keys."""

    before: ProviderRecord
    after: ProviderRecord
    added: list[ProviderKeyRecord] = field(default_factory=list)
    removed: list[ProviderKeyRecord] = field(default_factory=list)
    kept: int = 0


# --- encoding -------------------------------------------------------------------------


def _encode_settings(
    encryptor: Encryptor | None, settings: dict[str, Any] | None
) -> tuple[str | None, str | None]:
    if not settings:
        return None, None
    return seal(encryptor, orjson.dumps(settings).decode())


def _decode_settings(
    encryptor: Encryptor | None, stored: str | None, key_id: str | None
) -> dict[str, Any] | None:
    if stored is None:
        return None
    value = orjson.loads(unseal(encryptor, stored, key_id))
    return value if isinstance(value, dict) and value else None


def _key_record(encryptor: Encryptor | None, row: AIProviderKey) -> ProviderKeyRecord:
    return ProviderKeyRecord(
        id=row.id,
        secret=unseal(encryptor, row.api_key, row.api_key_key_id),
        created_at=row.created_at,
    )


def _record(
    encryptor: Encryptor | None, row: AIProvider, keys: list[ProviderKeyRecord]
) -> ProviderRecord:
    settings = _decode_settings(encryptor, row.settings, row.settings_key_id)
    return _record_with(row, keys, settings)


def _record_with(
    row: AIProvider, keys: list[ProviderKeyRecord], settings: dict[str, Any] | None
) -> ProviderRecord:
    return ProviderRecord(
        id=row.id,
        type=row.type,
        name=row.name,
        display_name=row.display_name,
        icon=row.icon,
        enabled=row.enabled,
        base_url=row.base_url,
        settings=settings,
        keys=keys,
        created_at=row.created_at,
        updated_at=row.updated_at,
        deleted=row.deleted,
    )


# --- reads ----------------------------------------------------------------------------


def _with_keys() -> Select:
    # One statement for providers and keys: a single snapshot even under READ COMMITTED,
    # so a reload never sees a provider without the keys committed with it.
    return select(AIProvider, AIProviderKey).outerjoin(
        AIProviderKey, AIProviderKey.provider_id == AIProvider.id
    )


async def _fetch(
    session: AsyncSession,
    encryptor: Encryptor | None,
    stmt: Select,
) -> list[ProviderRecord]:
    stmt = stmt.order_by(
        AIProvider.name,
        AIProvider.created_at,
        AIProvider.id,
        AIProviderKey.created_at,
        AIProviderKey.id,
    ).execution_options(populate_existing=True)
    rows: dict[uuid.UUID, AIProvider] = {}
    buckets: dict[uuid.UUID, list[ProviderKeyRecord]] = {}
    for provider, key in (await session.execute(stmt)).tuples():
        if provider.id not in rows:
            rows[provider.id] = provider
            buckets[provider.id] = []
        if key is not None:
            buckets[provider.id].append(_key_record(encryptor, key))
    return [_record(encryptor, row, buckets[pid]) for pid, row in rows.items()]


async def list_providers(
    session: AsyncSession,
    encryptor: Encryptor | None,
    *,
    include_disabled: bool = True,
    include_deleted: bool = False,
) -> list[ProviderRecord]:
    """Providers ordered by name, each with its keys (loaded in the same query)."""
    stmt = _with_keys()
    if not include_deleted:
        stmt = stmt.where(AIProvider.deleted.is_(False))
    if not include_disabled:
        stmt = stmt.where(AIProvider.enabled.is_(True))
    return await _fetch(session, encryptor, stmt)


async def load_live_providers(
    session: AsyncSession, encryptor: Encryptor | None
) -> list[ProviderRecord]:
    """Every non-deleted provider, enabled or not, with keys, in one read (hot reload)."""
    return await list_providers(session, encryptor, include_disabled=True, include_deleted=False)


async def get_provider(
    session: AsyncSession, encryptor: Encryptor | None, provider_id: uuid.UUID
) -> ProviderRecord | None:
    """The live provider with this id, or None."""
    stmt = _with_keys().where(AIProvider.id == provider_id, AIProvider.deleted.is_(False))
    found = await _fetch(session, encryptor, stmt)
    return found[0] if found else None


async def get_provider_by_name(
    session: AsyncSession, encryptor: Encryptor | None, name: str
) -> ProviderRecord | None:
    """The live provider with this name, or None."""
    stmt = _with_keys().where(AIProvider.name == name, AIProvider.deleted.is_(False))
    found = await _fetch(session, encryptor, stmt)
    return found[0] if found else None


async def count_all_providers(session: AsyncSession) -> int:
    """Number of provider rows ever created, soft-deleted ones included."""
    return int(await session.scalar(select(func.count()).select_from(AIProvider)) or 0)


# --- writes ---------------------------------------------------------------------------


async def lock_provider_writes(session: AsyncSession) -> None:
    """Serialise with every other provider writer until the transaction ends (see
    :func:`~aibridge.store.locks.take_write_lock`)."""
    noop = update(AIProvider).where(text("1 = 0")).values(deleted=False)
    await take_write_lock(session, SEED_LOCK_ID, noop)


def _new_keys(
    encryptor: Encryptor | None, provider_id: uuid.UUID, secrets: Sequence[str]
) -> tuple[list[AIProviderKey], list[ProviderKeyRecord]]:
    # Strictly increasing timestamps keep the caller's order (oldest first = primary)
    # even when the clock does not advance between two keys.
    base = utcnow()
    rows: list[AIProviderKey] = []
    records: list[ProviderKeyRecord] = []
    for i, secret in enumerate(secrets):
        at = base + timedelta(microseconds=i)
        stored, key_id = seal(encryptor, secret)
        row = AIProviderKey(
            id=uuid.uuid4(),
            provider_id=provider_id,
            api_key=stored,
            api_key_key_id=key_id,
            created_at=at,
            updated_at=at,
        )
        rows.append(row)
        records.append(ProviderKeyRecord(row.id, secret, at))
    return rows, records


def _is_name_conflict(exc: IntegrityError) -> bool:
    text_ = str(exc.orig).lower()
    return "uq_ai_providers_name_live" in text_ or "ai_providers.name" in text_


async def create_provider(
    session: AsyncSession, encryptor: Encryptor | None, spec: ProviderSpec
) -> ProviderRecord:
    """Insert a provider and its keys; raise :class:`ProviderExistsError` when a live
    provider already has the name (detected by the unique index, so it is race-free)."""
    await config_version.bump(session)
    now = utcnow()
    settings, settings_key_id = _encode_settings(encryptor, spec.settings)
    row = AIProvider(
        id=uuid.uuid4(),
        type=spec.type,
        name=spec.name,
        display_name=spec.display_name,
        icon=spec.icon,
        enabled=spec.enabled,
        deleted=False,
        base_url=spec.base_url,
        settings=settings,
        settings_key_id=settings_key_id,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    try:
        await session.flush()
    except IntegrityError as exc:
        if _is_name_conflict(exc):
            raise ProviderExistsError(spec.name) from exc
        raise
    key_rows, keys = _new_keys(encryptor, row.id, spec.api_keys)
    session.add_all(key_rows)
    await session.flush()
    # The settings as given (not decoded back from what was just sealed).
    return _record_with(row, keys, spec.settings or None)


async def update_provider(
    session: AsyncSession,
    encryptor: Encryptor | None,
    provider_id: uuid.UUID,
    patch: ProviderPatch,
) -> ProviderChange:
    """Apply ``patch`` to the live provider ``provider_id``.

    Raises :class:`ProviderNotFoundError` (not live) or :class:`UnknownProviderKeyError`
    (a kept key id is not one of this provider's keys); either way the caller's
    transaction must be rolled back. Keys not listed in ``patch.api_keys`` are
    hard-deleted; kept keys keep their age, so their priority does not change.
    """
    await config_version.bump(session)
    row = await session.scalar(
        select(AIProvider)
        .where(AIProvider.id == provider_id, AIProvider.deleted.is_(False))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if row is None:
        raise ProviderNotFoundError(str(provider_id))
    key_rows = list(
        (
            await session.scalars(
                select(AIProviderKey)
                .where(AIProviderKey.provider_id == provider_id)
                .order_by(AIProviderKey.created_at, AIProviderKey.id)
            )
        ).all()
    )
    existing = [_key_record(encryptor, k) for k in key_rows]
    before = _record(encryptor, row, existing)

    added: list[ProviderKeyRecord] = []
    removed: list[ProviderKeyRecord] = []
    kept_records = existing
    if patch.api_keys is not None:
        by_id = {k.id: k for k in key_rows}
        keep_ids = {m.id for m in patch.api_keys if m.id is not None}
        for m in patch.api_keys:
            if m.id is not None and m.id not in by_id:
                raise UnknownProviderKeyError(m.id)
        for key_row, record in zip(key_rows, existing, strict=True):
            if key_row.id not in keep_ids:
                removed.append(record)
                await session.delete(key_row)
        new_rows, added = _new_keys(
            encryptor, provider_id, [m.api_key for m in patch.api_keys if m.api_key is not None]
        )
        session.add_all(new_rows)
        kept_records = [r for r in existing if r.id in keep_ids]

    if patch.display_name is not None:
        row.display_name = patch.display_name
    if patch.icon is not None:
        row.icon = patch.icon
    if patch.enabled is not None:
        row.enabled = patch.enabled
    if patch.base_url is not None:
        row.base_url = patch.base_url
    if patch.settings_set:
        row.settings, row.settings_key_id = _encode_settings(encryptor, patch.settings)
    row.updated_at = utcnow()
    await session.flush()
    after = _record(encryptor, row, kept_records + added)
    return ProviderChange(before, after, added, removed, len(kept_records))


async def delete_provider(session: AsyncSession, provider_id: uuid.UUID) -> bool:
    """Soft-delete (``deleted`` and not ``enabled``). Returns False when the provider was
    not live, in which case nothing is written (a repeat is a no-op). Keys are kept."""
    result = await session.execute(
        update(AIProvider)
        .where(AIProvider.id == provider_id, AIProvider.deleted.is_(False))
        .values(deleted=True, enabled=False, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        return False
    await config_version.bump(session)
    return True


# --- audit ----------------------------------------------------------------------------


def _masked_keys(keys: Sequence[ProviderKeyRecord]) -> list[dict[str, str]]:
    return [{"id": str(k.id), "masked": k.masked} for k in keys]


def provider_summary(record: ProviderRecord) -> dict[str, Any]:
    """Secret-free description of a provider for audit diffs and logs."""
    return {
        "type": record.type,
        "name": record.name,
        "display_name": record.display_name,
        "icon": record.icon,
        "enabled": record.enabled,
        "base_url": record.base_url,
        "settings": public_settings(record.settings),
        "api_keys": _masked_keys(record.keys),
    }


def _audit_keys(
    session: AsyncSession,
    record: ProviderRecord,
    keys: Sequence[ProviderKeyRecord],
    action: str,
    actor_id: uuid.UUID | None,
    actor_username: str,
) -> None:
    for key in keys:
        add_audit(
            session,
            actor_id=actor_id,
            actor_username=actor_username,
            action=action,
            resource_type=AUDIT_PROVIDER_KEY,
            resource_id=str(key.id),
            resource_name=record.name,
            diff={"provider_id": str(record.id), "masked": key.masked},
        )


def audit_created(
    session: AsyncSession,
    record: ProviderRecord,
    *,
    actor_id: uuid.UUID | None,
    actor_username: str,
    status_code: int = 201,
) -> None:
    """Audit rows for a created provider and each of its keys (caller's transaction)."""
    add_audit(
        session,
        actor_id=actor_id,
        actor_username=actor_username,
        action="create",
        resource_type=AUDIT_PROVIDER,
        resource_id=str(record.id),
        resource_name=record.name,
        diff=provider_summary(record),
        status_code=status_code,
    )
    _audit_keys(session, record, record.keys, "create", actor_id, actor_username)


def audit_updated(
    session: AsyncSession,
    change: ProviderChange,
    *,
    actor_id: uuid.UUID | None,
    actor_username: str,
) -> None:
    """Audit rows for an update: changed fields old/new, and keys added/removed/kept."""
    before = provider_summary(change.before)
    after = provider_summary(change.after)
    changes = {
        k: {"old": before[k], "new": after[k]}
        for k in before
        if k != "api_keys" and before[k] != after[k]
    }
    add_audit(
        session,
        actor_id=actor_id,
        actor_username=actor_username,
        action="update",
        resource_type=AUDIT_PROVIDER,
        resource_id=str(change.after.id),
        resource_name=change.after.name,
        diff={
            "changes": changes,
            "added": _masked_keys(change.added),
            "removed": _masked_keys(change.removed),
            "kept": change.kept,
        },
    )
    _audit_keys(session, change.after, change.added, "create", actor_id, actor_username)
    _audit_keys(session, change.after, change.removed, "delete", actor_id, actor_username)


def audit_deleted(
    session: AsyncSession,
    record: ProviderRecord,
    *,
    actor_id: uuid.UUID | None,
    actor_username: str,
) -> None:
    """Audit row for a soft-deleted provider."""
    add_audit(
        session,
        actor_id=actor_id,
        actor_username=actor_username,
        action="delete",
        resource_type=AUDIT_PROVIDER,
        resource_id=str(record.id),
        resource_name=record.name,
        diff=provider_summary(record),
        status_code=204,
    )


__all__ = [
    "AUDIT_PROVIDER",
    "AUDIT_PROVIDER_KEY",
    "KeyMutation",
    "ProviderChange",
    "ProviderExistsError",
    "ProviderKeyRecord",
    "ProviderNotFoundError",
    "ProviderPatch",
    "ProviderRecord",
    "ProviderSpec",
    "UnknownProviderKeyError",
    "audit_created",
    "audit_deleted",
    "audit_updated",
    "count_all_providers",
    "create_provider",
    "delete_provider",
    "get_provider",
    "get_provider_by_name",
    "list_providers",
    "load_live_providers",
    "lock_provider_writes",
    "provider_summary",
    "update_provider",
]


@dataclass(frozen=True, slots=True)
class ProviderRoute:
    """The routing facts of one live provider (what the HTTPS proxy needs, no secrets)."""

    name: str
    type: str
    base_url: str
    enabled: bool


async def load_provider_routes(session: AsyncSession) -> list[ProviderRoute]:
    """Every non-deleted provider's name, type, base URL and enabled flag, oldest first
    (ties by name), in one read without keys or settings: the proxy's routing map is
    built from these, and reading them needs no encryption key."""
    stmt = (
        select(AIProvider.name, AIProvider.type, AIProvider.base_url, AIProvider.enabled)
        .where(AIProvider.deleted.is_(False))
        .order_by(AIProvider.created_at, AIProvider.name)
    )
    rows = (await session.execute(stmt)).all()
    return [
        ProviderRoute(name, ptype, base_url, bool(enabled))
        for name, ptype, base_url, enabled in rows
    ]
