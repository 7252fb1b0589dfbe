"""interceptions.replica_id: the gateway process that served the interception

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 05:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("interceptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("replica_id", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("interceptions", schema=None) as batch_op:
        batch_op.drop_column("replica_id")
