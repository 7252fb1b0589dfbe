"""governance: limits on users and keys, model prices, the cost of each upstream call

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 11:00:00.000000
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from aibridge.store.prices import default_prices
from aibridge.store.types import UTCDateTime, utcnow

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("limits", _JSON, nullable=True))
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("limits", _JSON, nullable=True))
    with op.batch_alter_table("token_usages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cost_pusd", sa.BigInteger(), nullable=True))
    op.create_table(
        "model_prices",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("provider_type", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("input_micros", sa.BigInteger(), nullable=False),
        sa.Column("output_micros", sa.BigInteger(), nullable=False),
        sa.Column("cache_read_micros", sa.BigInteger(), nullable=False),
        sa.Column("cache_write_micros", sa.BigInteger(), nullable=False),
        sa.Column("effective_date", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_prices")),
        sa.UniqueConstraint(
            "provider_type", "model", name=op.f("uq_model_prices_provider_type_model")
        ),
    )
    _seed_default_prices()


def _seed_default_prices() -> None:
    """The shipped prices, once: here and never at start-up, so a price an admin deletes
    stays deleted and an edited one keeps the admin's value."""
    # A table of this revision's columns (not the ORM model, which may grow later).
    prices = sa.table(
        "model_prices",
        sa.column("id", sa.Uuid()),
        sa.column("provider_type", sa.Text()),
        sa.column("model", sa.Text()),
        sa.column("input_micros", sa.BigInteger()),
        sa.column("output_micros", sa.BigInteger()),
        sa.column("cache_read_micros", sa.BigInteger()),
        sa.column("cache_write_micros", sa.BigInteger()),
        sa.column("effective_date", sa.Text()),
        sa.column("created_at", UTCDateTime()),
        sa.column("updated_at", UTCDateTime()),
    )
    now = utcnow()
    op.bulk_insert(
        prices,
        [
            {
                "id": uuid.uuid4(),
                "provider_type": p.provider_type,
                "model": p.model,
                "input_micros": p.input_micros,
                "output_micros": p.output_micros,
                "cache_read_micros": p.cache_read_micros,
                "cache_write_micros": p.cache_write_micros,
                "effective_date": p.effective_date,
                "created_at": now,
                "updated_at": now,
            }
            for p in default_prices()
        ],
    )


def downgrade() -> None:
    op.drop_table("model_prices")
    with op.batch_alter_table("token_usages", schema=None) as batch_op:
        batch_op.drop_column("cost_pusd")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("limits")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("limits")
