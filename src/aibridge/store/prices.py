"""Model prices in the database: validation, list/upsert/delete, audit rows, the defaults.

A price is stored in micro-USD per million tokens (= pico-USD per token), so every cost
computed from it is an exact integer (:mod:`aibridge.governance.prices` does the
arithmetic; this module only stores). Writes bump the ``prices`` config version in the
caller's transaction, so a replica that missed the ``model_prices_changed`` hint still
reloads at its next reconcile poll.

The admin API and the CLI share :func:`parse_price`, so both accept and refuse exactly
the same input with the same messages.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import resources
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from aibridge.inputcheck import CONTROL_CHARACTERS, FieldError, InputError
from aibridge.limits import parse_usd, usd_number
from aibridge.store import config_version
from aibridge.store.audit import add_audit
from aibridge.store.models import PROVIDER_TYPES, ModelPrice
from aibridge.store.types import utcnow

AUDIT_PRICE = "model_price"
"""``audit_log.resource_type`` of price writes."""

MAX_MODEL_LENGTH = 200
PRICE_FIELDS = ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok")
"""The price members of the admin API's price object (USD per million tokens), in order."""
INVALID_PRICE = "Invalid price."
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MICROS_PER_USD = 10**6


@dataclass(frozen=True, slots=True)
class StoredPrice:
    """One row of ``model_prices``: micro-USD per million tokens by kind of token."""

    provider_type: str
    model: str
    input_micros: int
    output_micros: int
    cache_read_micros: int
    cache_write_micros: int
    effective_date: str

    def to_json(self) -> dict[str, Any]:
        """The admin API's price object (USD per million tokens as JSON numbers)."""
        return {
            "provider_type": self.provider_type,
            "model": self.model,
            "input_per_mtok": _usd(self.input_micros),
            "output_per_mtok": _usd(self.output_micros),
            "cache_read_per_mtok": _usd(self.cache_read_micros),
            "cache_write_per_mtok": _usd(self.cache_write_micros),
            "effective_date": self.effective_date,
        }


def _usd(micros: int) -> int | float:
    return usd_number(Decimal(micros).scaleb(-6))


def _micros(amount: Decimal) -> int:
    # parse_usd allows at most 6 decimal places, so this is exact.
    return int(amount * _MICROS_PER_USD)


# --- validation ---------------------------------------------------------------------------


def provider_type_error(value: str) -> FieldError | None:
    """Why ``value`` is not a provider type a price can be set for, or None."""
    if value in PROVIDER_TYPES:
        return None
    return FieldError("provider_type", "must be one of " + ", ".join(PROVIDER_TYPES))


def model_error(value: object) -> FieldError | None:
    """Why ``value`` is not a usable model name or ``prefix*`` pattern, or None."""
    if not isinstance(value, str) or not value:
        return FieldError("model", "is required, e.g. claude-sonnet-4-5 or claude-sonnet-4-5*")
    if len(value) > MAX_MODEL_LENGTH or CONTROL_CHARACTERS.search(value):
        return FieldError("model", f"must be at most {MAX_MODEL_LENGTH} printable characters")
    if value != value.strip():
        return FieldError("model", "must not start or end with white space")
    if "*" in value[:-1]:
        return FieldError(
            "model",
            "'*' is only allowed as the last character (a prefix pattern, e.g. claude-sonnet-4-5*)",
        )
    return None


def parse_price(
    provider_type: str, model: str, body: Mapping[str, object], *, today: date | None = None
) -> StoredPrice:
    """The price an admin sent for ``provider_type``/``model`` (the body holds the four
    ``*_per_mtok`` amounts in USD per million tokens and an optional ``effective_date``,
    default today in UTC). Raises :class:`InputError` naming every bad field at once."""
    errors: list[FieldError] = []
    for problem in (provider_type_error(provider_type), model_error(model)):
        if problem is not None:
            errors.append(problem)
    known = {*PRICE_FIELDS, "effective_date", "provider_type", "model"}
    for key in sorted(set(body) - known):
        errors.append(
            FieldError(
                key, "is not a price field; known: " + ", ".join((*PRICE_FIELDS, "effective_date"))
            )
        )
    # The path names the price; a body that names another one is a mistake, not a rename.
    for key, expected in (("provider_type", provider_type), ("model", model)):
        if key in body and body[key] != expected:
            errors.append(
                FieldError(key, f"must equal the one in the path ({expected!r}) or be left out")
            )
    micros: dict[str, int] = {}
    for name in PRICE_FIELDS:
        if body.get(name) is None:
            errors.append(
                FieldError(
                    name,
                    "is required: USD per million tokens, e.g. 3 or 0.3 (use the input price "
                    "when the provider has no separate price for this kind of token)",
                )
            )
            continue
        amount = parse_usd(body[name], name)
        if isinstance(amount, FieldError):
            errors.append(amount)
        else:
            micros[name] = _micros(amount)
    effective = body.get("effective_date")
    if effective is None:
        effective = (today or datetime.now(UTC).date()).isoformat()
    elif not isinstance(effective, str) or not _valid_date(effective):
        errors.append(FieldError("effective_date", "must be a date YYYY-MM-DD, e.g. 2025-12-01"))
    if errors:
        raise InputError(INVALID_PRICE, errors)
    assert isinstance(effective, str)
    return StoredPrice(
        provider_type=provider_type,
        model=model,
        input_micros=micros["input_per_mtok"],
        output_micros=micros["output_per_mtok"],
        cache_read_micros=micros["cache_read_per_mtok"],
        cache_write_micros=micros["cache_write_per_mtok"],
        effective_date=effective,
    )


def _valid_date(text: str) -> bool:
    if not _DATE.match(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


# --- reads and writes ---------------------------------------------------------------------


def _stored(row: ModelPrice) -> StoredPrice:
    return StoredPrice(
        provider_type=row.provider_type,
        model=row.model,
        input_micros=int(row.input_micros),
        output_micros=int(row.output_micros),
        cache_read_micros=int(row.cache_read_micros),
        cache_write_micros=int(row.cache_write_micros),
        effective_date=row.effective_date,
    )


async def list_prices(session: AsyncSession, provider_type: str | None = None) -> list[StoredPrice]:
    """Every price (of one provider type when given), by provider type then model."""
    stmt = select(ModelPrice)
    if provider_type is not None:
        stmt = stmt.where(ModelPrice.provider_type == provider_type)
    rows = [_stored(r) for r in (await session.scalars(stmt)).all()]
    # Sorted here, not in SQL: collation differs between the backends.
    rows.sort(key=lambda p: (p.provider_type, p.model))
    return rows


async def get_price(session: AsyncSession, provider_type: str, model: str) -> StoredPrice | None:
    """The stored price of exactly ``provider_type``/``model`` (no pattern matching)."""
    row = await session.scalar(
        select(ModelPrice).where(
            ModelPrice.provider_type == provider_type, ModelPrice.model == model
        )
    )
    return _stored(row) if row is not None else None


async def upsert_price(session: AsyncSession, price: StoredPrice) -> StoredPrice | None:
    """Create or replace ``price`` in the caller's transaction (bumping the config
    version); returns the price it replaced, None when it is new."""
    row = await session.scalar(
        select(ModelPrice)
        .where(ModelPrice.provider_type == price.provider_type, ModelPrice.model == price.model)
        .with_for_update()
    )
    before = _stored(row) if row is not None else None
    now = utcnow()
    if row is None:
        row = ModelPrice(
            id=uuid.uuid4(),
            provider_type=price.provider_type,
            model=price.model,
            created_at=now,
        )
        session.add(row)
    row.input_micros = price.input_micros
    row.output_micros = price.output_micros
    row.cache_read_micros = price.cache_read_micros
    row.cache_write_micros = price.cache_write_micros
    row.effective_date = price.effective_date
    row.updated_at = now
    await session.flush()
    await config_version.bump(session, config_version.PRICES)
    return before


async def delete_price(session: AsyncSession, provider_type: str, model: str) -> StoredPrice | None:
    """Delete the price of exactly ``provider_type``/``model`` in the caller's transaction;
    returns what was deleted, None when there was no such price."""
    before = await get_price(session, provider_type, model)
    if before is None:
        return None
    await session.execute(
        delete(ModelPrice).where(
            ModelPrice.provider_type == provider_type, ModelPrice.model == model
        )
    )
    await config_version.bump(session, config_version.PRICES)
    return before


def audit_price(
    session: AsyncSession,
    *,
    action: str,
    before: StoredPrice | None,
    after: StoredPrice | None,
    actor_id: uuid.UUID | None,
    actor_username: str,
    status_code: int = 200,
) -> None:
    """The audit row of one price write (``create``, ``update`` or ``delete``)."""
    subject = after or before
    assert subject is not None
    add_audit(
        session,
        actor_id=actor_id,
        actor_username=actor_username,
        action=action,
        resource_type=AUDIT_PRICE,
        resource_id=f"{subject.provider_type}/{subject.model}",
        resource_name=subject.model,
        diff={
            "before": before.to_json() if before is not None else None,
            "after": after.to_json() if after is not None else None,
        },
        status_code=status_code,
    )


# --- the shipped defaults -----------------------------------------------------------------


def default_prices() -> list[StoredPrice]:
    """The prices shipped with the gateway (``default_prices.json``, USD per million
    tokens), seeded once by migration 0003 so an admin's later edits and deletes stick."""
    text = resources.files("aibridge.store").joinpath("default_prices.json").read_text("utf-8")
    data = json.loads(text)
    effective = data["effective_date"]
    out: list[StoredPrice] = []
    for ptype, model, *amounts in data["prices"]:
        body = dict(zip(PRICE_FIELDS, amounts, strict=True)) | {"effective_date": effective}
        out.append(parse_price(ptype, model, body))
    return out
