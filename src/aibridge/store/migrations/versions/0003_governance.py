"""governance: limits on users and keys, model prices, the cost of each upstream call

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 11:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

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


def downgrade() -> None:
    op.drop_table("model_prices")
    with op.batch_alter_table("token_usages", schema=None) as batch_op:
        batch_op.drop_column("cost_pusd")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("limits")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("limits")
